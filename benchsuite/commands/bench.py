"""`benchsuite bench`: memory and throughput over checkpointing x accumulation x precision x adapter."""
from __future__ import annotations

from ..bench import grid as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("bench", help="memory and throughput over checkpointing x accumulation x precision x adapter")
    p.add_argument("--model", default="tiny-llama",
                   help="tiny-llama, tiny-qwen2, tiny-chatglm or a local checkpoint PATH")
    p.add_argument("--seq-len", type=_options.positive_int, default=512, metavar="N",
                   help="tokens per sequence (default 512)")
    p.add_argument("--batch", type=_options.positive_int, default=4, metavar="N",
                   help="effective batch (split by accumulation; default 4)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="checkpointing=off,reentrant,non-reentrant accumulation=1,4 precision=fp32,fp16,bf16 "
                        "adapter=full,lora (defaults: all of these)")
    p.add_argument("--steps", type=_options.positive_int, default=3, metavar="N",
                   help="measured steps per configuration (default 3; median and spread reported)")
    p.add_argument("--warmup", type=_options.nonneg_int, default=1, metavar="N",
                   help="unmeasured steps first (default 1)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--scan", action="store_true", help="also time every step with the gradient scanner on")
    p.add_argument("--max-memory-mb", type=_options.positive_int, default=None, metavar="MB",
                   help="cap each configuration's memory (CPU)")
    _options.timeout(p, default=600.0, per="configuration")
    _options.json_output(p)
    _options.markdown_output(p)
    p.add_argument("--plot", default=None, metavar="PATH", help="peak memory vs throughput, PNG")
    p.add_argument("--budget", type=float, default=None, metavar="GIB",
                   help="memory budget: name the fastest configuration whose measured peak fits (table, plot, JSON)")
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(model=args.model, seq_len=args.seq_len, batch=args.batch, grid=args.grid, steps=args.steps,
                       warmup=args.warmup, device=args.device, scan=args.scan, max_memory_mb=args.max_memory_mb,
                       timeout=args.timeout, json_path=args.json, markdown_path=args.markdown, plot_path=args.plot,
                       budget_gib=args.budget)
