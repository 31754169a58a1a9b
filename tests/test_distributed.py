"""Data-parallel training on the CPU (gloo): sharded loaders, the fit loop over 2 processes, exact resume under DDP."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, SequentialSampler

from ladeda.core.params import params_from_dict
from ladeda.core.runtime import CPU, Runtime
from ladeda.data.loaders import SeededBatches, ShardedBatches, reseed_loader, split_loader
from ladeda.evaluation.metrics import detection_metrics
from ladeda.evaluation.scoring import score
from ladeda.models import TinyLaDeDa
from ladeda.training.fit import FitConfig, fit

from helpers import project_params
from test_runtime import image_folder


def seeded(n, batch_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SeededBatches(BatchSampler(torch.utils.data.RandomSampler(range(n), generator=g), batch_size, False), g)


def test_split_shards_together_are_the_one_process_batches_and_short_batches_are_counted(capsys):
    one = list(seeded(21, 8))  # batches of 8, 8, 5
    shards = [list(ShardedBatches(seeded(21, 8), r, 2, "split")) for r in range(2)]
    assert [sorted(a + b) for a, b in zip(*shards)] == [sorted(b) for b in one]
    assert [len(b) for b in shards[0]] == [4, 4, 3] and [len(b) for b in shards[1]] == [4, 4, 2]
    short = [list(ShardedBatches(seeded(17, 8), r, 2, "split")) for r in range(2)]  # last batch: 1 image < 2 ranks
    assert [len(b) for b in short[0]] == [4, 4] and [len(b) for b in short[1]] == [4, 4]
    assert "left out 1 image(s) this pass" in capsys.readouterr().out


def test_deal_shards_cover_every_evaluation_batch_once():
    batches = BatchSampler(SequentialSampler(range(10)), 3, False)  # 4 batches for 3 ranks
    shards = [ShardedBatches(batches, r, 3, "deal") for r in range(3)]
    assert [len(s) for s in shards] == [2, 1, 1]
    assert sorted(i for s in shards for b in s for i in b) == list(range(10))


def test_reseeding_a_sharded_loader_replays_its_pass(tmp_path):
    root = image_folder(tmp_path / "data", n=6)
    data = params_from_dict(project_params({"data": {"root": str(root), "crop_size": 32}})).data
    loader = split_loader(data, str(root), "train", 4, seed=0, shard=(1, 2))
    passes = []
    for _ in range(2):
        reseed_loader(loader, 7)
        passes.append(torch.cat([x for x, _, _ in loader]))
    assert torch.equal(*passes) and len(passes[0]) == 6  # rank 1 of 2: half of each batch of 4 (2+2+2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Interrupt(Exception):
    pass


def worker(rank, world, port, root, out, interrupt):
    """One rank: fit a Tiny-LaDeDa on sharded loaders (optionally killed after epoch 1 and resumed)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    data = params_from_dict(project_params({"data": {"root": str(root), "crop_size": 32, "jpeg_prob": 0.5}})).data
    train = split_loader(data, str(root), "train", 8, seed=3, shard=(rank, world))
    val = split_loader(data, str(root), "val", 5, seed=3, shard=(rank, world))
    rt = Runtime(torch.device("cpu"), "fp32", 0, 1, rank=rank, world_size=world)
    config = FitConfig(epochs=3, lr=1e-2, seed=3, ema=0.5)
    last = out / "last.pt"
    best_epochs = []

    def run(on_epoch_end=None):
        torch.manual_seed(0)
        model = TinyLaDeDa("right_diag")
        result = fit(model, train, val, config, last_path=last, on_epoch_end=on_epoch_end, runtime=rt,
                     on_best=lambda m, epoch, row: best_epochs.append(epoch))
        return model, result

    if interrupt:
        def stop(epoch):
            if epoch == 1:
                raise Interrupt
        with pytest.raises(Interrupt):
            run(stop)
        dist.barrier()  # rank 0 has written the resume file
    model, result = run()
    torch.save({"history": result.history, "state": model.state_dict(), "best": best_epochs,
                "resumed_from": result.resumed_from}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_ranks(root, out, interrupt=False, world=2):
    out.mkdir()
    mp.spawn(worker, args=(world, free_port(), root, out, interrupt), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def test_two_process_fit_is_one_model_validated_on_the_whole_split_and_resumes_exactly(tmp_path):
    root = image_folder(tmp_path / "data", n=9)  # 18 train, 18 val images: val batches of 5 dealt unevenly
    ranks = run_ranks(root, tmp_path / "run")
    rank0, rank1 = ranks
    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])  # BatchNorm included
    assert rank0["history"] == rank1["history"] and len(rank0["history"]) == 3
    assert rank0["best"] and not rank1["best"]  # only rank 0 checkpoints
    assert not (tmp_path / "run" / "last.pt").exists()

    # the gathered validation AUC is the AUC over the whole split, as one process scores the final model
    data = params_from_dict(project_params({"data": {"root": str(root), "crop_size": 32}})).data
    model = TinyLaDeDa("right_diag")
    model.load_state_dict(rank0["state"])
    s = score(model, split_loader(data, str(root), "val", 5, seed=3), runtime=CPU)
    assert len(s.labels) == 18
    assert detection_metrics(s.labels, s.logits, name="val")["auc"] == pytest.approx(rank0["history"][-1]["val_auc"])

    resumed = run_ranks(root, tmp_path / "resumed", interrupt=True)[0]
    assert resumed["resumed_from"] == 1
    assert resumed["history"] == rank0["history"]
    assert all(torch.equal(resumed["state"][k], rank0["state"][k]) for k in rank0["state"])



@pytest.mark.parametrize("data_parallel,nproc,message", [
    (True, 1, "runtime.nproc is 1 but 2 processes were started"),  # torchrun's world size must be the param
    (False, 2, "this stage runs in one process")])  # evaluation stages refuse torchrun
def test_a_world_that_does_not_match_the_params_is_a_one_line_error(monkeypatch, data_parallel, nproc, message):
    from ladeda.core.errors import LadedaError
    from ladeda.core.runtime import setup_runtime

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    section = params_from_dict(project_params({"runtime": {"nproc": nproc, "device": "cpu"}})).runtime
    with pytest.raises(LadedaError, match=message) as err:
        setup_runtime(section, data_parallel=data_parallel)
    assert "\n" not in str(err.value) and not dist.is_initialized()
