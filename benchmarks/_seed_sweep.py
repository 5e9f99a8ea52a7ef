"""Command line and result file shared by the scripts that measure an effect test's arms per seed.

``pgd_at_noise_control.py``, ``sharpening_transfer.py``, ``rct_af_curvature_control.py`` and
``nup_effect.py`` each run the effect test's own helpers over ``--seeds`` and write one JSON; this
module holds the part they have in common, so they stay the same tool with the same flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parse_seed_sweep_args(description: str, result_name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``--seeds``, ``--threads`` and ``--out`` and set up torch and Lightning's logging.

    Args:
        description: The script's one-line description (``--help``).
        result_name: File name under ``benchmarks/results/`` that ``--out`` defaults to.
        argv: Arguments; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments; ``torch`` then uses ``--threads`` intra-op threads and Lightning's
        per-fit chatter (worker hints, INFO lines) is silenced.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="each seed sets the weights and the data split")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=str(RESULTS / result_name))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return args


def write_results(out: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus the machine it ran on (``machine``) as JSON at ``out``."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "threads": torch.get_num_threads()}
    path.write_text(json.dumps({**payload, "machine": machine}, indent=1) + "\n")
    return path
