"""Distillation geometry (dense align == the official per-patch recipe), the loss weights, gates and the schedule."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ladeda.distillation.agreement import patch_agreement
from ladeda.distillation.loss import align, distill_loss, make_distill_step
from ladeda.distillation.monitor import loss_shares
from ladeda.distillation.targets import TARGETS, measure_scale, target_scale
from ladeda.core.errors import LadedaError
from ladeda.pipeline.gates import diagnose_band, distill_recommendation, finetune_decision, threshold_margins
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.core.params import params_from_dict
from ladeda.distillation.schedule import plan_schedule, train_student
from helpers import project_params

from conftest import PatternImages, pattern_loaders
from test_models import randomise_bn


def per_patch_recipe(student, x, n):
    """The official recipe: Tiny-LaDeDa on each 10x10 window at the stride-8 origins, mean of its 3x3 output."""
    windows = torch.stack([x[:, :, 8 * i:8 * i + 10, 8 * j:8 * j + 10] for i in range(n) for j in range(n)], dim=1)
    pm = student.patch_map(windows.flatten(0, 1))  # every window scored alone
    assert pm.shape[-2:] == (3, 3)
    return pm.mean(dim=(1, 2, 3)).view(x.shape[0], 1, n, n)


@pytest.mark.parametrize("preprocess", ["raw", "NPR"])
def test_align_equals_the_per_patch_recipe_exactly(preprocess):
    torch.manual_seed(0)
    student = randomise_bn(TinyLaDeDa(preprocess))
    teacher = LaDeDa9(width=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        teacher_map = teacher.patch_map(x)
        aligned = align(student.patch_map(x), teacher_map)
        recipe = per_patch_recipe(student, x, 7)
    assert aligned.shape == teacher_map.shape == (2, 1, 7, 7)
    assert torch.allclose(aligned, recipe, atol=1e-5)


@pytest.mark.parametrize("preprocess", ["x_grad", "y_grad", "left_diag", "right_diag"])
def test_align_differs_from_recipe_only_at_the_window_border_with_gradient_filters(preprocess):
    """The 3x3 filter sees true neighbours densely but zero padding inside each 10x10 window."""
    torch.manual_seed(1)
    student = randomise_bn(TinyLaDeDa(preprocess))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        aligned = align(student.patch_map(x), torch.zeros(2, 1, 7, 7))
        recipe = per_patch_recipe(student, x, 7)
        # Same recipe on windows cut from the densely filtered image (no border effect): exact.
        raw = TinyLaDeDa("raw")
        raw.load_state_dict(student.state_dict())
        raw.eval()
        exact = per_patch_recipe(raw, student.input_filter(x), 7)
    assert torch.allclose(aligned, exact, atol=1e-5)
    gap = (aligned - recipe).abs()
    assert gap.max() > 1e-4, "the padding difference is real"
    corr = torch.corrcoef(torch.stack([aligned.flatten(), recipe.flatten()]))[0, 1]
    assert corr > 0.9, "and small: measured 0.97-0.98 with random weights (README)"


def test_align_rejects_mismatched_maps():
    with pytest.raises(LadedaError, match="cannot align a student patch map of \\(30, 30\\)"):
        align(torch.zeros(1, 1, 30, 30), torch.zeros(1, 1, 8, 8))


def test_alpha_zero_disables_a_term_exactly():
    torch.manual_seed(2)
    s = torch.randn(4, 1, 30, 30, requires_grad=True)
    t = torch.randn(4, 1, 7, 7)
    y = torch.tensor([0, 1, 0, 1])
    only_bce, terms = distill_loss(s, t, y, alpha_task=1.0, alpha_distill=0.0, target="raw")
    assert only_bce.item() == terms["bce"] and terms["mse"] > 0
    only_mse, terms = distill_loss(s, t, y, alpha_task=0.0, alpha_distill=1.0, target="raw")
    assert only_mse.item() == pytest.approx(terms["mse"], rel=1e-6)
    mixed, terms = distill_loss(s, t, y, alpha_task=0.7, alpha_distill=0.3, target="raw")
    assert mixed.item() == pytest.approx(0.7 * terms["bce"] + 0.3 * terms["mse"], rel=1e-6)
    # No MSE gradient leaks in with alpha_distill = 0: the gradient is uniform over each image's cells.
    only_bce.backward()
    g = s.grad
    assert torch.allclose(g, g[:, :, :1, :1].expand_as(g))
    with pytest.raises(LadedaError, match="needs a teacher"):
        distill_loss(s, None, y, alpha_task=0.5, alpha_distill=0.5, target="raw")


def test_patch_agreement_is_one_for_a_student_that_copies_the_teacher():
    torch.manual_seed(4)
    t = [torch.randn(7, 7).numpy() for _ in range(3)]
    copies = []
    for m in t:
        s = torch.randn(30, 30)  # cells outside the pooling windows do not matter
        for i in range(7):
            for j in range(7):
                s[4 * i:4 * i + 3, 4 * j:4 * j + 3] = float(m[i, j])
        copies.append(s.numpy())
    assert patch_agreement(copies, t)["pearson"] == pytest.approx(1.0, abs=1e-6)
    assert patch_agreement(copies, t)["spearman"] == pytest.approx(1.0, abs=1e-6)
    noise = patch_agreement([torch.randn(30, 30).numpy() for _ in range(3)], t)
    assert abs(noise["pearson"]) < 0.3 and abs(noise["spearman"]) < 0.3


@pytest.mark.parametrize("auc,band", [(0.9, "good"), (0.651, "good"), (0.65, "marginal"), (0.6, "marginal"),
                                      (0.55, "marginal"), (0.54, "bad")])
def test_diagnose_bands(auc, band):
    assert diagnose_band(auc, good=0.65, bad=0.55) == band


@pytest.mark.parametrize("policy,band,finetune", [("auto", "good", False), ("auto", "marginal", True),
                                                  ("auto", "bad", True), ("always", "good", True),
                                                  ("never", "bad", False)])
def test_finetune_policy(policy, band, finetune):
    decision = finetune_decision(policy, band)
    assert decision.finetune is finetune and band in decision.reason


def test_auto_keeps_the_pretrained_teacher_only_when_it_is_clearly_good():
    """A `good` band whose interval straddles diagnose.good is within the noise: auto fine-tunes."""
    def margin(auc, se=0.027):
        return threshold_margins({"auc": auc, "auc_se": se, "auc_ci_low": auc - 1.96 * se,
                                  "auc_ci_high": auc + 1.96 * se}, {"good": 0.65})["good"]

    near = finetune_decision("auto", "good", margin(0.667))
    assert near.finetune and "straddles diagnose.good 0.65" in near.reason
    clear = finetune_decision("auto", "good", margin(0.75))
    assert not clear.finetune and "kept" in clear.reason
    assert not finetune_decision("never", "good", margin(0.667)).finetune, "never still overrides"
    assert finetune_decision("auto", "marginal", margin(0.64)).finetune


@pytest.mark.parametrize("auc,rec", [(0.8, "ready"), (0.65, "ready"), (0.6, "limited"), (0.55, "limited"),
                                     (0.5, "skip")])
def test_distillation_recommendation(auc, rec):
    assert distill_recommendation(auc, ready=0.65, skip=0.55) == rec


def student_params(**values):
    """The project's `student` section with `values` changed."""
    return params_from_dict(project_params({"student": values})).student


