"""How a benchmark records its results: one JSON file with the date, the machine and the fields
the benchmark measured."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def write_record(out_dir, name: str, **fields) -> Path:
    """Write ``out_dir/name.json`` with ``date`` (UTC), ``machine``, ``cpus`` and ``fields``;
    returns the path (the folder is made when missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": platform.platform(), "cpus": os.cpu_count(), **fields}, indent=1))
    return path
