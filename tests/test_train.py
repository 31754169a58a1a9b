"""The fit loop: early stopping, LR schedule, NaN guard, frozen fine-tuning, exact resumption."""

import json

import pytest
import torch

from ladeda.core.errors import LadedaError
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.core.runtime import seed_everything
from ladeda.training.finetune import freeze_for_finetuning
from ladeda.training.fit import EarlyStopping, FitConfig, bce_step, fit

from conftest import pattern_loaders


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    aucs = [0.6, 0.7, 0.69, 0.7, 0.65]  # best at epoch 2, then 3 epochs without a strict improvement
    stopped_at = None
    for epoch, auc in enumerate(aucs, start=1):
        stopper.step(auc, epoch)
        if stopper.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == 4 and stopper.best == 0.7 and stopper.best_epoch == 2


def scripted_fit(aucs, patience, lr_patience, monkeypatch, epochs=20):
    """Run fit with the validation AUC replaced by a scripted sequence."""
    seq = iter(aucs)
    monkeypatch.setattr("ladeda.training.fit.detection_metrics",
                        lambda labels, logits, name: {"auc": next(seq), "ap": 0.5, "acc": 0.5})
    train, val = pattern_loaders(n_train=8, n_val=8, size=16, batch_size=8)
    model = TinyLaDeDa("raw")
    cfg = FitConfig(epochs=epochs, lr=1e-3, patience=patience, lr_factor=0.1, lr_patience=lr_patience)
    return fit(model, train, val, cfg)


def test_fit_stops_at_the_right_epoch_on_a_scripted_auc_sequence(monkeypatch):
    result = scripted_fit([0.5, 0.6, 0.7, 0.7, 0.69, 0.68, 0.71, 0.9], patience=3, lr_patience=10,
                          monkeypatch=monkeypatch)
    assert result.epochs_run == 6 and result.best_epoch == 3 and result.best_auc == 0.7 and result.stopped_early


def test_scheduler_lowers_lr_on_plateau(monkeypatch):
    result = scripted_fit([0.5, 0.6, 0.6, 0.6, 0.6, 0.6], patience=10, lr_patience=1, monkeypatch=monkeypatch,
                          epochs=6)
    lrs = [row["lr"] for row in result.history]
    # lr logged is the one used in that epoch: plateau after epoch 2 for lr_patience=1 epochs -> cut after epoch 4
    assert lrs[:4] == [1e-3] * 4 and lrs[4] == pytest.approx(1e-4)


def test_cosine_schedule_follows_the_epochs_not_the_validation_auc(monkeypatch):
    """Cosine annealing to 0 over `epochs`, stepped once per epoch, whatever the validation AUC does."""
    import math

    seq = iter([0.5, 0.6, 0.6, 0.6, 0.6])
    monkeypatch.setattr("ladeda.training.fit.detection_metrics",
                        lambda labels, logits, name: {"auc": next(seq), "ap": 0.5, "acc": 0.5})
    train, val = pattern_loaders(n_train=8, n_val=8, size=16, batch_size=8)
    result = fit(TinyLaDeDa("raw"), train, val, FitConfig(epochs=5, lr=1e-3, patience=10, lr_patience=0,
                                                          lr_schedule="cosine"))
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected)