def test_schedules_and_the_skip_gate():
    s = student_params(schedule="single_stage", epochs=7, lr=1e-3, epochs_s1=2, lr_s1=1e-3, epochs_s2=3, lr_s2=1e-4)
    (single,) = plan_schedule(s, 0.95, 0.05, distill=True)
    assert (single.epochs, single.alpha_task, single.alpha_distill) == (7, 0.95, 0.05)
    s = s.model_copy(update={"schedule": "two_stage"})
    s1, s2 = plan_schedule(s, 0.9, 0.1, distill=True)
    assert (s1.epochs, s1.lr, s1.alpha_task, s1.alpha_distill) == (2, 1e-3, 0.0, 1.0)
    assert (s2.epochs, s2.lr, s2.alpha_task, s2.alpha_distill) == (3, 1e-4, 0.9, 0.1)
    (forced,) = plan_schedule(s, 0.9, 0.1, distill=False)
    assert (forced.alpha_task, forced.alpha_distill) == (1.0, 0.0)
    s = s.model_copy(update={"epochs_s1": 0, "epochs_s2": 0})
    with pytest.raises(LadedaError, match="no epochs"):
        plan_schedule(s, 0.9, 0.1, distill=True)


def test_skip_gate_step_is_bce_only():
    step = make_distill_step(None, 1.0, 0.0, target="standardized")  # no teacher: no scale needed
    loss, terms = step(TinyLaDeDa(), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert set(terms) == {"bce"} and loss.item() == terms["bce"]


def test_distill_step_uses_the_teachers_own_patch_maps():
    """The step's inference copy of the teacher gives the loss the teacher's eval-mode maps would."""
    torch.manual_seed(5)
    teacher, student = randomise_bn(LaDeDa9(width=4)), TinyLaDeDa()
    x, y = torch.randn(3, 3, 40, 40), torch.tensor([0, 1, 1])
    loss, terms = make_distill_step(teacher, 0.5, 0.5, target="raw")(student, x, y)
    with torch.no_grad():
        expected, expected_terms = distill_loss(student.patch_map(x), teacher.eval().patch_map(x), y, 0.5, 0.5,
                                                target="raw")
    assert terms["mse"] == pytest.approx(expected_terms["mse"], rel=1e-4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4) and loss.requires_grad


def test_teacher_is_bit_identical_after_two_stage_training():
    torch.manual_seed(3)
    teacher = randomise_bn(LaDeDa9(width=4))
    teacher.train()  # train_student must put it in eval mode itself
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train, val = pattern_loaders(n_train=32, n_val=16, size=32)
    s = student_params(schedule="two_stage", epochs_s1=1, epochs_s2=1, lr_s1=1e-2, lr_s2=1e-2)
    student = TinyLaDeDa()
    rows = []
    results = train_student(student, teacher, plan_schedule(s, 0.5, 0.5, True), train, val, s, seed=0,
                            target="raw", log_epoch=rows.append)
    assert [ph.name for ph, _ in results] == ["stage1", "stage2"]
    assert [r["epoch"] for r in rows] == [1, 2], "epochs are numbered across phases"
    assert all("train_mse" in r for r in rows)
    for key, value in before.items():
        assert torch.equal(value, teacher.state_dict()[key]), key
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


# The distillation target space: raw (official) | standardized (teacher sigma) | probability (sigmoids).

def loss_inputs(seed=6):
    """A student map (30x30, requires grad), a logit-sized teacher map (7x7) and labels."""
    torch.manual_seed(seed)
    s = (3 * torch.randn(4, 1, 30, 30)).requires_grad_()
    return s, 6 * torch.randn(4, 1, 7, 7) - 2, torch.tensor([0, 1, 0, 1])


def image_bce(s, y):
    return F.binary_cross_entropy_with_logits(s.mean(dim=(1, 2, 3)), y.float())


@pytest.mark.parametrize("target", TARGETS)
def test_alpha_distill_zero_leaves_the_term_out_for_every_target(target):
    s, t, y = loss_inputs()
    total, terms = distill_loss(s, t, y, alpha_task=0.7, alpha_distill=0.0, target=target, scale=2.5)
    bce = image_bce(s, y)
    assert total.item() == (0.7 * bce).item() and terms["mse"] > 0
    (grad,) = torch.autograd.grad(total, s)
    (bce_grad,) = torch.autograd.grad(0.7 * bce, s)
    assert torch.equal(grad, bce_grad), "no gradient from the distillation term"


def test_raw_target_is_the_official_loss_unchanged():
    s, t, y = loss_inputs()
    total, terms = distill_loss(s, t, y, 0.95, 0.05, target="raw")
    bce, mse = image_bce(s, y), F.mse_loss(F.avg_pool2d(s, 3, stride=4), t)
    assert terms == {"bce": bce.item(), "mse": mse.item()}
    assert total.item() == pytest.approx(0.95 * bce.item() + 0.05 * mse.item(), rel=1e-6)


def test_standardized_target_is_the_raw_mse_over_sigma_squared():
    s, t, y = loss_inputs()
    sigma = 3.7
    _, raw = distill_loss(s, t, y, 0.9, 0.1, target="raw")
    total, std = distill_loss(s, t, y, 0.9, 0.1, target="standardized", scale=sigma)
    assert std["bce"] == raw["bce"]
    assert std["mse"] == pytest.approx(raw["mse"] / sigma ** 2, rel=1e-5)
    assert total.item() == pytest.approx(0.9 * raw["bce"] + 0.1 * raw["mse"] / sigma ** 2, rel=1e-5)


def test_probability_target_is_the_mse_of_the_sigmoids():
    s, t, y = loss_inputs()
    total, terms = distill_loss(s, t, y, 0.9, 0.1, target="probability")
    expected = ((torch.sigmoid(F.avg_pool2d(s, 3, stride=4)) - torch.sigmoid(t)) ** 2).mean().item()
    assert terms["mse"] == pytest.approx(expected, rel=1e-5) and 0 < terms["mse"] < 1
    assert total.item() == pytest.approx(0.9 * terms["bce"] + 0.1 * expected, rel=1e-5)


@pytest.mark.parametrize("scale", [None, 0.0, -1.0, float("nan"), float("inf")])
def test_standardized_without_a_usable_scale_is_one_clear_error(scale):
    s, t, y = loss_inputs()
    with pytest.raises(LadedaError, match="needs a finite teacher scale above 0") as err:
        distill_loss(s, t, y, 0.9, 0.1, target="standardized", scale=scale)
    assert "\n" not in str(err.value)
    with pytest.raises(LadedaError, match="needs a finite teacher scale above 0"):
        make_distill_step(LaDeDa9(width=4), 0.9, 0.1, target="standardized", scale=scale)


def test_unknown_target_is_one_clear_error():
    with pytest.raises(LadedaError, match="unknown distillation target 'logits': use one of standardized, raw"):
        distill_loss(*loss_inputs(), 0.9, 0.1, target="logits")


def small_teacher(seed=3):
    torch.manual_seed(seed)
    return randomise_bn(LaDeDa9(width=4))


def test_measured_scale_is_the_std_of_the_teacher_maps_over_the_train_split():
    teacher = small_teacher()
    train, _ = pattern_loaders(n_train=48, size=40)
    scale = measure_scale(teacher, train, seed=0)
    with torch.no_grad():
        maps = [teacher.eval().patch_map(x) for x, _, _ in train]
    values = torch.cat([m.flatten() for m in maps]).double().numpy()
    assert maps[0].shape[-2:] == (4, 4) and values.size == 48 * 16
    assert scale == pytest.approx(float(np.std(values)), rel=1e-4)
    assert target_scale("standardized", teacher, train, seed=0) == scale
    assert target_scale("raw", teacher, train, seed=0) is None
    assert target_scale("probability", teacher, train, seed=0) is None
    assert target_scale("standardized", None, train, seed=0) is None, "no teacher (gate says skip): nothing to measure"


class Jittered(PatternImages):
    """Pattern images plus noise drawn from torch's global RNG per item, as random crops and flips draw."""

    def __getitem__(self, i):
        x, y, idx = super().__getitem__(i)
        return x + 0.5 * torch.randn_like(x), y, idx


def test_scale_measurement_is_reproducible_whatever_ran_before():
    teacher = small_teacher()
    loader = DataLoader(Jittered(32, 32), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    first = measure_scale(teacher, loader, seed=0)
    torch.rand(100)
    next(iter(loader))  # other work moves the global RNG and the loader's generator on
    assert measure_scale(teacher, loader, seed=0) == first
    assert measure_scale(teacher, loader, seed=1) != first, "the pass is random: reseeding is what fixes it"


def test_a_teacher_whose_patch_logits_do_not_vary_has_no_scale():
    teacher = small_teacher()
    with torch.no_grad():
        teacher.fc.weight.zero_()
        teacher.fc.bias.fill_(0.3)
    train, _ = pattern_loaders(n_train=16)
    with pytest.raises(LadedaError, match="needs a finite teacher scale above 0, got 0.0"):
        measure_scale(teacher, train, seed=0)


def test_loss_shares_are_the_weighted_terms_over_their_sum():
    shares = loss_shares(bce=0.5, mse=2.0, alpha_task=0.9, alpha_distill=0.1)
    assert shares["share_task"] == pytest.approx(0.45 / 0.65) and shares["share_distill"] == pytest.approx(0.2 / 0.65)
    assert loss_shares(bce=0.5, mse=2.0, alpha_task=1.0, alpha_distill=0.0) == {"share_task": 1.0, "share_distill": 0.0}


def test_spearman_agreement_sees_the_ranking_only():
    """A student whose aligned map is a monotone, non-linear function of the teacher's: Spearman 1, Pearson < 1."""
    torch.manual_seed(7)
    t = [torch.randn(7, 7) for _ in range(3)]
    students = [m.exp().repeat_interleave(4, 0).repeat_interleave(4, 1)[:30, :30] for m in t]  # constant 3x3 windows
    a = patch_agreement([m.numpy() for m in students], [m.numpy() for m in t])
    assert a["spearman"] == pytest.approx(1.0) and a["pearson"] < 0.95


def run_student(teacher, alpha_task, alpha_distill, target, scale=None, epochs=1, train_val=None, schedule=None):
    """Train a fresh, seeded Tiny-LaDeDa on the pattern data; returns (student, epoch rows)."""
    train, val = train_val or pattern_loaders(n_train=48, n_val=24, size=40)
    s = student_params(schedule=schedule or "single_stage", epochs=epochs, epochs_s1=1, epochs_s2=1, lr=1e-2)
    torch.manual_seed(0)
    student, rows = TinyLaDeDa(), []
    train_student(student, teacher, plan_schedule(s, alpha_task, alpha_distill, teacher is not None), train, val,
                  s, seed=0, target=target, scale=scale, log_epoch=rows.append)
    return student, rows


def test_standardized_distillation_share_grows_with_alpha():
    teacher = small_teacher()
    data = pattern_loaders(n_train=48, n_val=24, size=40)
    scale = target_scale("standardized", teacher, data[0], seed=0)
    shares = [run_student(teacher, 1 - alpha, alpha, "standardized", scale, train_val=data)[1][0]["share_distill"]
              for alpha in (0.0, 0.01, 0.05, 0.1, 0.5)]
    assert shares[0] == 0.0
    assert all(a < b for a, b in zip(shares, shares[1:])), shares


def test_epoch_rows_have_loss_shares_and_the_validation_patch_agreement():
    teacher = small_teacher()
    train, val = pattern_loaders(n_train=48, n_val=24, size=40)
    student, rows = run_student(teacher, 0.8, 0.2, "probability", epochs=2, train_val=(train, val))
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        weighted = 0.8 * row["train_bce"] + 0.2 * row["train_mse"]
        assert row["share_distill"] == pytest.approx(0.2 * row["train_mse"] / weighted)
        assert row["share_task"] == pytest.approx(0.8 * row["train_bce"] / weighted)
    # The student leaves as the model validated at the last epoch (the weight average, params' ema > 0).
    with torch.no_grad():
        pairs = [(F.avg_pool2d(student.eval().patch_map(x), 3, stride=4), teacher.eval().patch_map(x))
                 for x, _, _ in val]
    s = torch.cat([a.flatten() for a, _ in pairs]).double().numpy()
    t = torch.cat([b.flatten() for _, b in pairs]).double().numpy()
    assert rows[-1]["val_patch_pearson"] == pytest.approx(np.corrcoef(s, t)[0, 1], abs=1e-5)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731 - no ties in float maps
    assert rows[-1]["val_patch_spearman"] == pytest.approx(np.corrcoef(ranks(s), ranks(t))[0, 1], abs=1e-4)


def test_teacher_validation_maps_are_computed_once_for_the_whole_schedule(monkeypatch):
    import ladeda.distillation.monitor as monitor

    calls = []

    def counting(real):
        def wrapped(model, loader, *args, **kwargs):
            calls.append(kwargs.get("desc"))
            return real(model, loader, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(monitor, "score_models", counting(monitor.score_models))  # teacher maps (kept), student's
    _, rows = run_student(small_teacher(), 0.5, 0.5, "raw", schedule="two_stage")
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_patch_pearson" in r for r in rows)
    assert calls == ["validate teacher maps", "validate patch maps", "validate patch maps"]


def test_without_a_teacher_rows_have_no_distillation_diagnostics():
    _, rows = run_student(None, 1.0, 0.0, "standardized")
    assert not {"train_mse", "share_task", "share_distill", "val_patch_pearson", "val_patch_spearman"} & set(rows[0])
