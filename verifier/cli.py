"""The ``verifier`` command.

    verifier verify MODEL.onnx PROP.vnnlib [--timeout S] [--results FILE] [--method M]
                    [--threads N] [--processes N] [--no-work-sharing]
    verifier check  MODEL.onnx [PROP.vnnlib] [--samples N]
    verifier bounds MODEL.onnx PROP.vnnlib --method M [--json] [--repeat N]
    verifier run    BENCH_DIR [--timeout-scale F] [--workers N] [--processes N] [--results FILE]
                    [--method M]

Exit status: 0 for any answer of ``verify`` (sat, unsat, unknown, timeout, and error when the
pipeline itself reported one) and for every other command that completed; 2 for bad input
(an unreadable or unsupported model, a malformed property, a model and property that do not fit,
a bad option): one line ``verifier: error: ...`` on stderr, no traceback, and ``error`` in the
results file when one was asked for; 1 when something unexpected escaped (a bug): the answer
``error`` with its message is printed and written to the results file, the traceback is logged
on stderr; 130 on Ctrl-C: one line on stderr, and ``unknown`` in the results file of
``verify``. Only this module prints; the library logs (``-v`` shows its INFO messages).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT = 0, 1, 2
#: Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130

log = logging.getLogger("verifier.cli")


# --------------------------------------------------------------------------------------------
# progress bars (stderr, only on a terminal)
# --------------------------------------------------------------------------------------------
class Bar:
    """A one-line progress bar on stderr; silent when stderr is not a terminal (then ``line``
    messages are printed one per line instead)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.shown = False

    def show(self, fraction: float, text: str) -> None:
        if not self.tty:
            return
        fraction = min(1.0, max(0.0, fraction))
        full = int(round(fraction * self.width))
        self.stream.write(f"\r[{'#' * full}{'.' * (self.width - full)}] {text[:70]:<70}")
        self.stream.flush()
        self.shown = True

    def line(self, text: str) -> None:
        """A message that stays (above the bar on a terminal)."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * (self.width + 74) + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = False


def _bad_input(exc: BaseException) -> int:
    msg = str(exc).strip().splitlines()
    print(f"verifier: error: {msg[0] if msg else type(exc).__name__}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _write_results_file(path, result) -> None:
    from .run import write_results  # noqa: PLC0415

    if path:
        write_results(path, result)


# --------------------------------------------------------------------------------------------
# verifier verify
# --------------------------------------------------------------------------------------------
def _load(model: str, prop: str | None):
    """Model and property, checked to fit each other (raises VerifierError / SpecError)."""
    from specs import read_vnnlib  # noqa: PLC0415

    from . import load_onnx  # noqa: PLC0415

    net = load_onnx(model)
    spec = None
    if prop is not None:
        spec = read_vnnlib(prop, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    return net, spec


def _describe(result) -> str:
    parts = [result.method or "-", f"{result.seconds:.3f} s"]
    if result.margin is not None:
        parts.append(f"margin {result.margin:.6g}")
    if result.message:
        parts.append(result.message)
    return f"{result.status}  ({', '.join(parts)})"


def cmd_verify(args) -> int:
    from .errors import INPUT_ERRORS  # noqa: PLC0415
    from .result import Result  # noqa: PLC0415
    from .search.bab import BabOptions  # noqa: PLC0415
    from .verify import VerifyOptions, verify  # noqa: PLC0415

    t0 = time.monotonic()
    if args.threads > 0:
        from .run import limit_blas_threads  # noqa: PLC0415

        limit_blas_threads(args.threads)
    try:
        net, spec = _load(args.model, args.property)
        # loading counts against the timeout, as in the competition
        timeout = max(0.0, args.timeout - (time.monotonic() - t0))
        bar = Bar()
        options = VerifyOptions(bab_options=BabOptions(processes=args.processes or _cores(),
                                                       share_work=not args.no_work_sharing))
        result = verify(net, spec, timeout=timeout, method=args.method, onnx_path=args.model,
                        options=options, progress=lambda stage, f: bar.show(f, stage))
        bar.close()
    except (*INPUT_ERRORS, OSError) as exc:
        _write_results_file(args.results, Result("error", message=str(exc)))
        return _bad_input(exc)
    print(_describe(result))
    if result.status == "sat":
        x, y = result.counterexample
        if x.size + y.size <= 64:
            from .run import format_results  # noqa: PLC0415
            print(format_results(result).split("\n", 1)[1], end="")
        elif not args.results:
            print(f"(counterexample of {x.size} inputs: use --results FILE to write it)")
    _write_results_file(args.results, result)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# verifier check
# --------------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from .network.check import check_model  # noqa: PLC0415

    boxes = None
    if args.property is not None:
        import numpy as np  # noqa: PLC0415

        _, spec = _load(args.model, args.property)
        boxes = [(c.input.lower, c.input.upper) for c in spec.cases]
        boxes = (np.stack([b[0] for b in boxes]), np.stack([b[1] for b in boxes]))
    report = check_model(args.model, n_samples=args.samples, boxes=boxes,
                         tolerance=args.tolerance)
    print(report.format())
    if not report.agrees:
        print(f"verifier: {args.model}: the imported network disagrees with onnxruntime "
              f"(relative error {report.max_rel_error:.3g} >= {args.tolerance:g})",
              file=sys.stderr)
        return EXIT_BUG
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# verifier bounds
# --------------------------------------------------------------------------------------------
def cmd_bounds(args) -> int:
    from . import bounds  # noqa: PLC0415

    from .errors import VerifierError  # noqa: PLC0415

    options = None
    if args.cut_rounds < 0:
        raise VerifierError(f"--cut-rounds must be at least 0, not {args.cut_rounds}")
    if args.cut_rounds:
        if args.method not in ("lp", "lp-all"):
            raise VerifierError(f"--cut-rounds tightens the LP methods (lp, lp-all), not "
                                f"{args.method}")
        from .bounds.lp import LPOptions  # noqa: PLC0415

        options = LPOptions(cut_rounds=args.cut_rounds)
    net, spec = _load(args.model, args.property)
    runs = 1 if args.repeat is None else args.repeat + 1  # --repeat N: a warm-up, then N runs
    reports = [bounds.spec_report(net, spec, args.method, options) for _ in range(runs)]
    timed = reports if runs == 1 else reports[1:]
    obj = dict(reports[-1])
    obj["seconds"] = statistics.median(r["seconds"] for r in timed)  # bound computation only
    if args.json:
        print(json.dumps(obj))
        return EXIT_OK
    print(f"method {obj['method']}: {obj['seconds'] * 1e3:.3f} ms"
          + (f" (median of {len(timed)} runs after a warm-up)" if runs > 1 else ""))
    for i, dis in enumerate(obj["disjuncts"]):
        print(f"unsafe conjunction {i}: rows C y - d")
        for k, r in enumerate(dis["rows"]):
            note = "  > 0: refuted" if r["lower"] > 0 else ""
            print(f"  row {k}: [{r['lower']:.9g}, {r['upper']:.9g}]{note}")
    print("outputs:")
    for k, r in enumerate(obj["outputs"]):
        print(f"  Y_{k}: [{r['lower']:.9g}, {r['upper']:.9g}]")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# verifier run
# --------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .run import (RunOptions, format_summary, read_ground_truth,  # noqa: PLC0415
                      run_benchmark, summarize)

    bench = Path(args.bench_dir)
    if not (bench / "instances.csv").is_file():
        raise FileNotFoundError(f"{bench}/instances.csv not found")
    results = Path(args.results) if args.results else Path(f"results_{bench.resolve().name}.csv")
    opt = RunOptions(timeout_scale=args.timeout_scale, timeout=args.timeout,
                     workers=args.workers, processes=args.processes, method=args.method,
                     grace=args.grace, limit=args.limit,
                     memory_limit=int(args.memory_limit * 2**30) if args.memory_limit else None,
                     ray=args.ray)
    bar = Bar()

    def progress(done, total, row):
        if row is not None:
            text = f"{row.result:<8} {row.seconds:8.2f} s  {row.onnx} {row.vnnlib}"
            if bar.tty:
                bar.show(done / max(total, 1), f"{done}/{total}  {text}")
            else:
                bar.line(f"[{done}/{total}] {text}")

    where = f" on Ray ({args.ray})" if args.ray else ""
    workers = f"{args.workers} worker" + ("s" if args.workers != 1 else "")
    print(f"running {bench} -> {results} ({workers}{where})", file=sys.stderr)
    try:
        rows = run_benchmark(bench, results, opt, progress=progress)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; finished rows are in {results} (run again to resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    print(format_summary(summarize(rows, read_ground_truth(bench)), bench.name))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# the parser and main
# --------------------------------------------------------------------------------------------
def _cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from .verify import METHODS  # noqa: PLC0415

    bound_methods = [m for m in METHODS if m not in ("auto", "attack")]
    p = argparse.ArgumentParser(prog="verifier",
                                description="A sound formal verifier for neural networks.")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log the library's progress (-v INFO, -vv DEBUG) on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="decide a property: sat, unsat, unknown, timeout, error")
    v.add_argument("model", help="the network, ONNX")
    v.add_argument("property", help="the property, VNN-LIB")
    v.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    v.add_argument("--results", help="write the VNN-COMP results file here")
    v.add_argument("--method", default="auto", choices=METHODS,
                   help="auto (default), attack only, or one bound method")
    v.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: the products are small, and a second thread "
                        "made ACAS Xu 4_2 property 2 time out at 116 s instead of 20 s on a busy "
                        "2-core machine; 0 keeps the BLAS library's own choice)")
    v.add_argument("--processes", type=_positive_int, default=None,
                   help="processes for branch and bound's ReLU-split searches when several "
                        "conjunctions are open (default: the usable CPU cores)")
    v.add_argument("--no-work-sharing", action="store_true",
                   help="keep each ReLU-split search in the process that started it (an idle "
                        "process then waits instead of taking open domains from a busy one): "
                        "the same split trees on every run")
    v.set_defaults(func=cmd_verify)

    c = sub.add_parser("check", help="import a model, list its ops, compare with onnxruntime")
    c.add_argument("model")
    c.add_argument("property", nargs="?", help="sample from this property's input boxes")
    c.add_argument("--samples", type=int, default=100, help="random inputs (default 100)")
    c.add_argument("--tolerance", type=float, default=1e-5,
                   help="largest relative error that counts as agreement (default 1e-5); "
                        "exit 1 above it")
    c.set_defaults(func=cmd_check)

    b = sub.add_parser("bounds", help="bounds of every row of a property and of the outputs")
    b.add_argument("model")
    b.add_argument("property")
    b.add_argument("--method", required=True, choices=bound_methods)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--repeat", type=_positive_int, metavar="N",
                   help="run once to warm up, then N times, and report the median time")
    b.add_argument("--cut-rounds", type=int, default=0, metavar="R",
                   help="lp / lp-all: R rounds of cuts from each ReLU's convex hull over the "
                        "box of its inputs (default 0: the triangle LP)")
    b.set_defaults(func=cmd_bounds)

    r = sub.add_parser("run", help="run every instance of a benchmark folder (instances.csv)")
    r.add_argument("bench_dir")
    r.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply each instance's timeout (default 1)")
    r.add_argument("--timeout", type=float,
                   help="give every instance this many seconds instead of its own")
    r.add_argument("--workers", type=_positive_int, default=1, help="parallel worker processes")
    r.add_argument("--processes", type=_positive_int, default=1,
                   help="processes per instance for branch and bound's ReLU-split searches "
                        "(default 1: the workers fill the cores)")
    r.add_argument("--results", help="results CSV (default results_<bench>.csv); resumed "
                   "when it exists")
    r.add_argument("--method", default="auto", choices=METHODS)
    r.add_argument("--grace", type=float, default=10.0,
                   help="seconds past an instance's timeout before its worker is killed")
    r.add_argument("--limit", type=int, help="only the first N instances")
    r.add_argument("--memory-limit", type=float, help="address-space cap per worker, GiB")
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the instances as Ray tasks (pip install \"verifier[ray]\"): alone, "
                   "on a Ray instance started here with --workers CPUs; with an address "
                   "(auto, HOST:PORT, ray://HOST:PORT), on that running cluster; --workers "
                   "is then the number of instances in flight")
    r.set_defaults(func=cmd_run)

    from .soundness.cli import add_parser as add_soundness_parser  # noqa: PLC0415

    add_soundness_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return EXIT_BAD_INPUT if exc.code not in (0, None) else EXIT_OK
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from .errors import INPUT_ERRORS  # noqa: PLC0415

    try:
        return args.func(args)
    except INPUT_ERRORS as exc:
        return _bad_input(exc)
    except OSError as exc:  # a missing or unwritable file named on the command line
        return _bad_input(exc)
    except KeyboardInterrupt:  # Ctrl-C: no answer was reached (never a traceback)
        print("verifier: interrupted", file=sys.stderr)
        if getattr(args, "results", None) and args.command == "verify":
            from .result import Result  # noqa: PLC0415

            _write_results_file(args.results, Result("unknown", message="interrupted"))
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: answer error (never anything else), keep the traceback
        log.exception("unexpected failure")
        from .result import Result  # noqa: PLC0415

        print(f"error  ({type(exc).__name__}: {exc})")
        if getattr(args, "results", None) and args.command == "verify":
            _write_results_file(args.results, Result("error", message=str(exc)))
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
