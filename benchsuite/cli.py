"""The `benchsuite` command."""
from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from .info import collect, render
    info = collect()
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def _list(args) -> int:
    from pathlib import Path

    from .harness.discover import case_files, default_cases_dir, load_case
    cases_dir = Path(args.cases_dir) if args.cases_dir else default_cases_dir()
    rows, broken = [], 0
    for cid, path in case_files(cases_dir).items():
        try:
            rows.append(load_case(path).metadata())
        except Exception as exc:
            broken += 1
            rows.append({"id": cid, "broken": f"{type(exc).__name__}: {exc}"})
    if args.json:
        print(json.dumps(rows, indent=2))
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
        print(f"{r['id']}\n    {r['title']}\n    affected: {affected}; refs: {', '.join(r['references'])}; "
              f"fixes: {len(r['fixes'])}")
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


def _scan_bench(args) -> int:
    from .scanbench import main
    return main(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchsuite", description=(
        "Reproduce reported fine-tuning failures, verify their fixes, scan gradients, benchmark memory."))
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, the extension's build facts and the device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)

    p = sub.add_parser("list", help="show the case catalogue")
    p.add_argument("--cases-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the catalogue page (docs/catalogue.md)")
    p.add_argument("--matrix", default=None, metavar="JSON", help="with --markdown: a matrix result to include")
    p.set_defaults(func=_list)

    p = sub.add_parser("run", help="run cases, each in a fresh process, and give a verdict per case")
    p.add_argument("ids", nargs="*", metavar="ID", help="case ids (default: the whole catalogue)")
    p.add_argument("--cases-dir", default=None, help="a folder of case files (default: the catalogue)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--junit", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per case (default 300)")
    p.add_argument("--jobs", type=int, default=2, help="cases at a time (default 2)")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="PKG==VER",
                   help="run in a cached virtualenv with this pin (repeatable); torch stays the current one")
    p.add_argument("--model", default=None, metavar="PATH", help="a local checkpoint, for cases that support it")
    p.set_defaults(func=_run)

    p = sub.add_parser("matrix", help="run cases across pinned environments: a case x environment table")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="PKG==V1,V2",
                   help="versions of a package (repeatable; environments are the combinations)")
    p.add_argument("--cases-dir", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--jobs", type=int, default=2)
    p.set_defaults(func=_matrix)

    p = sub.add_parser("bisect", help="find the release of a package where a case's status changes")
    p.add_argument("id", metavar="ID")
    p.add_argument("--package", required=True)
    p.add_argument("--from", dest="from_", default=None, metavar="VERSION")
    p.add_argument("--to", default=None, metavar="VERSION")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="PKG==VER",
                   help="extra pins for every probe")
    p.add_argument("--cases-dir", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S")
    p.set_defaults(func=_bisect)

    p = sub.add_parser("bench", help="memory and throughput over checkpointing x accumulation x precision x adapter")
    p.add_argument("--model", default="tiny-llama", help="tiny-llama, tiny-qwen2, tiny-chatglm or a local PATH")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=4, help="effective batch (split by accumulation)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="checkpointing=off,reentrant,non-reentrant accumulation=1,4 precision=fp32,fp16,bf16 "
                        "adapter=full,lora (defaults: all of these)")
    p.add_argument("--steps", type=int, default=1, help="measured steps per configuration (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--scan", action="store_true", help="also time every step with the gradient scanner on")
    p.add_argument("--max-memory-mb", type=int, default=None, help="cap each configuration's memory (CPU)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per configuration")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    p.add_argument("--plot", default=None, metavar="PATH")
    p.set_defaults(func=_bench)

    p = sub.add_parser("watch", help="run a training command with the gradient scanner attached: watch -- CMD ...")
    p.add_argument("--policy", choices=["warn", "raise", "record"], default="warn",
                   help="warn: one line per new problem; raise: stop the script at the first; record: log only")
    p.add_argument("--every", type=int, default=1, metavar="N", help="scan every N-th optimizer step")
    p.add_argument("--log", default=None, metavar="PATH", help="per-step JSONL (one file per rank)")
    p.add_argument("--json", default=None, metavar="PATH", help="the final summary as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    p.set_defaults(func=_watch)

    p = sub.add_parser("scan-bench", help="benchmark the fused gradient scan against torch")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--lists", default=None, help="comma list of gpt2-124m, llama-7b, 1000-small")
    p.add_argument("--dtypes", default=None, help="comma list (default float32,bfloat16)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--reps", type=int, default=10)
    p.set_defaults(func=_scan_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "jobs", 1) < 1 or getattr(args, "timeout", 1) <= 0:
        parser.error("--jobs and --timeout must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
