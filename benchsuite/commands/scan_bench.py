"""`benchsuite scan-bench`: the fused gradient scan against torch."""
from __future__ import annotations

from .. import scanbench as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("scan-bench", help="benchmark the fused gradient scan against torch")
    _options.json_output(p)
    p.add_argument("--lists", default=None, help="comma list of gpt2-124m, llama-7b, 1000-small")
    p.add_argument("--dtypes", default=None,
                   help="comma list of float32 (fp32), bfloat16 (bf16), float16 (fp16) (default float32,bfloat16)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--reps", type=_options.positive_int, default=10, metavar="N", help="timed repetitions per method")
    p.add_argument("--host-cost", action="store_true",
                   help="time the Python side of one scan (launch, finish, table upkeep) for 291 and 1,000 tensors "
                        "(30 x --reps calls of each)")
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(device=args.device, lists=args.lists, dtypes=args.dtypes, json_path=args.json,
                       reps=args.reps, host_cost_only=args.host_cost)
