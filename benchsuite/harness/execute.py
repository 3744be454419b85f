"""Running one case: each scenario (trigger, then every fix) in its own forked process.

A scenario process records what the libraries raised, warned and logged, and what the training loop
saw; it sends that outcome back over a pipe. A scenario that dies (a signal, os._exit) is an outcome
too. Forking keeps scenarios apart: a fix that patches a class cannot leak into the next one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from ..case import Case, Context, TrainResult, _current_result, healthy_problems
from ..common import die_with_parent
from ..notices import ScannerWarning
from .discover import load_case, model_family
from .versions import environment, is_affected


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(f"[{record.name}] {record.getMessage()}")
        except Exception:  # pragma: no cover
            pass


def _observe(fn, ctx, label: str = "scenario") -> dict:
    """Run a scenario in this process and describe what happened (JSON-able).

    A scenario either raises (recorded, with the steps that ran before) or returns its outcome: a
    TrainResult from ctx.train/ctx.trainer_train or ctx.observed(...). Returning anything else (None: a
    forgotten ``return``) is recorded as ``invalid_return``, which the harness reports as an error, never
    as a verdict.
    """
    messages: list[str] = []
    handler = _Capture(messages)
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("peft")]
    for lg in loggers:
        lg.addHandler(handler)
    outcome: dict = {}
    result = None
    _current_result[0] = None
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(ctx)
        except BaseException as exc:  # the symptom may be an exception
            outcome["exception"] = {
                "type": type(exc).__name__,
                "mro": [c.__name__ for c in type(exc).__mro__],
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:],
            }
            result = _current_result[0]  # steps that ran before the failure
        else:
            if not isinstance(result, TrainResult):
                what = "None (no return statement?)" if result is None else f"a {type(result).__name__}"
                outcome["invalid_return"] = (
                    f"{label} {getattr(fn, '__name__', fn)!r} returned {what}, not an outcome: return "
                    "ctx.train(...) or ctx.trainer_train(...), or ctx.observed(flag=...) when there is nothing "
                    "to train")
                if _current_result[0] is not None:
                    outcome["invalid_return"] += " (it trained: return the TrainResult that ctx.train gave)"
                result = None
    for lg in loggers:
        lg.removeHandler(handler)
    outcome["seconds"] = round(time.perf_counter() - t0, 3)
    ours = [w for w in caught if issubclass(w.category, ScannerWarning)]  # benchsuite's own: never a symptom
    if ours:
        outcome["benchsuite_warnings"] = list(dict.fromkeys(str(w.message) for w in ours))
    warned = [f"{w.category.__name__}: {w.message}" for w in caught if w not in ours] + messages
    # Keep each distinct message once, in order.
    outcome["warnings"] = list(dict.fromkeys(warned))[:50]
    if result is not None:
        outcome.update(result.summary())
    return outcome


def run_scenario(fn, ctx, label: str = "scenario") -> dict:
    """Fork, observe the scenario in the child, return its outcome (or how the child died)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        die_with_parent()
        os.close(read_fd)
        code = 0
        try:
            payload = json.dumps(_observe(fn, ctx, label), default=str).encode()
        except BaseException as exc:  # pragma: no cover - a failure of the harness itself
            payload = json.dumps({"exception": {"type": "HarnessError", "mro": ["HarnessError"],
                                                "message": repr(exc), "traceback": traceback.format_exc()}}).encode()
            code = 1
        with os.fdopen(write_fd, "wb") as w:
            w.write(payload)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    if data:
        return json.loads(data)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"crashed": f"killed by signal {sig} ({signal.Signals(sig).name})", "warnings": []}
    return {"crashed": f"exited with code {os.WEXITSTATUS(status)} before reporting", "warnings": []}


