"""Test-wide settings: offline W&B, quiet Lightning, CPU-sized thread pools."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PL_DISABLE_FORK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under pytest-xdist every worker would otherwise size torch's intra-op pool to the whole
# machine: with `make test`'s two workers on a 2-core CI machine that is 4 spinning OpenMP
# threads on 2 cores, which doubled the CPU time of the suite. Split the cores between workers.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, _usable_cpus() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture
def single_thread():
    """One intra-op thread for the test, restored after: tiny tensors and models gain nothing
    from more, and on the 2-core CI machines (two pytest workers) they would oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
