"""End to end: the whole DVC pipeline in a temporary git+DVC copy of the project with tiny params.

One copy is built per test session; `dvc repro` runs every stage, `dvc status` is then clean, and
`dvc exp run -S alpha_distill=0.1` reruns exactly the stages downstream of the student, a queued sweep of
two alphas runs through `dvc queue start`, and the results travel through a DVC remote to a fresh clone.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import project_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "prepare_data": {"seed": 1, "image_size": 32, "source": {"train": 24, "val": 12, "test": 8},
                     "target": {"train": 24, "val": 12, "test": 12}},
    "data": {"crop_size": 32},
    "teacher": {"width": 4},
    "pretrain": {"epochs": 1, "batch_size": 16},
    "finetune": {"epochs": 2, "batch_size": 16, "policy": "always"},
    "student": {"epochs": 2, "batch_size": 16},
    "evaluate_teacher": {"ready": 0.0, "skip": 0.0},  # always distil, whatever the tiny teacher scores
    "evaluate": {"latency_batch": 4, "latency_repeats": 1},
    "robustness": {"jpeg_quality": [90, 40], "resize_scale": [0.5], "blur_sigma": [1.0]},
    # a fixed thread count: with `auto` a run beside other work takes fewer threads, which changes float rounding
    # (README, Hardware), and the rerun test below compares two runs to the last bit
    "runtime": {"threads": 1},
}
REPORT = "metrics/report.md"  # teacher vs student in words, with the measured speed
ALL_STAGES = ["prepare_data", "check_data", "pretrain_teacher", "diagnose", "finetune_teacher",
              "evaluate_teacher", "train_student", "evaluate_student", "evaluate_robustness", "report"]
STUDENT_STAGES = ["train_student", "evaluate_student", "evaluate_robustness", "report"]  # what an alpha reruns


def run(args, cwd, env, check=True):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """A git+DVC repo holding a copy of the project's tracked files with tiny params, `dvc repro` done."""
    return make_project(tmp_path_factory.mktemp("project"), TINY)


def make_project(repo: Path, params: dict, env_extra: dict | None = None) -> dict:
    """Copy the project's tracked files into `repo` with `params` over its params.yaml, commit, `dvc repro`
    (with `env_extra` in the environment)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("metrics/", "plots/", "tests/", "benchmarks/")) or rel == "dvc.lock":
            continue
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    (repo / "params.yaml").write_text(yaml.safe_dump(project_params(params), sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(repo / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **(env_extra or {})}
    dvc = str(Path(sys.executable).parent / "dvc")
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny project"], repo, env)
    repro = run([dvc, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)
    return {"repo": repo, "env": env, "dvc": dvc, "repro": repro.stdout}


def test_two_process_training_runs_through_dvc_repro_with_one_set_of_outputs(tmp_path):
    """runtime.nproc 2: each training stage relaunches itself as 2 gloo processes; rank 0 alone writes."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = make_project(tmp_path / "ddp", {**TINY, "runtime": {"nproc": 2}}, {"TMPDIR": str(tmp)})
    repo, out = p["repo"], p["repro"]
    assert not [d.name for d in tmp.iterdir() if "elastic" in d.name]  # the launcher's folders are removed
    assert ran_stages(out) == ALL_STAGES
    assert out.count("starting 2 training processes") == 3  # pretrain_teacher, finetune_teacher, train_student
    assert "(rank 1 of 2)" not in out  # ranks above 0 print nothing
    status = run([p["dvc"], "status"], repo, p["env"]).stdout
    assert "up to date" in status
    for stage, epochs in (("pretrain_teacher", 1), ("finetune_teacher", 2), ("train_student", 2)):
        rows = (repo / f"plots/{stage}/plots/metrics/val_auc.tsv").read_text().splitlines()
        start = 0 if stage == "finetune_teacher" else 1  # the fine-tuning curve starts at the pretrained teacher
        assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(start, epochs + 1)), stage
        assert json.loads((repo / f"metrics/{stage}.json").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())["paths"]
    for key in ("pretrained", "finetuned", "student_best", "student_final"):
        assert torch.load(repo / params[key], map_location="cpu", weights_only=False)["state_dict"], key
    assert not any(f.is_file() for f in (repo / params["resume"]).rglob("*"))  # no resume state left behind
    assert 0.0 <= json.loads((repo / "metrics/evaluate_student.json").read_text())["student_test_auc"] <= 1.0