def skip_reason(case: Case, model_path: str | None, env: dict) -> str | None:
    missing = [p for p in case.requires if importlib.util.find_spec(p.replace("-", "_")) is None]
    if missing:
        return f"needs {', '.join(missing)} (not installed)"
    if case.applies and not is_affected(case.applies, env):
        return f"the reported setup does not exist in this environment (needs {case.applies})"
    if case.requires_cuda or case.requires_gpu_below:
        import torch
        if not torch.cuda.is_available():
            return "needs a CUDA GPU (none visible)"
        if case.requires_gpu_below:
            cap = torch.cuda.get_device_capability(0)
            if cap >= tuple(case.requires_gpu_below):
                return (f"needs a GPU below compute capability {'.'.join(map(str, case.requires_gpu_below))} "
                        f"(found {cap[0]}.{cap[1]})")
    if model_path and not case.supports_model:
        return "builds its own model; --model is not supported by this case"
    if model_path and case.model_families:
        family = model_family(model_path)
        if family not in case.model_families:
            return f"applies to {'/'.join(case.model_families)} models; --model is {family or 'of unknown type'}"
    return None


@contextlib.contextmanager
def _restore_env(name: str, value: str | None):
    try:
        yield
    finally:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def execute(path: Path, model_path: str | None = None, repeat: int = 1) -> dict:
    """The full result of one case: status, expectation, fixes, evidence, environment.

    ``repeat``: run the whole case (trigger, fixes, no-op) that many times, each scenario in a fresh
    forked process and each repeat with a fresh work folder. Where the runs' verdicts differ the case is
    ``flaky``; ``runs`` keeps each run's verdicts and basis either way. See combine_runs.
    """
    repeat = max(1, int(repeat))
    t0 = time.perf_counter()
    runs = [_execute_once(path, model_path) for _ in range(repeat)]
    res = combine_runs(runs)
    res["duration_s"] = round(time.perf_counter() - t0, 3)
    return res


def _execute_once(path: Path, model_path: str | None = None) -> dict:
    """One run of a case: the trigger, every fix, then the no-op fix (the trigger's own code judged as a fix)."""
    t0 = time.perf_counter()
    env = environment()
    res: dict = {"id": path.stem, "file": str(path), "environment": env}
    try:
        case = load_case(path)
    except BaseException as exc:
        res.update(status="error", expected=None,
                   reason=f"could not load case file {path.name}: {type(exc).__name__}: {exc}",
                   detail=traceback.format_exc()[-2000:])
        res["duration_s"] = round(time.perf_counter() - t0, 3)
        return res
    res.update(case.metadata())
    res["expected"] = "reproduced" if is_affected(case.affected, env) else "not-reproduced"
    reason = skip_reason(case, model_path, env)
    if reason:
        res.update(status="skipped", reason=reason, fixes=[])
        res["duration_s"] = round(time.perf_counter() - t0, 3)
        return res
    previous_modules_cache = os.environ.get("HF_MODULES_CACHE")
    with tempfile.TemporaryDirectory(prefix=f"benchsuite-{case.id}-") as work, \
            _restore_env("HF_MODULES_CACHE", previous_modules_cache):
        # Remote code is copied into a modules cache: one per case, so parallel cases never share it (and
        # a caller that runs execute() in its own process gets its setting back: nothing recreates the
        # removed folder later).
        os.environ["HF_MODULES_CACHE"] = os.path.join(work, "hf_modules")
        ctx = Context(work, model_path=model_path)
        trigger = run_scenario(case.trigger_fn, ctx, "trigger")
        seen, evidence = case.symptom.match(trigger)
        res["evidence"] = {**evidence, "trigger": _brief(trigger)}
        res["symptom_seen"] = seen
        trigger_error = _outcome_error(f"trigger {case.trigger_fn.__name__!r}", trigger, case, seen)
        fixes = [_judge_fix(case, fx, ctx, env, seen) for fx in case.fixes]
        res["fixes"] = fixes
        noop = _noop_fix(case, ctx) if seen and not trigger_error else None
    if noop is not None:
        res["noop_fix"] = noop
    fix_errors = [f for f in fixes if f.get("error")]
    if trigger.get("crashed"):
        res.update(status="crashed", reason=f"trigger {trigger['crashed']}")
    elif trigger_error or fix_errors:
        res.update(status="error", reason="; ".join(([trigger_error] if trigger_error else [])
                                                    + [f["error"] for f in fix_errors]))
    elif not seen and trigger.get("exception"):
        e = trigger["exception"]
        res.update(status="error", reason=f"trigger raised {e['type']}: {e['message'][:300]} (not the symptom)",
                   detail=e["traceback"])
    elif noop is not None and noop["works"] is not False:
        res.update(status="error", reason=noop["reason"])
    elif any(f["agrees"] is False for f in fixes):
        bad = [_fix_disagreement(f) for f in fixes if f["agrees"] is False]
        reason = f"fix(es) not as declared: {'; '.join(bad)}"
        if res.get("expected") and seen != (res["expected"] == "reproduced"):  # name every disagreement
            reason += (f"; and the trigger {'reproduced' if seen else 'did not reproduce'} where the declared range "
                       f"({_declared(case)}) predicts {res['expected']}")
        res.update(status="fix-failed", reason=reason, symptom_seen=seen)
    else:
        res["status"] = "reproduced" if seen else "not-reproduced"
    if res["status"] in ("reproduced", "not-reproduced", "fix-failed"):
        res["basis"] = _basis(case, trigger, seen, evidence)
    res["duration_s"] = round(time.perf_counter() - t0, 3)
    return res


