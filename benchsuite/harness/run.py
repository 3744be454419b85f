"""`benchsuite run`: the cases in one environment (the executor's run_local), a verdict per case, reports."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..common import UsageError, check_outputs
from . import executor, report
from .discover import check_model_path, resolve, select
from .envs import parse_pins


def counts_line(results: list[dict], seconds: float | None = None) -> str:
    """"18 as declared, 2 not, 1 skipped in 12 s": the last line of a run, like pytest's."""
    skipped = sum(1 for r in results if r.get("status") == "skipped")
    agree = sum(1 for r in results if report.agrees(r) and r.get("status") != "skipped")
    parts = [f"{agree} as declared", f"{len(results) - agree - skipped} not"]
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts) + (f" in {seconds:.0f} s" if seconds is not None else "")


def failed_ids(path: str) -> list[str]:
    """Ids of the cases that did not agree with their declaration in a previous run's --json file."""
    try:
        doc = json.loads(Path(path).read_text())
        return [r["id"] for r in doc["results"] if not report.agrees(r)]
    except FileNotFoundError:
        raise UsageError(f"--last-failed {path}: no such file (write one with --json PATH)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--last-failed {path}: not a `benchsuite run --json` result ({exc})") from None


def main(*, cases_dir: Path, ids: list[str], last_failed: str | None = None, keyword: str | None = None,
         tags: list[str] | None = None, model: str | None = None, with_: list[str] | None = None,
         json_path: str | None = None, junit_path: str | None = None, markdown_path: str | None = None,
         jobs: int = 2, timeout: float = 300.0, exitfirst: bool = False, maxfail: int | None = None,
         repeat: int = 1) -> int:
    """`benchsuite run`: exit 0 when every case agrees with its declaration, 1 otherwise, 2 for an unknown
    id, 130 when interrupted (the finished cases' reports are written)."""
    ids = list(ids)
    if last_failed:
        previous = failed_ids(last_failed)
        if not previous:
            print(f"benchsuite run: every case in {last_failed} agreed with its declaration; nothing to rerun",
                  file=sys.stderr)
            return 0
        ids += [i for i in previous if i not in ids]
    paths, unknown = resolve(ids, cases_dir)
    paths = select(paths, keyword, tags)
    model = check_model_path(model) if model else None
    pins = parse_pins(with_, one_per_package=True, log=_say) if with_ else {}
    outputs = dict(json_path=json_path, junit_path=junit_path, markdown_path=markdown_path)
    quiet = check_outputs({"--json": json_path, "--junit": junit_path, "--markdown": markdown_path})
    if (keyword or tags) and not paths:
        raise UsageError("no case matches the selection (-k/--tag); `benchsuite list` shows ids and tags")
    meta = {"label": "current environment", "cases_dir": str(cases_dir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(["benchsuite"] + sys.argv[1:]),
            "repeat": repeat}
    order = {p.stem: i for i, p in enumerate(paths)}
    results: list[dict] = []
    for uid, msg in unknown:
        _say(f"benchsuite run: {msg}")
        results.append({"id": uid, "status": "error", "expected": None, "reason": msg})
    t0 = time.perf_counter()
    if pins:
        meta["label"] = "with " + " ".join(pins.values())
        meta["pins"] = pins
    report.write_all(results, meta, **outputs, final=False)
    _say(f"running {len(paths)} case(s) from {cases_dir} ({meta['label']}, {jobs} at a time, timeout {timeout:.0f} s"
         + (f", {repeat} runs each" if repeat > 1 else "") + ")")
    maxfail = 1 if exitfirst else maxfail
    failed, interrupted = _run_all(paths, list(pins.values()), results, meta, outputs, len(unknown), maxfail,
                                   jobs=jobs, timeout=timeout, model=model, repeat=repeat)
    # Rows in the order the cases were asked for (the catalogue's order by default), not finishing order.
    results.sort(key=lambda r: order.get(r["id"], -1))
    not_run = len(paths) - (len(results) - len(unknown)) if paths else 0
    if not_run and not interrupted:
        _say(f"stopped after {failed} disagreement(s) (--maxfail {maxfail}); {not_run} case(s) not run")
    meta["duration_s"] = round(time.perf_counter() - t0, 1)
    _finish(results, meta, outputs, quiet, interrupted)
    if interrupted:
        return 130
    if unknown:
        return 2
    return 0 if all(report.agrees(r) for r in results) else 1


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_all(paths: list[Path], pins: list[str], results: list[dict], meta: dict, outputs: dict, n_unknown: int,
             maxfail: int | None, **options) -> tuple[int, bool]:
    """Run the cases (a one-environment run of the executor), each result kept and the reports rewritten as
    it comes: (disagreements, interrupted)."""
    state = {"failed": 0}

    def env_failed(label: str, exc: Exception) -> None:
        _say(f"benchsuite run: environment [{label}] could not be built: {exc}")

    def on_result(r: dict, cell: dict) -> bool:
        results.append(r)
        report.write_all(results, meta, **outputs, final=False)
        ok = report.agrees(r)
        state["failed"] += not ok
        _say(executor.progress(None, len(results) - n_unknown, len(paths), r, ok))
        return bool(maxfail and state["failed"] >= maxfail)

    try:
        executor.run_local(paths, [pins], on_result=on_result, on_env_error=env_failed, progress_lines=False,
                           log=_say, **options)
    except KeyboardInterrupt:
        _say("\ninterrupted: the results of finished cases are kept")
        return state["failed"], True
    return state["failed"], False


def _finish(results: list[dict], meta: dict, outputs: dict, quiet: bool, interrupted: bool) -> None:
    """The environment line, the reports, the table and the counts line."""
    out = sys.stderr if quiet else sys.stdout
    env = next((r.get("environment") for r in results if r.get("environment")), None)
    if env:
        meta["environment"] = env
        if not quiet:
            print("environment: " + ", ".join(f"{k} {env.get(k)}" for k in
                                                ("python", "torch", "transformers", "peft", "trl") if env.get(k))
                  + (f" (unpinned companions as of {env['resolved_as_of']})" if env.get("resolved_as_of") else ""))
    report.write_all(results, meta, **outputs)
    print(report.table(results), file=out)
    for path in outputs.values():
        if path and str(path) != "-":
            _say(f"wrote {path}")
    print(counts_line(results, meta["duration_s"]) + (" (interrupted)" if interrupted else ""), file=out)
