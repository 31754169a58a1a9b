"""Stage train_student: distil the frozen teacher into Tiny-LaDeDa (BCE only when the teacher gate says skip)."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.core.errors import run_cli
from ladeda.core.fingerprint import inputs_digest
from ladeda.core.outputs import plots_dir, write_metrics, write_timings
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime, tune_allocator
from ladeda.distillation.schedule import plan_schedule, train_student
from ladeda.distillation.targets import target_scale
from ladeda.distillation.teacher_maps import TeacherMaps
from ladeda.models import TinyLaDeDa
from ladeda.models.checkpoints import checkpoint_on_best, save_checkpoint
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.gates import RECOMMENDATION_WORDS
from ladeda.pipeline.teachers import distillation_gate, load_selected_teacher
from ladeda.training.finetune import set_bn_momentum

FLAGS = {"--teacher-weights": ("teacher_weights", str), "--schedule": ("student.schedule", str),
         "--epochs": ("student.epochs", int), "--lr": ("student.lr", float),
         "--epochs-s1": ("student.epochs_s1", int), "--lr-s1": ("student.lr_s1", float),
         "--epochs-s2": ("student.epochs_s2", int), "--lr-s2": ("student.lr_s2", float),
         "--batch-size": ("student.batch_size", int), "--alpha-distill": ("alpha_distill", float),
         "--distill-target": ("distill.target", str)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    rt = setup_runtime(p.runtime, data_parallel=True)  # nproc > 1: one process per rank
    best_path, final_path = p.paths.student_best, p.paths.student_final
    teacher = load_selected_teacher(p).to(rt.device)
    val = checked_loader(p, "val", p.student.val_batch_size, rt)
    gate = distillation_gate(p, teacher, val, rt)
    distill = gate["recommendation"] != "skip"
    print(f"train_student: teacher {p.teacher_weights} (val AUC {gate['teacher_val_auc']:.4f}): "
          f"{RECOMMENDATION_WORDS[gate['recommendation']]}")
    phases = plan_schedule(p.student, p.task_weight, p.alpha_distill, distill)
    student = TinyLaDeDa(p.student.preprocess, p.student.npr_scale)
    set_bn_momentum(student, p.student.bn_momentum)
    train = checked_loader(p, "train", p.student.batch_size, rt)
    maps = TeacherMaps(teacher, cache=train.dataset.inputs_repeat()) if distill else None  # teacher on rt.device
    scale = target_scale(p.distill.target, maps, train, p.seed, rt.device)
    target = {"target": p.distill.target, "scale": scale}  # recorded in both checkpoints
    if scale is not None:
        print(f"train_student: distillation target standardized by the teacher's patch-logit std {scale:.4g}")
    used = {"student": p.student.model_dump(), "alpha_task": p.task_weight, "alpha_distill": p.alpha_distill,
            "teacher_weights": p.teacher_weights, "distill": p.distill.model_dump(), "data": p.data.model_dump(),
            "seed": p.seed}
    with epoch_logger(plots_dir("train_student"), enabled=rt.is_main) as log:
        results = train_student(student, teacher if distill else None, phases, train, val, p.student, p.seed,
                                target=p.distill.target, scale=scale,
                                on_best=checkpoint_on_best(best_path, p.data.crop_size, used,
                                                           teacher=p.teacher_weights, distill=target),
                                log_epoch=log, resume_dir=f"{p.paths.resume}/train_student",
                                extra={"params": used, "inputs": inputs_digest(p.teacher_file().path, p.data.root)},
                                teacher_maps=maps, runtime=rt)
    if not rt.is_main:
        return  # rank 0 writes the results
    best_auc = max(r.best_auc for _, r in results)
    last = results[-1][1].history[-1]
    final_auc = last["val_auc"]
    save_checkpoint(final_path, student, image_size=p.data.crop_size, params=used, metrics={"val_auc": final_auc},
                    teacher=p.teacher_weights, distill=target)
    write_metrics("train_student", {
        "best_val_auc": best_auc, "final_val_auc": final_auc,
        "distilled": distill, "mode": "distillation" if distill else "bce_only",
        "teacher_weights": p.teacher_weights, **gate,
        "alpha_task": phases[-1].alpha_task, "alpha_distill": phases[-1].alpha_distill,
        "distill_target": p.distill.target, "distill_scale": scale,
        **{k: last.get(k) for k in ("share_task", "share_distill", "val_patch_pearson", "val_patch_spearman")},
        "epochs_run": sum(r.epochs_run for _, r in results), "skipped_unreadable": skipped_unreadable(train, val),
        "phases": [{**ph.__dict__, "best_val_auc": r.best_auc, "epochs_run": r.epochs_run,
                    "stopped_early": r.stopped_early} for ph, r in results]})
    write_timings("train_student", {"seconds": round(sum(r.seconds for _, r in results), 1),
                                    "phases": [{"name": ph.name, "seconds": round(r.seconds, 1),
                                                "epochs_timed": r.epochs_run - r.resumed_from} for ph, r in results],
                                    "teacher_maps": maps.counts() if maps else None})
    print(f"train_student: best val AUC {best_auc:.4f} -> {best_path}, {final_path}")


if __name__ == "__main__":
    run_cli(main)
