"""Where the benchmarks find the shared VNN-COMP data: ``$VERIFIER_SHARED_DATA/vnncomp``, else
``../shared/data/vnncomp`` beside the project root (as in ``tests/conftest.py``)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def vnncomp_dir() -> Path:
    """The folder holding the VNN-COMP benchmarks (``acasxu/``, ``mnist_fc/``, ``test/``)."""
    return Path(os.environ.get("VERIFIER_SHARED_DATA", ROOT.parent / "shared" / "data")) / "vnncomp"