def test_weight_averaging_validates_saves_and_returns_the_moving_average(loaders):
    """With ema > 0, on_best and the returned model hold the EMA of the weights after every step
    (the first step's weights, then ema * average + (1 - ema) * weights), not the last step's."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    train, val = loaders
    seed_everything(0)
    model = TinyLaDeDa("NPR")
    names = [n for n, _ in model.named_parameters()]
    snapshot = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}  # noqa: E731
    after_step = []  # the live weights after every optimiser step
    bests, live_at_best = [], []

    def on_best(m, epoch, row):
        bests.append(snapshot(m))
        live_at_best.append(snapshot(model))

    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: after_step.append(snapshot(model)))
    try:
        result = fit(model, train, val, FitConfig(epochs=2, lr=2e-2, patience=10, ema=0.8), on_best=on_best)
    finally:
        handle.remove()
    assert len(after_step) == 2 * len(train)
    average = after_step[0]
    for w in after_step[1:]:
        average = {n: 0.8 * average[n] + 0.2 * w[n] for n in names}
    final = snapshot(model)
    for n in names:
        torch.testing.assert_close(final[n], average[n], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(after_step[-1][n], final[n]) for n in names), "the average differs from the last step"
    assert result.epochs_run == 2 and bests
    assert any(not torch.equal(bests[-1][n], live_at_best[-1][n]) for n in names), "on_best gets the average"


def test_fit_learns_and_calls_best_and_log_callbacks(loaders):
    train, val = loaders
    seed_everything(0)
    model = TinyLaDeDa("NPR")
    bests, rows = [], []
    result = fit(model, train, val, FitConfig(epochs=3, lr=2e-2), on_best=lambda m, e, r: bests.append(e),
                 log_epoch=rows.append)
    assert result.best_auc > 0.9
    assert [r["epoch"] for r in rows] == [1, 2, 3] and bests[0] == 1 and bests[-1] == result.best_epoch
    assert {"train_loss", "train_bce", "val_auc", "val_ap", "lr"} <= set(rows[0])


def test_nan_loss_is_a_clear_error(loaders):
    train, val = loaders

    def nan_step(model, x, y):
        return model(x).sum() * float("nan"), {}

    with pytest.raises(LadedaError, match="loss became nan at epoch 1, step 0"):
        fit(TinyLaDeDa(), train, val, FitConfig(epochs=1, lr=1e-3), step_fn=nan_step)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_frozen_blocks_do_not_change_and_unfrozen_ones_do():
    train, val = pattern_loaders(n_train=32, n_val=16, size=24)
    seed_everything(0)
    model = LaDeDa9(preprocess="NPR", width=4)
    before = snapshot(model)
    train_mode = freeze_for_finetuning(model, unfreeze_blocks=1)
    fit(model, train, val, FitConfig(epochs=1, lr=1e-2), train_mode=train_mode)
    after = model.state_dict()
    for key, value in before.items():
        trainable = key.startswith(("layer4.", "fc."))
        changed = not torch.equal(value, after[key])
        if key.endswith("num_batches_tracked"):
            assert changed == trainable, key
        elif trainable and "running" not in key:
            assert changed, f"{key} should have trained"
        elif not trainable:
            assert not changed, f"{key} is frozen (parameters and BatchNorm buffers)"
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith(("layer4.", "fc.")))


def test_head_only_fine_tuning_keeps_every_stage():
    train, val = pattern_loaders(n_train=32, n_val=16, size=24)
    model = LaDeDa9(width=4)
    before = snapshot(model)
    fit(model, train, val, FitConfig(epochs=1, lr=1e-2), train_mode=freeze_for_finetuning(model, 0))
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc"}


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("lr_schedule, ema", [("plateau", 0.0), ("cosine", 0.9)])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, lr_schedule, ema):
    def run(last_path, stop_after=None, seed_model=0):
        train, val = pattern_loaders(seed=3)
        torch.manual_seed(seed_model)
        model = TinyLaDeDa("right_diag")
        bests, rows = [], []

        def hook(epoch):
            if epoch == stop_after:
                raise Interrupt

        cfg = FitConfig(epochs=5, lr=5e-3, patience=10, seed=7, lr_schedule=lr_schedule, ema=ema)
        res = fit(model, train, val, cfg, last_path=last_path, on_epoch_end=hook, log_epoch=rows.append,
                  on_best=lambda m, e, r: bests.append((e, snapshot(m))))
        return model, res, rows, bests

    full_model, full, full_rows, _ = run(None)
    last = tmp_path / "last.pt"
    with pytest.raises(Interrupt):
        run(last, stop_after=2)
    assert last.is_file()
    resumed_model, res, rows, bests = run(last, seed_model=123)  # a different init: must be overwritten
    assert res.resumed_from == 2 and res.epochs_run == 5
    assert json.dumps(rows) == json.dumps(full_rows), "replayed + continued history equals the full run"
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert bests and bests[0][0] <= 2, "the saved best is re-emitted on resume (DVC removed the file)"
    assert not last.exists(), "the last checkpoint is removed when the run finishes"


def test_resume_with_different_params_starts_fresh(tmp_path, capsys):
    train, val = pattern_loaders()
    last = tmp_path / "last.pt"
    with pytest.raises(Interrupt):
        fit(TinyLaDeDa(), train, val, FitConfig(epochs=3, lr=1e-3), last_path=last,
            on_epoch_end=lambda e: (_ for _ in ()).throw(Interrupt))
    res = fit(TinyLaDeDa(), train, val, FitConfig(epochs=2, lr=2e-3), last_path=last)
    assert res.resumed_from == 0 and res.epochs_run == 2
    assert "different params or upstream inputs; starting fresh" in capsys.readouterr().out


def test_a_diverging_loss_stops_training_with_a_clear_error(loaders):
    """lr 1e6 sends the loss to 1e13 and beyond without a NaN: that is divergence, not a result to save."""
    train, val = loaders
    saved = []
    with pytest.raises(LadedaError, match=r"training diverged: the loss became .* lower the learning rate"):
        fit(TinyLaDeDa(), train, val, FitConfig(epochs=3, lr=1e6), on_best=lambda *a: saved.append(a))
    assert not saved, "no checkpoint of a diverged run"


def test_temporary_files_of_a_killed_save_are_removed(tmp_path, loaders):
    """A save killed between write and rename leaves `.last.pt.<random>.tmp`; the next run clears it."""
    train, val = loaders
    stale = tmp_path / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.x.tmp"
    other.write_bytes(b"not ours")
    fit(TinyLaDeDa(), train, val, FitConfig(epochs=1, lr=1e-3), last_path=tmp_path / "last.pt")
    assert not stale.exists() and other.exists()


def test_resume_starts_fresh_when_an_upstream_checkpoint_changed(tmp_path, capsys):
    """The fingerprint holds the content hash of the inputs: a teacher retrained since the interruption
    (same params, other bytes) must not be resumed against."""
    from ladeda.core.fingerprint import inputs_digest
    from ladeda.models.checkpoints import save_checkpoint

    teacher = tmp_path / "teacher.pth"
    save_checkpoint(teacher, TinyLaDeDa())
    last = tmp_path / "last.pt"

    def start(interrupt: bool):
        train, val = pattern_loaders()
        cfg = FitConfig(epochs=3, lr=1e-3, extra={"inputs": inputs_digest(teacher, tmp_path / "data")})
        hook = (lambda e: (_ for _ in ()).throw(Interrupt)) if interrupt else None
        return fit(TinyLaDeDa(), train, val, cfg, last_path=last, on_epoch_end=hook, keep_last=True)

    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.png").write_bytes(b"x")
    with pytest.raises(Interrupt):
        start(interrupt=True)
    assert start(interrupt=False).resumed_from == 1, "same inputs: resume"
    torch.manual_seed(99)
    save_checkpoint(teacher, TinyLaDeDa())  # retrained teacher
    assert start(interrupt=False).resumed_from == 0
    assert "different params or upstream inputs; starting fresh" in capsys.readouterr().out
    (tmp_path / "data/b.png").write_bytes(b"y")  # the data changed
    assert start(interrupt=False).resumed_from == 0


def test_epoch_metrics_hook_adds_to_the_row_from_the_validated_model_and_is_replayed_on_resume(tmp_path):
    """The hook sees the validated model (the weight average when ema > 0) and the row so far; what it returns
    is logged, kept in the history, given to on_best, and replayed from the history when a run resumes."""
    train, val = pattern_loaders(n_train=16, n_val=16)
    cfg = FitConfig(epochs=2, lr=1e-2, patience=10, ema=0.9)
    last = tmp_path / "last.pt"
    seen = []

    def hook(model, row):
        seen.append((model, dict(row)))
        return {"extra_metric": 10.0 * row["epoch"]}

    torch.manual_seed(0)
    model, rows, best_rows = TinyLaDeDa(), [], []
    with pytest.raises(Interrupt):
        fit(model, train, val, cfg, epoch_metrics=hook, log_epoch=rows.append, last_path=last, keep_last=True,
            on_best=lambda m, e, r: best_rows.append(r),
            on_epoch_end=lambda e: (_ for _ in ()).throw(Interrupt))
    assert len(seen) == 1 and seen[0][0] is not model, "with ema the average is validated, not the live model"
    assert set(seen[0][1]) >= {"epoch", "train_loss", "val_auc"} and "extra_metric" not in seen[0][1]
    assert rows == [{**seen[0][1], "extra_metric": 10.0}] and best_rows[0]["extra_metric"] == 10.0
    rows, seen[:] = [], []
    result = fit(TinyLaDeDa(), train, val, cfg, epoch_metrics=hook, log_epoch=rows.append, last_path=last)
    assert result.resumed_from == 1 and len(seen) == 1, "replayed epochs are not recomputed"
    assert [r["extra_metric"] for r in rows] == [10.0, 20.0]
    assert [r["extra_metric"] for r in result.history] == [10.0, 20.0]


def test_cpu_training_runs_channels_last_and_hands_back_the_default_layout(loaders, tmp_path):
    """On the CPU the batches and conv weights are channels-last while training (oneDNN's faster layout); the
    model comes back, and its checkpoint is written, in torch's default layout so it loads anywhere as before."""
    from ladeda.models.checkpoints import checkpoint_on_best, read_checkpoint

    train, val = loaders
    torch.manual_seed(0)
    model, seen = TinyLaDeDa("right_diag"), []

    def step(m, x, y):
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     m.conv2.weight.is_contiguous(memory_format=torch.channels_last)))
        return bce_step(m, x, y)

    best = tmp_path / "best.pt"
    fit(model, train, val, FitConfig(epochs=1, lr=1e-2), step_fn=step, on_best=checkpoint_on_best(best, 32, {}))
    assert seen and all(x and w for x, w in seen)
    four_d = {k: v for k, v in model.state_dict().items() if v.dim() == 4}
    assert all(v.is_contiguous() for v in four_d.values()) and not model.conv2.weight.is_contiguous(
        memory_format=torch.channels_last)
    saved = read_checkpoint(best)["state_dict"]
    assert all(saved[k].is_contiguous() for k in four_d)