def test_repro_runs_every_stage_and_leaves_status_clean(project):
    assert ran_stages(project["repro"]) == ALL_STAGES
    status = run([project["dvc"], "status"], project["repo"], project["env"]).stdout
    assert "up to date" in status, status
    repo = project["repo"]
    for path in ("weights/pretrained/default_LaDeDa.pth", "weights/teacher/teacher_finetuned_best.pth",
                 "weights/student/student_best.pt", "weights/student/student_final.pt", "metrics/report.md"):
        assert (repo / path).is_file(), path
    ev = json.loads((repo / "metrics/evaluate_student.json").read_text())
    assert 0 <= ev["student_test_auc"] <= 1 and ev["teacher"]["parameters"] > ev["student"]["parameters"] == 1297
    assert json.loads((repo / "metrics/finetune_teacher.json").read_text())["finetuned"] is True


def test_robustness_stage_scores_every_condition_and_the_report_shows_it(project):
    repo = project["repo"]
    rob = json.loads((repo / "metrics/evaluate_robustness.json").read_text())
    ev = json.loads((repo / "metrics/evaluate_student.json").read_text())
    assert list(rob["conditions"]) == ["clean", "jpeg_q90", "jpeg_q40", "resize_0.5", "blur_1", "social_media",
                                       "format_bias_jpeg_q96"]
    assert rob["n_images"] == ev["student"]["test"]["overall"]["n"] == 24
    # the clean condition is evaluate_student's scoring of the same images with the same models
    assert rob["student_clean_auc"] == pytest.approx(ev["student_test_auc"], abs=1e-6)
    assert rob["teacher_clean_auc"] == pytest.approx(ev["teacher_test_auc"], abs=1e-6)
    for row in list(rob["conditions"].values())[1:]:
        assert {"auc", "auc_ci_low", "drop", "drop_p_value"} <= set(row["student"]) and row["teacher"]["auc"] >= 0
    jpeg = json.loads((repo / "plots/evaluate_robustness/jpeg.json").read_text())
    assert [r["quality"] for r in jpeg] == [40, 90] and {"teacher_auc", "student_auc"} <= set(jpeg[0])
    report = (repo / "metrics/report.md").read_text()
    pictures = json.loads((repo / "metrics/report.json").read_text())["pictures"]
    assert len(pictures) == 4 and "| format_bias_jpeg_q96 |" in report
    for path in pictures.values():
        assert (repo / path).stat().st_size > 5000 and f"]({Path('..') / path})" in report, path


def test_rerun_of_the_same_params_changes_no_metric_and_no_output_byte(project):
    """`dvc repro -f` recomputes every stage: quality metrics and every output (checkpoints included) come out
    byte-identical, so `dvc metrics diff` is empty and dvc.lock records the same hashes. Timings (and the
    speed line of metrics/report.md) may differ.
    (Runs before the experiment test below, which leaves its results in the workspace.)"""
    repo, env, dvc = project["repo"], project["env"], project["dvc"]
    timings = (repo / "metrics/timings/train_student.json").read_text()
    rerun = run([dvc, "repro", "-f"], repo, env)
    assert ran_stages(rerun.stdout) == ALL_STAGES
    assert json.loads(run([dvc, "metrics", "diff", "--json"], repo, env).stdout) == {}  # only changes listed
    changed = run(["git", "status", "--porcelain", "--", "metrics", "plots"], repo, env).stdout.splitlines()
    assert {line[3:] for line in changed} <= {f"metrics/timings/{s}.json" for s in ALL_STAGES} | {REPORT}, changed
    before = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], repo, env).stdout)
    after = yaml.safe_load((repo / "dvc.lock").read_text())
    assert output_hashes(after) == output_hashes(before)
    assert len(output_hashes(after)) >= 15 and json.loads(timings)["seconds"] > 0


def output_hashes(lock: dict) -> dict[str, str]:
    """Every stage output's hash in a dvc.lock, except the timings files and the report (it shows measured speed)."""
    return {o["path"]: o.get("md5") for stage in lock["stages"].values() for o in stage.get("outs", [])
            if not o["path"].startswith("metrics/timings/") and o["path"] != REPORT}


