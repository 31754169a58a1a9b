"""Parameter counts, FLOPs (multiply-add = 2) and measured throughput."""

from __future__ import annotations

import pytest
import torch

from ladeda.evaluation.efficiency import (count_parameters, cpu_model, flops_per_image, load_average,
                                         machine_description, measure_throughput)
from ladeda.models.fastpath import optimize_for_inference
from ladeda.models import LaDeDa9, TinyLaDeDa


def test_parameter_counts_match_the_design():
    assert count_parameters(TinyLaDeDa()) == 1297
    with torch.device("meta"):
        assert count_parameters(LaDeDa9()) == 13_641_793


def test_tiny_flops_follow_the_multiply_add_is_two_convention():
    h = w = 64
    macs = (h * w * 3 * 9  # right_diag depthwise 3x3, same padding
            + h * w * 3 * 8  # conv1 1x1 3->8
            + (h - 2) * (w - 2) * 8 * 8 * 9  # conv2 3x3 8->8, no padding
            + (h - 2) * (w - 2) * 8 * 8  # layer1.0.conv1 1x1
            + 30 * 30 * 8 * 8 * 9  # layer1.0.conv2 3x3 stride 2 -> 30x30
            + 30 * 30 * 8)  # fc 8->1 at every location
    assert flops_per_image(TinyLaDeDa(), h, w) == 2 * macs


def test_flops_ratio_teacher_to_student_at_256():
    with torch.device("meta"):  # counting needs shapes only
        teacher = LaDeDa9()
        student = TinyLaDeDa()
    ratio = flops_per_image(teacher, 256, 256) / flops_per_image(student, 256, 256)
    assert 300 < ratio < 450  # the paper: about 375x; measured 389x (41.93 GFLOPs vs 107.8 MFLOPs)


def test_fast_path_flops_count_the_folded_stem():
    """The fast path's oneDNN convs are counted too: filter, folded 3x3 stem 3->8, then the same layers."""
    macs = 64 * 64 * 3 * 9 + 62 * 62 * 8 * 3 * 9 + 62 * 62 * 8 * 8 + 30 * 30 * 8 * 8 * 9 + 30 * 30 * 8
    assert flops_per_image(optimize_for_inference(TinyLaDeDa()), 64, 64) == 2 * macs


def test_measure_throughput_is_positive_and_consistent():
    model = TinyLaDeDa().train()
    before = model.bn1.running_mean.clone()
    out = measure_throughput(model, 32, 32, batch_size=4, repeats=2, warmup=1)
    assert set(out) == {"images_per_s", "latency_ms_per_batch", "latency_ms_per_image"}
    assert all(v > 0 for v in out.values())
    assert out["latency_ms_per_image"] == pytest.approx(out["latency_ms_per_batch"] / 4)
    assert out["images_per_s"] == pytest.approx(4000.0 / out["latency_ms_per_batch"])
    assert model.training and torch.equal(model.bn1.running_mean, before)  # measured in eval mode, restored
    with pytest.raises(ValueError):
        measure_throughput(model, 32, 32, batch_size=0)
    assert measure_throughput(model, 32, 32, batch_size=2, repeats=1, warmup=0, cpu_time=True)["images_per_cpu_s"] > 0


def test_machine_description_names_torch_and_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = machine_description()
        torch.set_num_threads(2)
        two = machine_description()
    finally:
        torch.set_num_threads(before)
    assert torch.__version__.split("+")[0] in one and one.endswith(", 1 thread") and two.endswith(", 2 threads")


def test_cpu_model_names_family_and_model_of_the_first_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {m}\nmodel name\t: {name}\n\n"
    info.write_text(block.format(n=0, m=143, name="Intel(R) Xeon(R) Platinum 8480C")
                    + block.format(n=1, m=85, name="other"))
    assert cpu_model(str(info)) == "Intel(R) Xeon(R) Platinum 8480C (family 6, model 143)"
    info.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert cpu_model(str(info)) == "Some ARM core"  # no family / model lines: the name alone


def test_load_average_is_three_numbers_or_na():
    text = load_average()
    assert text == "n/a" or [float(v) >= 0 for v in text.split()] == [True, True, True]
