"""The answer to one verification query."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The answers of the VNN-COMP convention, and nothing else.
STATUSES = ("sat", "unsat", "unknown", "timeout", "error")


@dataclass
class Result:
    """``status`` is one of ``STATUSES``. For ``sat``, ``counterexample`` is ``(x, y)``: the flat
    input (n,) and the flat output (m,) that onnxruntime computed for it on the original model.
    ``margin`` is the best proven lower bound of ``min over unsafe rows of (C y - d)`` (positive
    proves the property), when one was computed. ``stats`` counts work (bound calls, nodes)."""

    status: str
    counterexample: tuple[np.ndarray, np.ndarray] | None = None
    margin: float | None = None
    method: str = ""
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    message: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.status == "sat" and self.counterexample is None:
            raise ValueError("a sat result needs its counterexample")