def test_metrics_show_and_plots_json(project):
    repo, env, dvc = project["repo"], project["env"], project["dvc"]
    shown = json.loads(run([dvc, "metrics", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    for key in ("val_auc", "student_test_auc", "recommendation", "band"):
        assert key in text
    plots = json.loads(run([dvc, "plots", "show", "--json"], repo, env).stdout)["data"]
    auc = plots["Validation AUC per epoch"][0]["content"]["data"]["values"]
    assert {v["filename"].split("/")[0] for v in auc} == {"pretrain_teacher", "finetune_teacher", "train_student"}
    roc = plots["ROC teacher vs student"][0]["content"]["data"]["values"]
    assert {v["filename"] for v in roc} == {"roc_teacher.json", "roc_student.json"}


def test_results_travel_through_a_dvc_remote_to_a_fresh_clone(project, tmp_path):
    """A team's workflow: `dvc remote add -d` + `dvc push`; a teammate's `git clone` + `dvc pull` has every output,
    `dvc status` is clean and `dvc repro` runs nothing. (Before the experiment test, which changes the workspace.)"""
    repo, env, dvc = project["repo"], project["env"], project["dvc"]
    store, clone = tmp_path / "remote", tmp_path / "clone"
    run([dvc, "remote", "add", "--local", "-d", "team", str(store)], repo, env)
    pushed = run([dvc, "push"], repo, env)
    assert store.is_dir() and any(store.rglob("*")), pushed.stdout
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "weights/student/student_best.pt").exists()
    run([dvc, "remote", "add", "--local", "-d", "team", str(store)], clone, env)
    run([dvc, "pull"], clone, env)
    for path in ("data/default/target/test", "weights/pretrained/default_LaDeDa.pth", "weights/student/student_best.pt",
                 "weights/teacher/teacher_finetuned_best.pth"):
        assert (clone / path).exists(), path
    assert (clone / "weights/student/student_best.pt").read_bytes() == (repo / "weights/student/student_best.pt").read_bytes()
    assert "up to date" in run([dvc, "status"], clone, env).stdout
    again = run([dvc, "repro"], clone, {**env, "PYTHONPATH": str(clone / "src")})
    assert ran_stages(again.stdout) == [], again.stdout


def test_alpha_distill_experiment_reruns_exactly_the_student_stages(project):
    repo, env, dvc = project["repo"], project["env"], project["dvc"]
    exp = run([dvc, "exp", "run", "-S", "alpha_distill=0.1", "--name", "alpha01"], repo, env)
    assert ran_stages(exp.stdout) == STUDENT_STAGES, exp.stdout
    diff = json.loads(run([dvc, "metrics", "diff", "HEAD", "alpha01", "--all", "--json"], repo, env).stdout)
    default = project_params()["alpha_distill"]
    assert diff["metrics/train_student.json"]["alpha_distill"] == {"old": default, "new": 0.1,
                                                                   "diff": pytest.approx(0.1 - default)}
    auc = diff["metrics/evaluate_student.json"]["student_test_auc"]
    assert 0 <= auc["old"] <= 1 and 0 <= auc["new"] <= 1
    teacher = diff["metrics/evaluate_teacher.json"]["val_auc"]
    assert teacher["old"] == teacher["new"], "the teacher half did not rerun"
    shown = run([dvc, "exp", "show", "--csv"], repo, env).stdout
    assert "alpha01" in shown


def test_queued_alpha_sweep_runs_through_dvc_queue_and_shows_both_experiments(project):
    """The recommended progression as a DVC sweep: queue two alphas, `dvc queue start`, `dvc exp show`."""
    repo, env, dvc = project["repo"], project["env"], project["dvc"]
    queued = run([dvc, "exp", "run", "--queue", "-S", "alpha_distill=0.2,0.3"], repo, env)
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    run([dvc, "queue", "start", "-j", "1"], repo, env)
    deadline = time.monotonic() + 540
    while True:  # `dvc queue start` returns at once; the worker runs the experiments in the background
        status = run([dvc, "queue", "status"], repo, env).stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
        time.sleep(3)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    shown = json.loads(run([dvc, "exp", "show", "--json"], repo, env).stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                alpha = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("alpha_distill")
                metrics = data.get("metrics", {}).get("metrics/evaluate_student.json", {}).get("data", {})
                if alpha in (0.2, 0.3) and "student_test_auc" in metrics:
                    found[alpha] = metrics["student_test_auc"]
    assert set(found) == {0.2, 0.3}, found
    assert all(0 <= auc <= 1 for auc in found.values())
