"""The `benchsuite` command."""
from __future__ import annotations

import argparse
import os
import sys

from . import strictjson
from .commands import MODULES as COMMANDS
from .harness.report import UsageError


def _cases_dir(args):
    """The --cases-dir folder (checked) or the catalogue; stored on args.cases_dir_path."""
    from pathlib import Path

    from .harness.discover import default_cases_dir
    if getattr(args, "cases_dir", None):
        p = Path(args.cases_dir)
        if not p.is_dir():
            raise UsageError(f"--cases-dir {args.cases_dir}: no such folder")
        return p
    try:
        return default_cases_dir()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def _info(args) -> int:
    from .harness.report import check_output, version, write_atomic
    from .info import collect, render
    check_output(args.json, "--json")
    info = collect()
    if args.json:
        write_atomic(args.json, strictjson.dumps({"benchsuite_version": version(), "kind": "info", **info}, indent=2))
        if args.json != "-":
            print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(render(info))
    return 0


def _selftest(args) -> int:
    from .gradscan.planted import render_selftest, run_selftest
    from .harness.report import check_output, version, write_atomic
    check_output(args.json, "--json")
    result = run_selftest(quick=args.quick)
    if args.json:
        write_atomic(args.json, strictjson.dumps({"benchsuite_version": version(), "kind": "selftest", **result}, indent=2))
        if args.json != "-":
            print(f"wrote {args.json}", file=sys.stderr)
    if args.json != "-":
        print(render_selftest(result))
    return 0 if result["ok"] else 1


def _list(args) -> int:
    from .harness.discover import case_files, load_case, select
    from .harness.report import check_output, version, write_atomic
    cases_dir = args.cases_dir_path
    check_output(args.json, "--json")
    check_output(args.markdown, "--markdown")
    rows, broken = [], 0
    for path in select(list(case_files(cases_dir).values()), args.keyword, args.tag):
        try:
            rows.append(load_case(path).metadata())
        except Exception as exc:
            broken += 1
            rows.append({"id": path.stem, "broken": f"{type(exc).__name__}: {exc}"})
    if args.json:
        write_atomic(args.json, strictjson.dumps({"benchsuite_version": version(), "kind": "list",
                                            "cases_dir": str(cases_dir), "cases": rows}, indent=2))
        return 1 if broken else 0
    if args.markdown:
        from .harness.catalogue_doc import write
        write([r for r in rows if "broken" not in r], args.markdown, args.matrix)
        print(f"wrote {args.markdown}")
    for r in rows:
        if "broken" in r:
            print(f"{r['id']}\n    BROKEN CASE FILE: {r['broken']}")
            continue
        affected = ", ".join(f"{k}{v}" for k, v in r["affected"].items()) or "all versions"
        tags = f"; tags: {', '.join(r['tags'])}" if r.get("tags") else ""
        family = f"; family: {r['family']}" if r.get("family") else ""
        print(f"{r['id']}\n    {r['title']}\n    affected: {affected}; refs: {', '.join(r['references'])}; "
              f"fixes: {len(r['fixes'])}{family}{tags}")
    print(f"\n{len(rows)} case(s) in {cases_dir}" + (f", {broken} broken" if broken else ""))
    return 1 if broken else 0


def _run(args) -> int:
    from .harness.run import main
    return main(args)


def _matrix(args) -> int:
    from .harness.matrix import main
    return main(args)


def _bisect(args) -> int:
    from .harness.bisect import main
    return main(args)


def _bench(args) -> int:
    from .bench.grid import main
    return main(args)


def _watch(args) -> int:
    from .watch.cli import main
    return main(args)


def _compare_grads(args) -> int:
    from .watch.signatures import main
    return main(args)


def _doctor(args) -> int:
    from .doctor import main
    return main(args)


def _scan_bench(args) -> int:
    from .scanbench import main
    return main(args)


def _compare(args) -> int:
    from .harness.compare import main
    return main(args)


def _cache(args) -> int:
    from .harness.cache import main
    return main(args)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return v


def _days(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return v


JSON_HELP = "write the result as JSON to PATH (- for stdout); every JSON carries benchsuite_version"


def _selection(p) -> None:
    p.add_argument("-k", dest="keyword", default=None, metavar="TEXT",
                   help="only cases whose id contains TEXT ('not TEXT' for the others)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="only cases with this tag or family (repeatable: every one must be present); "
                        "`list` shows tags and families")


def _ray_arguments(p) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="local|ADDRESS",
                   help="run each environment's cases as Ray tasks: `local` (the default) starts a cluster on this "
                        "machine for the run; ADDRESS is an existing cluster (auto, HOST:PORT, ray://HOST:10001). "
                        "Needs pip install 'benchsuite[ray]'")
    p.add_argument("--ray-workers", type=_positive_int, default=None, metavar="N",
                   help="with --ray: tasks at a time (default: the cluster's CPUs; a local cluster gets N CPUs)")