def _judge_fix(case: Case, fx, ctx: Context, env: dict, seen: bool) -> dict:
    """One fix run and judged: works (no symptom, healthy training) and whether that is what it declares."""
    if fx.applies and not is_affected(fx.applies, env):
        return {"name": fx.name, "title": fx.title, "declared_works": fx.works, "works": None,
                "agrees": None, "not_applicable": f"needs {fx.applies}"}
    out = run_scenario(fx.fn, ctx, "fix")
    fix_seen, fix_evidence = case.symptom.match(out)
    error = _outcome_error(f"fix {fx.name!r}", out, case, fix_seen)
    if error:  # no verdict without an outcome that can carry one
        return {"name": fx.name, "title": fx.title, "declared_works": fx.works, "works": None,
                "agrees": None, "error": error, "outcome": _brief(out)}
    problems = healthy_problems(out, case.expected_zero)
    works = not fix_seen and not problems
    if seen:
        agrees = works == fx.works
    else:  # nothing to fix here: a fix must at least leave training healthy
        agrees = False if (fx.works and not works) else None
    entry = {"name": fx.name, "title": fx.title, "declared_works": fx.works, "works": works,
             "agrees": agrees, "symptom_seen": fix_seen, "problems": problems,
             "evidence": fix_evidence, "outcome": _brief(out)}
    if not seen:  # `works` then only says whether training stayed healthy, not whether it fixes
        entry["not_judged"] = "trigger did not reproduce"
    return entry


def _declared(case: Case) -> str:
    return "affected " + (", ".join(f"{k}{v}" for k, v in case.affected.items()) or "at every version")


NOOP_FIX = "(no-op)"


def _noop_fix(case: Case, ctx) -> dict:
    """The trigger's own code run once more as a fix, in a fresh process after the declared fixes (so it
    sees the work folder as a fix does), and judged exactly as a fix. It changes nothing, so it must not
    "work": where it does, the trigger showed the symptom once and not again (it depends on state left
    by an earlier scenario, or on chance), and no fix verdict of this case can be trusted. Only run where
    the trigger reproduced: elsewhere there is nothing a fix could be judged against."""
    out = run_scenario(case.trigger_fn, ctx, "no-op fix")
    fix_seen, _ = case.symptom.match(out)
    problems = healthy_problems(out, case.expected_zero)
    error = _outcome_error("no-op fix (the trigger run again)", out, case, fix_seen)
    works = None if error else (not fix_seen and not problems)
    entry = {"name": NOOP_FIX, "works": works, "symptom_seen": fix_seen, "problems": problems,
             "outcome": _brief(out)}
    if error:
        entry["reason"] = f"case error: {error}"
    elif works:
        entry["reason"] = ("case error: the no-op fix (the trigger's own code, run again as a fix) was judged "
                           "working: the symptom the trigger showed did not show again, so the trigger depends "
                           "on state an earlier scenario left or on chance, and no fix verdict can be trusted")
    return entry


