import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test in this folder runs on one intra-op thread (tests/conftest.py)."""