def build_parser() -> argparse.ArgumentParser:
    from .harness.report import version
    ap = _Parser(prog="benchsuite", description=(
        "Reproduce reported fine-tuning failures, verify their fixes, scan gradients, benchmark memory."),
        epilog="Pinned environments are cached in $BENCHSUITE_CACHE (default ~/.cache/benchsuite); "
               "`benchsuite cache list` shows them.")
    ap.add_argument("--version", action="version", version=f"benchsuite {version()}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="versions, the extension's build facts and the device")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="as JSON, to PATH or (no PATH, or -) to stdout")
    p.set_defaults(func=_info)

    p = sub.add_parser("selftest", help="the scanner on planted values, on every backend present (CPU core, "
                                        "CUDA kernel per GPU, torch), each against a NumPy reference")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="as JSON, to PATH or (no PATH, or -) to stdout")
    p.add_argument("--quick", action="store_true", help="the small probe of the first-use self-check only")
    p.set_defaults(func=_selftest)

    p = sub.add_parser("list", help="show the case catalogue")
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")
    _selection(p)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="the catalogue as JSON, to PATH or (no PATH, or -) to stdout")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the catalogue page (docs/catalogue.md)")
    p.add_argument("--matrix", default=None, metavar="JSON", help="with --markdown: a matrix result to include")
    p.set_defaults(func=_list)

    p = sub.add_parser("run", help="run cases, each in a fresh process, and give a verdict per case")
    p.add_argument("ids", nargs="*", metavar="ID", help="case ids (default: the whole catalogue)")
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")
    _selection(p)
    p.add_argument("--last-failed", "--lf", dest="last_failed", default=None, metavar="JSON",
                   help="rerun the cases that did not agree with their declaration in this earlier --json result")
    p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first case that disagrees")
    p.add_argument("--maxfail", type=_positive_int, default=None, metavar="N",
                   help="stop after N cases that disagree")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.add_argument("--junit", default=None, metavar="PATH", help="JUnit XML for CI (- for stdout)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="a Markdown table (- for stdout)")
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="S", help="per case, in seconds (default 300)")
    p.add_argument("--jobs", type=_positive_int, default=2, metavar="N", help="cases at a time (default 2)")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="run in a cached virtualenv with this requirement, e.g. transformers==4.57.6 or "
                        "'transformers>=4.57,<5' (resolved to one release; one per package; repeatable for "
                        "other packages); torch stays the current one")
    p.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                   help="run every case N times, each scenario in fresh processes; verdicts that differ between "
                        "runs make the case 'flaky' (--timeout is per run)")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="a local checkpoint folder, for the cases that support it and its model family")
    p.set_defaults(func=_run)

    p = sub.add_parser("matrix", help="run cases across pinned environments: a case x environment table")
    p.add_argument("ids", nargs="*", metavar="ID", help="case ids (default: the whole catalogue)")
    _selection(p)
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="versions of a package: NAME==V1,V2,... or one requirement such as 'NAME>=A,<B' "
                        "(resolved to one release); repeatable, environments are the combinations")
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.add_argument("--markdown", default=None, metavar="PATH", help="the table as Markdown (- for stdout)")
    p.add_argument("--junit", default=None, metavar="PATH", help="JUnit XML for CI, a testsuite per environment (- for stdout)")
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="S", help="per case, in seconds (default 300)")
    p.add_argument("--jobs", type=_positive_int, default=None, metavar="N", help="cases at a time (default 2; not with --ray)")
    p.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                   help="run every case N times in each environment; differing verdicts make a cell 'flaky'")
    _ray_arguments(p)
    p.set_defaults(func=_matrix)

    p = sub.add_parser("bisect", help="find the release of a package where a case's status changes")
    p.add_argument("id", metavar="ID", help="the case to bisect")
    p.add_argument("--package", required=True, help="the package whose releases are bisected (e.g. transformers)")
    p.add_argument("--from", dest="from_", default=None, metavar="VERSION", help="oldest release to consider")
    p.add_argument("--to", default=None, metavar="VERSION", help="newest release to consider")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="extra requirements for every probe (another package than --package)")
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="S", help="per probe, in seconds (default 300)")
    p.add_argument("--write", action="store_true",
                   help="when the probes contradict the case's declared range for --package, write the suggested "
                        "range into the case file and print the diff")
    _ray_arguments(p)
    p.set_defaults(func=_bisect)

    p = sub.add_parser("bench", help="memory and throughput over checkpointing x accumulation x precision x adapter")
    p.add_argument("--model", default="tiny-llama", help="tiny-llama, tiny-qwen2, tiny-chatglm or a local checkpoint PATH")
    p.add_argument("--seq-len", type=_positive_int, default=512, metavar="N", help="tokens per sequence (default 512)")
    p.add_argument("--batch", type=_positive_int, default=4, metavar="N",
                   help="effective batch (split by accumulation; default 4)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="checkpointing=off,reentrant,non-reentrant accumulation=1,4 precision=fp32,fp16,bf16 "
                        "adapter=full,lora (defaults: all of these)")
    p.add_argument("--steps", type=_positive_int, default=3, metavar="N",
                   help="measured steps per configuration (default 3; median and spread reported)")
    p.add_argument("--warmup", type=_nonneg_int, default=1, metavar="N", help="unmeasured steps first (default 1)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--scan", action="store_true", help="also time every step with the gradient scanner on")
    p.add_argument("--max-memory-mb", type=_positive_int, default=None, metavar="MB",
                   help="cap each configuration's memory (CPU)")
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="S", help="per configuration, in seconds")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.add_argument("--markdown", default=None, metavar="PATH", help="the table as Markdown (- for stdout)")
    p.add_argument("--plot", default=None, metavar="PATH", help="peak memory vs throughput, PNG")
    p.set_defaults(func=_bench)

    p = sub.add_parser("watch", help="run a training command with the gradient scanner attached: watch -- CMD ...")
    from .watch.cli import add_arguments as _watch_arguments
    _watch_arguments(p)
    p.set_defaults(func=_watch)

    p = sub.add_parser("doctor", help="the known failures that apply to these versions (or --with pins), "
                                      "their symptoms and fixes; --run checks them there")
    from .doctor import add_arguments as _doctor_arguments
    _doctor_arguments(p)
    p.set_defaults(func=_doctor)

    p = sub.add_parser("scan-bench", help="benchmark the fused gradient scan against torch")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.add_argument("--lists", default=None, help="comma list of gpt2-124m, llama-7b, 1000-small")
    p.add_argument("--dtypes", default=None,
                   help="comma list of float32 (fp32), bfloat16 (bf16), float16 (fp16) (default float32,bfloat16)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--reps", type=_positive_int, default=10, metavar="N", help="timed repetitions per method")
    p.add_argument("--host-cost", action="store_true",
                   help="time the Python side of one scan (launch, finish, table upkeep) for 291 and 1,000 tensors "
                        "(30 x --reps calls of each)")
    p.set_defaults(func=_scan_bench)

    p = sub.add_parser("compare", help="what changed between two run, matrix or bench JSON results")
    p.add_argument("a", metavar="A.json", help="the earlier result")
    p.add_argument("b", metavar="B.json", help="the later result")
    p.add_argument("--threshold", type=float, default=0.10, metavar="FRACTION",
                   help="bench: report figures that moved by more than this fraction (default 0.10)")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.set_defaults(func=_compare)

    p = sub.add_parser("compare-grads", help="do two runs' gradients match? Compare two signature files of "
                                             "benchsuite watch --signature, parameter by parameter")
    from .watch.signatures import add_arguments as _compare_grads_arguments
    _compare_grads_arguments(p)
    p.set_defaults(func=_compare_grads)

    p = sub.add_parser("cache", help="the cache of pinned environments: list or prune")
    p.add_argument("action", choices=["list", "prune"], help="list: show the cache; prune: remove environments")
    p.add_argument("--all", action="store_true", help="prune: every environment, not only unfinished ones")
    p.add_argument("--older-than", type=_days, default=None, metavar="DAYS",
                   help="prune: environments not used for this many days")
    p.add_argument("--json", default=None, metavar="PATH", help=JSON_HELP)
    p.set_defaults(func=_cache)
    for command in COMMANDS:  # the commands already in their own module (benchsuite/commands/)
        command.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"benchsuite {args.command}"
    try:
        if hasattr(args, "cases_dir"):
            args.cases_dir_path = _cases_dir(args)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`benchsuite list --json | head`): stop quietly, as cat or git do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
