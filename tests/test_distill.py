"""Distillation geometry (dense align == the official per-patch recipe), the loss weights, gates and the schedule."""

import pytest
import torch

from ladeda.distillation.loss import align, distill_loss, make_distill_step, patch_agreement
from ladeda.core.errors import LadedaError
from ladeda.pipeline.gates import diagnose_band, distill_recommendation, finetune_decision
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.core.params import params_from_dict
from ladeda.distillation.schedule import plan_schedule, train_student
from helpers import project_params

from conftest import pattern_loaders
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
    only_bce, terms = distill_loss(s, t, y, alpha_task=1.0, alpha_distill=0.0)
    assert only_bce.item() == terms["bce"] and terms["mse"] > 0
    only_mse, terms = distill_loss(s, t, y, alpha_task=0.0, alpha_distill=1.0)
    assert only_mse.item() == pytest.approx(terms["mse"], rel=1e-6)
    mixed, terms = distill_loss(s, t, y, alpha_task=0.7, alpha_distill=0.3)
    assert mixed.item() == pytest.approx(0.7 * terms["bce"] + 0.3 * terms["mse"], rel=1e-6)
    # No MSE gradient leaks in with alpha_distill = 0: the gradient is uniform over each image's cells.
    only_bce.backward()
    g = s.grad
    assert torch.allclose(g, g[:, :, :1, :1].expand_as(g))
    with pytest.raises(LadedaError, match="needs a teacher"):
        distill_loss(s, None, y, alpha_task=0.5, alpha_distill=0.5)


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
    assert patch_agreement(copies, t) == pytest.approx(1.0, abs=1e-6)
    assert abs(patch_agreement([torch.randn(30, 30).numpy() for _ in range(3)], t)) < 0.3


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
    step = make_distill_step(None, 1.0, 0.0)
    loss, terms = step(TinyLaDeDa(), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert set(terms) == {"bce"} and loss.item() == terms["bce"]


def test_distill_step_uses_the_teachers_own_patch_maps():
    """The step's inference copy of the teacher gives the loss the teacher's eval-mode maps would."""
    torch.manual_seed(5)
    teacher, student = randomise_bn(LaDeDa9(width=4)), TinyLaDeDa()
    x, y = torch.randn(3, 3, 40, 40), torch.tensor([0, 1, 1])
    loss, terms = make_distill_step(teacher, 0.5, 0.5)(student, x, y)
    with torch.no_grad():
        expected, expected_terms = distill_loss(student.patch_map(x), teacher.eval().patch_map(x), y, 0.5, 0.5)
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
                            log_epoch=rows.append)
    assert [ph.name for ph, _ in results] == ["stage1", "stage2"]
    assert [r["epoch"] for r in rows] == [1, 2], "epochs are numbered across phases"
    assert all("train_mse" in r for r in rows)
    for key, value in before.items():
        assert torch.equal(value, teacher.state_dict()[key]), key
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
