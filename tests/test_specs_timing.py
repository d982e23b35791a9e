"""How long reading VNN-LIB takes: printed by ``python tests/test_specs_timing.py``, never asserted.

The script reads every property of every instance under ``../shared/data/vnncomp`` (and the 2.0
files of ``tests/data/specs``) and prints, per benchmark, the number of files and the mean and
largest time to read one (best of a few repeats, in milliseconds).
"""
import csv
import sys
import time
from pathlib import Path

from specs import read_vnnlib

HERE = Path(__file__).resolve().parent


def read_times(paths, repeat: int = 3) -> list[tuple[Path, float]]:
    """``(path, best seconds over repeat reads)`` for each path."""
    rows = []
    for path in paths:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            read_vnnlib(path)
            best = min(best, time.perf_counter() - start)
        rows.append((path, best))
    return rows


def instance_properties(bench: Path) -> list[Path]:
    with open(bench / "instances.csv") as f:
        return [bench / row[1].strip() for row in csv.reader(f) if row]


def test_read_times_reports_every_file_it_reads(vnncomp):
    paths = instance_properties(vnncomp / "test")
    rows = read_times(paths, repeat=1)
    assert [p for p, _ in rows] == paths and all(t > 0 for _, t in rows)


def main(vnncomp: Path) -> None:
    print(f"{'benchmark':<14}{'instances':>10}{'files':>7}{'mean ms':>10}{'max ms':>9}"
          f"{'all instances s':>17}")
    groups = [(b.name, instance_properties(b)) for b in sorted(vnncomp.iterdir())
              if (b / "instances.csv").is_file()]
    groups.append(("specs 2.0", sorted((HERE / "data" / "specs").glob("v2_[al]*.vnnlib"))))
    for name, paths in groups:
        unique = sorted(set(paths))
        times = dict(read_times(unique))
        total = sum(times[p] for p in paths)
        print(f"{name:<14}{len(paths):>10}{len(unique):>7}"
              f"{1e3 * sum(times.values()) / len(times):>10.1f}{1e3 * max(times.values()):>9.1f}"
              f"{total:>17.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared/data/vnncomp")
