"""Seeded random streams for attacks: one per rank, checkpointable, never global reseeding."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RankGenerator"]

# Ranks draw from distinct streams; a large odd stride keeps them from overlapping.
_RANK_SEED_STRIDE = 1_000_003


class RankGenerator:
    """A :class:`torch.Generator` on the module's device, seeded per rank, checkpointable.

    ``seed=None`` derives the seed from ``torch.initial_seed()`` (what ``seed_everything`` set),
    so runs are reproducible without the callback ever reseeding global RNGs.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_state: Tensor | None = None

    def base_seed(self, rank: int) -> int:
        """The seed of ``rank``'s stream: the base seed plus a large odd stride per rank."""
        base = torch.initial_seed() if self.seed is None else self.seed
        return (int(base) + rank * _RANK_SEED_STRIDE) % (2**63)

    def get(self, device: torch.device, rank: int) -> torch.Generator:
        """The generator on ``device``, created (and restored from a loaded state) on first use."""
        if self._generator is None or torch.device(self._generator.device) != _canonical(device):
            generator = torch.Generator(device=device)
            generator.manual_seed(self.base_seed(rank))
            if self._pending_state is not None:
                generator.set_state(self._pending_state)
                self._pending_state = None
            self._generator = generator
        return self._generator

    def reset(self, device: torch.device, rank: int) -> torch.Generator:
        """Start ``rank``'s stream again from its seed (e.g. every evaluation epoch)."""
        self._generator = None
        self._pending_state = None
        return self.get(device, rank)

    def state(self) -> Tensor | None:
        """The generator state to checkpoint (``None`` before first use and nothing loaded)."""
        return self._generator.get_state() if self._generator is not None else self._pending_state

    def load_state(self, state: Tensor | None) -> None:
        """Restore a checkpointed state; applied when the generator is next created."""
        self._generator = None
        self._pending_state = state


def _canonical(device: torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
