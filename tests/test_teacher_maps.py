"""The teacher's patch maps for distillation: cached by input content, each computed from its image alone, so a run's
numbers do not depend on what was cached (a resumed run starts with an empty cache)."""

import pytest
import torch

from ladeda.distillation.schedule import plan_schedule, train_student
from ladeda.distillation.teacher_maps import ENTRY_OVERHEAD, TeacherMaps
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.models.fastpath import optimize_for_inference

from conftest import pattern_loaders
from test_distill import small_teacher, student_params
from test_models import randomise_bn


def images(n=6, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def default_teacher():
    """The default's teacher size (width 16): at 64 px its batched fast path differs with the batch in the last
    bits, which is what the cache must not let through (a width-4 teacher does not show it)."""
    torch.manual_seed(3)
    return randomise_bn(LaDeDa9(width=16))


def test_a_cached_map_is_the_images_own_map_in_any_batch():
    teacher, x = default_teacher(), images()
    maps = TeacherMaps(teacher, cache=True)
    first = maps(x)
    order = [5, 2, 0]
    again = maps(x[order])
    assert maps.counts() == {"computed": 6, "reused": 3, "kept": 6}
    assert torch.equal(again, first[order])
    fresh = TeacherMaps(teacher, cache=True)(x[order])  # computed anew, in another batch
    assert torch.equal(fresh, again), "each map depends on its image alone, not on its batch or the cache"
    with torch.no_grad():
        plain = teacher.eval().patch_map(x)
    assert first.shape == plain.shape == (6, 1, 7, 7)
    assert torch.allclose(first, plain, atol=1e-4), "the teacher's own eval-mode maps, to float tolerance"


def test_a_mirrored_image_is_another_input():
    teacher, x = small_teacher(), images(2)
    maps = TeacherMaps(teacher, cache=True)
    maps(x)
    maps(x.flip(-1))
    assert maps.counts() == {"computed": 4, "reused": 0, "kept": 4}


def test_without_the_cache_maps_are_the_batched_fast_path():
    teacher, x = small_teacher(), images()
    maps = TeacherMaps(teacher, cache=False)
    expected = optimize_for_inference(teacher).patch_map(x)
    assert torch.equal(maps(x), expected) and torch.equal(maps(x), expected)
    assert maps.counts() == {"computed": 12, "reused": 0, "kept": 0}


def test_the_cache_keeps_maps_up_to_its_budget_and_computes_the_rest():
    teacher, x = small_teacher(), images()
    map_bytes = 7 * 7 * 4 + ENTRY_OVERHEAD  # a 7x7 float32 map and its bookkeeping
    maps = TeacherMaps(teacher, cache=True, max_bytes=2 * map_bytes)
    first = maps(x)
    second = maps(x)
    assert maps.counts() == {"computed": 10, "reused": 2, "kept": 2}
    assert maps.kept_bytes <= maps.max_bytes
    assert torch.equal(first, second)


def test_the_teacher_is_frozen_and_left_as_it_was():
    teacher = small_teacher()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    TeacherMaps(teacher, cache=True)(images())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


class Interrupt(Exception):
    pass


def test_distillation_with_cached_maps_resumes_exactly(tmp_path):
    """Interrupted after epoch 1 and resumed with an empty cache, the student ends bit-identical to an
    uninterrupted run that reused cached maps: a map computed anew equals the cached one."""
    teacher = default_teacher()
    s = student_params(schedule="single_stage", epochs=3, lr=1e-2, patience=10)

    def run(resume_dir, stop_after=None):
        train, val = pattern_loaders(n_train=32, n_val=16, size=64, batch_size=8)
        torch.manual_seed(0)
        student, maps = TinyLaDeDa(), TeacherMaps(teacher, cache=True)

        def hook(epoch):
            if epoch == stop_after:
                raise Interrupt

        results = train_student(student, teacher, plan_schedule(s, 0.5, 0.5, True), train, val, s, seed=0,
                                target="raw", resume_dir=resume_dir, on_epoch_end=hook, teacher_maps=maps)
        return student, results, maps

    full, _, full_maps = run(None)
    assert full_maps.counts()["reused"] == 2 * 32, "epochs 2 and 3 take every map from the cache"
    with pytest.raises(Interrupt):
        run(str(tmp_path), stop_after=1)
    resumed, results, resumed_maps = run(str(tmp_path))
    assert results[0][1].resumed_from == 1
    assert resumed_maps.counts() == {"computed": 32, "reused": 32, "kept": 32}
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_cached_and_uncached_distillation_agree_to_float_tolerance():
    """The cache changes which kernel shapes compute a map (one image vs the batch), not what the map is."""
    teacher = small_teacher()
    s = student_params(schedule="single_stage", epochs=1, lr=1e-2)
    losses = []
    for cache in (True, False):
        train, val = pattern_loaders(n_train=32, n_val=16, size=40)
        torch.manual_seed(0)
        rows = []
        train_student(TinyLaDeDa(), teacher, plan_schedule(s, 0.5, 0.5, True), train, val, s, seed=0, target="raw",
                      log_epoch=rows.append, teacher_maps=TeacherMaps(teacher, cache=cache))
        losses.append(rows[0]["train_mse"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)