def _signature(r: dict) -> dict:
    """What must be the same in every repeat of a case: its status and every fix's verdict."""
    return {"status": r.get("status"),
            "fixes": {f["name"]: f.get("works") for f in r.get("fixes", [])},
            "noop_fix": (r.get("noop_fix") or {}).get("works")}


def combine_runs(runs: list[dict]) -> dict:
    """One result from the repeats of a case: the first run's, with ``repeat`` and ``runs`` (each run's
    status, fix verdicts, no-op verdict, basis, time). Status ``flaky`` when the trigger's or a fix's
    verdict differs between runs (an error or crash in one run that is not in all is flaky too: the case
    did not behave the same way twice); the reason lists the differing runs."""
    res = dict(runs[0])
    res["repeat"] = len(runs)
    res["runs"] = [{"run": i, **_signature(r), "symptom_seen": r.get("symptom_seen"),
                    "basis": r.get("basis") or r.get("reason"), "duration_s": r.get("duration_s")}
                   for i, r in enumerate(runs, 1)]
    sigs = [_signature(r) for r in runs]
    if any(s != sigs[0] for s in sigs[1:]):
        def show(i, s):
            fx = ", ".join(f"{k}:{'works' if v else 'n/a' if v is None else 'no'}" for k, v in s["fixes"].items())
            noop = "" if s["noop_fix"] is None else f", no-op fix:{'works' if s['noop_fix'] else 'no'}"
            return f"run {i}: {s['status']}" + (f" ({fx}{noop})" if fx or noop else "")
        res["status"] = "flaky"
        res["reason"] = (f"verdicts differ between the {len(runs)} runs: "
                         + "; ".join(show(i, s) for i, s in enumerate(sigs, 1)))
        res.pop("basis", None)
    return res


def _fix_disagreement(f: dict) -> str:
    """``name (declared works=X, found ...: why)``: the evidence a fix-failed verdict rests on."""
    if f["works"]:
        return f"{f['name']} (declared works=False, but the symptom is gone and training is healthy)"
    why = "; ".join((["the symptom is still seen"] if f.get("symptom_seen") else []) + (f.get("problems") or []))
    return f"{f['name']} (declared works=True: {why if len(why) <= 400 else why[:397] + '...'})"


def _outcome_error(who: str, outcome: dict, case: Case, seen: bool) -> str | None:
    """Why this scenario's outcome can carry no verdict (None when it can); ``who``: "trigger 'fn'"."""
    if outcome.get("invalid_return"):
        return outcome["invalid_return"]
    if seen:
        return None
    why = case.symptom.unjudgeable(outcome, who.split()[0])
    return f"{who} cannot be judged: {why}" if why else None


def _ran(outcome: dict) -> str:
    if outcome.get("trains") is False:
        return "nothing to train: ctx.observed"
    ran = f"{outcome.get('steps', 0)} training step(s)"
    if outcome.get("exception"):
        return f"raised {outcome['exception']['type']} after {ran}"
    return ran


def _basis(case: Case, trigger: dict, seen: bool, evidence: dict) -> str:
    """One line: what the trigger's verdict rests on (what was observed, or what ran and did not match)."""
    if seen:
        shown = []
        for k, v in evidence.items():
            text = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
            shown.append(f"{k}: {text[:160]}")
        return f"symptom seen ({_ran(trigger)}): " + " ".join("; ".join(shown).split())
    return "symptom not seen: " + case.symptom.describe_absence(trigger)


def _brief(outcome: dict) -> dict:
    keep = ("exception", "crashed", "invalid_return", "trains", "steps", "losses", "trainable_params", "no_grad",
            "unchanged", "nonfinite_grads", "always_zero_grad", "zero_by_construction", "grad_problems", "seconds",
            "extra")
    out = {k: outcome[k] for k in keep if k in outcome and outcome[k] not in (None, [], {})}
    if "exception" in out:
        out["exception"] = {k: out["exception"][k] for k in ("type", "message")}
    for k in ("no_grad", "unchanged", "nonfinite_grads", "always_zero_grad", "zero_by_construction"):
        if k in out and len(out[k]) > 8:
            out[k] = out[k][:8] + [f"... {len(out[k]) - 8} more"]
    out["warnings"] = outcome.get("warnings", [])[:10]
    return out
