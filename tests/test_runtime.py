"""The `runtime` params: device and precision resolution, the training/scoring device path, and loader workers
that never change results."""

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda.core.errors import LadedaError
from ladeda.core.params import params_from_dict
from ladeda.core.runtime import CPU, Runtime, resolve_precision, setup_runtime
from ladeda.data.loaders import split_loader
from ladeda.evaluation.scoring import score
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.training.fit import FitConfig, fit

from helpers import project_params

CUDA = torch.cuda.is_available()


def runtime_section(**overrides):
    return params_from_dict(project_params({"runtime": overrides})).runtime


def test_auto_on_a_cpu_machine_is_fp32_without_workers(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rt = setup_runtime(runtime_section(device="auto", precision="auto", num_workers="auto", threads=1))
    assert rt == Runtime(torch.device("cpu"), "fp32", 0, 1)
    assert capsys.readouterr().out == "runtime: cpu, fp32, 0 loader workers, 1 CPU thread\n"  # what the stage used
    assert torch.get_num_threads() == 1 and rt.loader_options() == {"num_workers": 0, "pin_memory": False}


def test_auto_with_a_gpu_picks_bf16_or_fp16_and_workers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"


@pytest.mark.parametrize("key,value,message", [
    ("device", "gpu", "`runtime.device` must match"), ("precision", "fp8", "`runtime.precision` must be one of"),
    ("num_workers", -1, "runtime.num_workers"), ("threads", 0, "runtime.threads")])
def test_bad_runtime_params_are_one_line_errors(key, value, message):
    with pytest.raises(LadedaError, match=message) as err:
        params_from_dict(project_params({"runtime": {key: value}}))
    assert "\n" not in str(err.value)


def test_cuda_without_a_gpu_and_fp16_on_the_cpu_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LadedaError, match="no CUDA GPU"):
        setup_runtime(runtime_section(device="cuda:0"))
    with pytest.raises(LadedaError, match="fp16 needs a CUDA device"):
        setup_runtime(runtime_section(device="cpu", precision="fp16"))


def image_folder(root, n=12, size=40):
    """train/val with n real and n fake random RGB images (bigger than the crop, so crops are random)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("0_real", "1_fake"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def train_history(root, num_workers, runtime=CPU):
    """Fit a Tiny-LaDeDa for 2 epochs on augmented crops (random crop, flip, blur, JPEG) and return its history."""
    data = params_from_dict(project_params({"data": {"root": str(root), "crop_size": 32, "blur_prob": 0.5,
                                                     "jpeg_prob": 0.5}})).data
    train = split_loader(data, str(root), "train", 8, seed=3, num_workers=num_workers)
    val = split_loader(data, str(root), "val", 8, seed=3, num_workers=num_workers)
    torch.manual_seed(0)
    model = TinyLaDeDa("right_diag")
    result = fit(model, train, val, FitConfig(epochs=2, lr=1e-2, seed=3), runtime=runtime)
    return result.history, model.state_dict()


def test_results_do_not_depend_on_num_workers(tmp_path):
    root = image_folder(tmp_path / "data")
    h0, w0 = train_history(root, num_workers=0)
    h2, w2 = train_history(root, num_workers=2)
    assert h0 == h2  # losses and validation metrics to the last bit
    assert all(torch.equal(w0[k], w2[k]) for k in w0)


def test_each_epoch_draws_new_augmentations(tmp_path):
    root = image_folder(tmp_path / "data", n=4)
    data = params_from_dict(project_params({"data": {"root": str(root), "crop_size": 32}})).data
    loader = split_loader(data, str(root), "train", 8, seed=0)
    first, second = (torch.cat([x for x, _, _ in loader]) for _ in range(2))
    assert not torch.equal(first, second)  # the sampler's generator moves on: new order, crops and flips


def test_bf16_autocast_on_the_cpu_trains_and_scores_in_fp32(loaders):
    train, val = loaders
    rt = Runtime(torch.device("cpu"), "bf16", 0, 1)
    model = LaDeDa9(preprocess="NPR", width=8)
    result = fit(model, train, val, FitConfig(epochs=1, lr=1e-3), runtime=rt)
    assert np.isfinite(result.history[0]["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights
    s = score(model, val, rt)
    assert s.logits.dtype == np.float64 and np.isfinite(s.logits).all()
    plain = score(model, val)
    assert not np.array_equal(s.logits, plain.logits)  # bf16 really ran...
    assert np.abs(s.logits - plain.logits).max() < 0.1  # ...and stays close to fp32


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none here); the CPU tests above run the same code")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_saves_cpu_checkpoints_that_resume(tmp_path, loaders, precision):
    train, val = loaders
    rt = Runtime(torch.device("cuda"), precision, 0, 1)
    model = LaDeDa9(preprocess="NPR", width=8)
    last = tmp_path / "last.pt"

    def interrupt(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, train, val, FitConfig(epochs=2, lr=1e-3), runtime=rt, last_path=last, on_epoch_end=interrupt)
    assert next(model.parameters()).is_cuda
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert (state["scaler"] is not None) == (precision == "fp16")
    again = fit(LaDeDa9(preprocess="NPR", width=8), train, val, FitConfig(epochs=2, lr=1e-3), runtime=rt,
                last_path=last)
    assert again.resumed_from == 1 and again.epochs_run == 2


def test_auto_threads_follow_the_load_every_epoch(monkeypatch, loaders):
    import ladeda.core.runtime as runtime

    idle = iter([2, 1, 1])  # the cores found idle at the stage's start, then before each of 2 epochs
    seen = []
    monkeypatch.setattr(runtime, "idle_cpus", lambda: next(idle))
    monkeypatch.setattr(runtime, "usable_cpus", lambda: [0, 1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rt = setup_runtime(runtime_section(device="cpu", threads="auto"))
    assert rt.threads == 2 and rt.auto_threads
    train, val = loaders
    fit(TinyLaDeDa("right_diag"), train, val, FitConfig(epochs=2, lr=1e-3), runtime=rt,
        on_epoch_end=lambda epoch: seen.append(torch.get_num_threads()))
    assert seen == [1, 1]  # another job took a core: both epochs ran on the one left
    fixed = setup_runtime(runtime_section(device="cpu", threads=2))
    assert not fixed.auto_threads and fixed.retune_threads() == 2 == torch.get_num_threads()
