"""Test-wide settings: offline W&B, quiet Lightning, CPU-sized thread pools."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PL_DISABLE_FORK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def single_thread():
    """One intra-op thread for the test, restored after: tiny tensors and models gain nothing
    from more, and on the 2-core CI machines (two pytest workers) they would oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
