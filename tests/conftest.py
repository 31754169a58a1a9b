"""Shared fixtures: tiny, learnable in-memory data that goes through the same fit/score code as real data."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ladeda.core import cpu_claims


class PatternImages(Dataset):
    """Real: smooth noise; fake: the same plus a 2x2-periodic upsampling-like pattern. Items are (x, y, index)."""

    def __init__(self, n: int, size: int = 32, seed: int = 0, strength: float = 0.6):
        g = torch.Generator().manual_seed(seed)
        base = torch.nn.functional.avg_pool2d(torch.randn(n, 3, size + 2, size + 2, generator=g), 3, 1)
        self.labels = torch.arange(n) % 2
        pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(size // 2, size // 2)
        self.x = base + strength * self.labels.view(-1, 1, 1, 1) * pattern * torch.rand(n, 1, 1, 1, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i]), i


def pattern_loaders(n_train=64, n_val=32, size=32, batch_size=16, seed=0):
    train = DataLoader(PatternImages(n_train, size, seed), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(PatternImages(n_val, size, seed + 1), batch_size=64)
    return train, val


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: on shared cores OpenMP threads stall each other (see fastpath.configure_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def own_cpu_claims(tmp_path_factory):
    """The tests' CPU claims (core.cpu_claims) in a folder of their own, also for the stages they start, so
    ladeda runs elsewhere on the machine do not change the thread counts tests see."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADEDA_CPU_CLAIMS_DIR", str(tmp_path_factory.mktemp("cpu-claims")))
        yield


@pytest.fixture(autouse=True)
def no_lasting_claim():
    """A test that configured threads automatically gives up its claim, as the stage process would at exit."""
    yield
    cpu_claims.release()


@pytest.fixture
def loaders():
    return pattern_loaders()


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder without write permission. Root ignores permission bits (chmod does not stop its writes),
    so as root `os.access` is made to answer for this folder as it would for any other user."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if mode & os.W_OK and os.path.abspath(path) == str(folder):
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)
