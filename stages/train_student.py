"""Stage train_student: distil the frozen teacher into Tiny-LaDeDa (BCE only when the teacher gate says skip)."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.checkpoints import save_checkpoint
from ladeda.errors import run_cli
from ladeda.gates import RECOMMENDATION_WORDS
from ladeda.io import write_json
from ladeda.models import TinyLaDeDa
from ladeda.params import stage_params
from ladeda.runtime import tune_allocator
from ladeda.student import plan_schedule, train_student
from ladeda.train import seed_everything, set_bn_momentum
from ladeda.workflow import as_dict, checkpoint_on_best, distillation_gate, load_teacher_file, split_loader

BEST, FINAL = "weights/student/student_best.pt", "weights/student/student_final.pt"
FLAGS = {"--teacher-weights": ("teacher_weights", str), "--schedule": ("student.schedule", str),
         "--epochs": ("student.epochs", int), "--lr": ("student.lr", float),
         "--epochs-s1": ("student.epochs_s1", int), "--lr-s1": ("student.lr_s1", float),
         "--epochs-s2": ("student.epochs_s2", int), "--lr-s2": ("student.lr_s2", float),
         "--batch-size": ("student.batch_size", int), "--alpha-distill": ("alpha_distill", float)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    teacher = load_teacher_file(p.teacher_weights, p.teacher_file())
    val = split_loader(p.data, p.data.root, "val", p.evaluate_teacher.batch_size, p.seed)
    gate = distillation_gate(p, teacher, val)
    distill = gate["recommendation"] != "skip"
    print(f"train_student: teacher {p.teacher_weights} (val AUC {gate['teacher_val_auc']:.4f}): "
          f"{RECOMMENDATION_WORDS[gate['recommendation']]}")
    phases = plan_schedule(p.student, p.task_weight, p.alpha_distill, distill)
    student = TinyLaDeDa(p.student.preprocess, p.student.npr_scale)
    set_bn_momentum(student, p.student.bn_momentum)
    train = split_loader(p.data, p.data.root, "train", p.student.batch_size, p.seed)
    used = {"student": as_dict(p.student), "alpha_task": p.task_weight, "alpha_distill": p.alpha_distill,
            "teacher_weights": p.teacher_weights, "data": as_dict(p.data), "seed": p.seed}
    with epoch_logger("plots/train_student") as log:
        results = train_student(student, teacher if distill else None, phases, train, val, p.student, p.seed,
                                on_best=checkpoint_on_best(BEST, p.data.crop_size, used, teacher=p.teacher_weights),
                                log_epoch=log, resume_dir="weights/.resume/train_student", extra=used)
    best_auc = max(r.best_auc for _, r in results)
    save_checkpoint(FINAL, student, image_size=p.data.crop_size, params=used,
                    metrics={"val_auc": results[-1][1].history[-1]["val_auc"]}, teacher=p.teacher_weights)
    write_json("metrics/train_student.json", {
        "best_val_auc": best_auc, "final_val_auc": results[-1][1].history[-1]["val_auc"],
        "distilled": distill, "mode": "distillation" if distill else "bce_only",
        "teacher_weights": p.teacher_weights, **gate,
        "alpha_task": phases[-1].alpha_task, "alpha_distill": phases[-1].alpha_distill,
        "epochs_run": sum(r.epochs_run for _, r in results),
        "phases": [{**ph.__dict__, "best_val_auc": r.best_auc, "epochs_run": r.epochs_run,
                    "stopped_early": r.stopped_early, "seconds": round(r.seconds, 1)} for ph, r in results]})
    print(f"train_student: best val AUC {best_auc:.4f} -> {BEST}, {FINAL}")


if __name__ == "__main__":
    run_cli(main)
