"""The case API: what a file in cases/ declares. Read this file to write a case.

A case file defines ``case = Case(...)`` (the public reports, the affected versions, the ``Symptom``),
one trigger (the reported setup) and the fixes people were given (``@case.fix``). Each scenario is a
function ``fn(ctx)`` run in its own forked process: it returns what ``ctx.train``/``ctx.trainer_train``
gave it, or ``ctx.observed(**flags)`` when there is nothing to train, or it raises. The harness records
what it raised, warned and logged, and the gradients it saw, then matches the case's Symptom against
that. ``ctx`` and the training loops are the scenario toolkit in benchsuite/scenario.py (re-exported
here: ``from benchsuite.case import Context, TrainResult``). See docs/adding-a-case.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .diagnose.signs import check as check_signs
from .gradscan.verdicts import TITLES

# ---------------------------------------------------------------- declarations


@dataclass
class Symptom:
    """What the reported failure looks like. Every condition given must hold for "reproduced".

    exception: exception class name raised by the trigger (e.g. "TypeError"); message: regex searched
    in its text; warning: regex searched in warnings and log records; no_grad: regex of trainable
    parameter names of which at least one never received a gradient; unchanged: regex of trainable
    parameters of which at least one never changed over the steps; no_trainable: the model had no
    trainable parameter; nonfinite_loss: some loss was NaN or infinite.
    """

    description: str
    exception: str | None = None
    message: str | None = None
    warning: str | None = None
    no_grad: str | None = None
    unchanged: str | None = None
    no_trainable: bool = False
    nonfinite_loss: bool = False
    observed: str | None = None

    def __post_init__(self) -> None:
        if not self.conditions():
            raise ValueError("Symptom declares no condition: give at least one of exception, message, warning, "
                             "no_grad, unchanged, no_trainable, nonfinite_loss, observed (without one, every run "
                             "would be 'not-reproduced')")
        for key in ("message", "warning", "no_grad", "unchanged"):
            _check_regex(f"Symptom({key}=...)", getattr(self, key))

    def conditions(self) -> list[str]:
        """The conditions this symptom declares, by field name."""
        return [k for k in ("exception", "message", "warning", "no_grad", "unchanged", "no_trainable",
                            "nonfinite_loss", "observed") if getattr(self, k)]

    def needs_training(self) -> list[str]:
        """Conditions that only a run with training steps can decide."""
        return [k for k in ("no_grad", "unchanged", "no_trainable", "nonfinite_loss") if getattr(self, k)]

    def unjudgeable(self, outcome: dict, role: str = "trigger") -> str | None:
        """Why this outcome cannot decide the symptom either way (None: it can).

        A scenario that raised or crashed is judged on that. Otherwise a condition on gradients or losses
        needs training (not ctx.observed), a trigger that returns a training result needs at least one
        step (a fix that trained no step is judged not working instead), and ``observed=`` needs the flag
        in the outcome's extra: without them "not seen" would be a verdict with no evidence behind it.
        """
        if outcome.get("exception") or outcome.get("crashed"):
            return None
        needs = self.needs_training()
        if needs and outcome.get("trains") is False:
            return (f"it returned ctx.observed(...) (no training), but the symptom's {', '.join(needs)} "
                    "condition(s) need training steps: return the result of ctx.train(...) or "
                    "ctx.trainer_train(...)")
        if role == "trigger" and outcome.get("trains") is not False and not outcome.get("steps"):
            return ("it returned a training result in which no training step ran, so there is nothing the "
                    "symptom could have been seen in")
        if self.observed and self.observed not in (outcome.get("extra") or {}):
            return (f"its outcome has no extra[{self.observed!r}] (Symptom(observed={self.observed!r})): set "
                    f"result.extra[{self.observed!r}] = True/False, or return ctx.observed({self.observed}=...)")
        return None

    def describe_absence(self, outcome: dict) -> str:
        """What was checked and not found, condition by condition (for a 'not-reproduced' verdict)."""
        parts = []
        exc = outcome.get("exception")
        if self.exception or self.message:
            want = " ".join(x for x in (self.exception, f"/{self.message}/" if self.message else None) if x)
            parts.append(f"raised {exc['type']}, not {want}" if exc else f"no exception ({want})")
        if self.warning:
            parts.append(f"no warning or log record matched /{self.warning}/ "
                         f"({len(outcome.get('warnings', []))} seen)")
        for key, what in (("no_grad", "without a gradient"), ("unchanged", "left unchanged")):
            rx = getattr(self, key)
            if rx:
                parts.append(f"no trainable parameter matching /{rx}/ {what}")
        if self.no_trainable:
            parts.append(f"{outcome.get('trainable_params')} trainable parameter(s)")
        if self.nonfinite_loss:
            parts.append("every loss finite")
        if self.observed:
            parts.append(f"{self.observed}={(outcome.get('extra') or {}).get(self.observed)!r}")
        if outcome.get("trains") is False:
            ran = "nothing to train (ctx.observed)"
        else:
            ran = (f"{outcome.get('steps', 0)} training step(s), "
                   f"{outcome.get('trainable_params', 0)} trainable parameter(s)")
        return f"{ran}; " + "; ".join(parts)

    def match(self, outcome: dict) -> tuple[bool, dict]:
        """(observed, evidence) for one scenario's outcome."""
        evidence: dict[str, Any] = {}
        checks: list[bool] = []
        exc = outcome.get("exception")
        if self.exception or self.message:
            ok = exc is not None
            if exc is not None:
                if self.exception:
                    ok = self.exception in exc.get("mro", [exc["type"]])
                if ok and self.message:
                    ok = re.search(self.message, exc["message"]) is not None
                if ok:
                    evidence["exception"] = f"{exc['type']}: {exc['message']}"[:500]
            checks.append(ok)
        if self.warning:
            hit = next((w for w in outcome.get("warnings", []) if re.search(self.warning, w)), None)
            if hit:
                evidence["warning"] = hit[:500]
            checks.append(hit is not None)
        for key in ("no_grad", "unchanged"):
            rx = getattr(self, key)
            if rx:
                names = [n for n in outcome.get(key, []) if re.search(rx, n)]
                if names:
                    evidence[key] = names[:8] + ([f"... {len(names) - 8} more"] if len(names) > 8 else [])
                checks.append(bool(names) and outcome.get("steps", 0) > 0)
        if self.no_trainable:
            none = outcome.get("trains") is not False and outcome.get("trainable_params") == 0
            if none:
                evidence["trainable_params"] = 0
            checks.append(none)
        if self.nonfinite_loss:
            bad = [x for x in outcome.get("losses", []) if not math.isfinite(x)]
            if bad:
                evidence["nonfinite_losses"] = len(bad)
            checks.append(bool(bad))
        if self.observed:
            value = (outcome.get("extra") or {}).get(self.observed)
            if value:
                evidence[self.observed] = value
            checks.append(bool(value))
        return (bool(checks) and all(checks)), evidence


def _check_regex(what: str, rx: str | None) -> None:
    if rx is None:
        return
    try:
        re.compile(rx)
    except re.error as exc:
        raise ValueError(f"{what}: {rx!r} is not a valid regular expression ({exc})") from None


def _check_specifiers(what: str, specs: dict[str, str]) -> None:
    if not isinstance(specs, dict):
        raise ValueError(f"{what} takes {{package: specifier}}, e.g. {{'transformers': '>=4.35,<5'}}; got {specs!r}")
    for package, spec in specs.items():
        try:
            SpecifierSet(spec)
        except (InvalidSpecifier, TypeError):
            raise ValueError(f"{what}: {package}: {spec!r} is not a version specifier (e.g. '>=4.35,<5')") from None


_ISSUE_REF = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+#[1-9][0-9]*")
_FILE_REF = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+@[^\s:@]+:[^\s]+")


def check_reference(ref) -> None:
    """A public report: ``owner/repo#N`` (an issue or pull request), ``owner/repo@ref:path`` (a file at a
    tag, branch or commit) or an https URL. Anything else raises ValueError."""
    if isinstance(ref, str):
        if _ISSUE_REF.fullmatch(ref) or _FILE_REF.fullmatch(ref):
            return
        url = urlparse(ref)
        if url.scheme == "https" and "." in url.netloc and not any(c.isspace() for c in ref):
            return
    raise ValueError(f"reference {ref!r} is not owner/repo#N, owner/repo@ref:path or an https:// URL")


@dataclass
class Explains:
    """A watch/scanner finding this case explains: ``benchsuite watch`` (and ``benchsuite.doctor.known_cases``)
    name the case, and its fixes, when a run reports such a finding. See docs/my-run-went-wrong.md.

    finding: a finding kind of ``benchsuite watch`` (no-gradient, all-zero, non-finite, never-changed, lr-zero,
    not-in-optimizer, nothing-trainable, frozen-adapter, replicas-differ, zero-everywhere; the scanner's
    ScanReport.problems use the first three); params: regex that at least one of the finding's parameter
    names must match (re.search), None for any; context: facts of the watched run that must hold where they
    are known (``trainer``: a transformers Trainer ran the optimizer; ``distributed``: world size above 1);
    note: how the finding shows this case, for the reader.
    """

    finding: str
    params: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.finding not in TITLES:
            raise ValueError(f"Explains: unknown finding {self.finding!r} (one of {', '.join(TITLES)})")
        _check_regex("Explains(params=...)", self.params)
        unknown = set(self.context) - set(EXPLAIN_CONTEXT)
        if not isinstance(self.context, dict) or unknown:
            raise ValueError(f"Explains: context takes {{fact: value}} with facts {', '.join(EXPLAIN_CONTEXT)}; "
                             f"got {self.context!r}")

    def to_dict(self) -> dict:
        return {"finding": self.finding, "params": self.params, "context": self.context, "note": self.note}


# The families a case belongs to (exactly one each, ``Case(family=...)``): where in a fine-tuning job it fails.
FAMILIES = ("gradient-checkpointing", "save-load-merge", "api-change", "rl", "data", "mixed-precision", "loss",
            "resume", "distributed", "attention", "quantization")


# Facts of a watched run an Explains(context=...) may name.
EXPLAIN_CONTEXT = ("trainer", "distributed")


@dataclass
class Fix:
    name: str
    title: str
    fn: Callable
    works: bool = True  # what the case declares: False for a remedy that circulates but should not work
    note: str = ""
    applies: dict[str, str] = field(default_factory=dict)  # versions where the fix can be applied at all


@dataclass
class Case:
    id: str
    title: str
    references: list[str]
    symptom: Symptom
    affected: dict[str, str] = field(default_factory=dict)  # package -> specifier; {} = every version
    tags: list[str] = field(default_factory=list)
    # One of FAMILIES; "" (the default, for cases written before families existed) = none declared.
    family: str = ""
    requires: list[str] = field(default_factory=list)  # packages that must be importable, else skipped
    requires_cuda: bool = False
    requires_gpu_below: tuple[int, int] | None = None  # needs a GPU older than this compute capability
    applies: dict[str, str] = field(default_factory=dict)  # versions where the scenario exists at all
    supports_model: bool = False  # honours --model PATH
    # config.json model_type values a --model checkpoint must have for this case (e.g. ["chatglm"]);
    # [] = any causal LM. Other checkpoints skip the case with a reason.
    model_families: list[str] = field(default_factory=list)
    notes: str = ""
    fixed_in: str = ""  # e.g. "transformers 5.0": a fix that is an upgrade, checked by the matrix
    # Where the default changed rather than the bug: what still triggers it on a fixed release, in one line
    # (e.g. "gradient_checkpointing_kwargs={'use_reentrant': True}"); shown when the case does not reproduce.
    still_triggers: str = ""
    # Regex of trainable parameter names whose gradient is exactly zero at every step by construction
    # (say, a reward head's bias under a pairwise loss): not held against a fix. See healthy_problems.
    expected_zero: str | None = None
    # Watch/scanner findings this failure shows as (Explains or a bare finding kind): benchsuite watch names
    # the case when a run reports one. See Explains and docs/my-run-went-wrong.md.
    explains: list = field(default_factory=list)
    # Signs a training log of this failure shows (benchsuite.diagnose.signs.SIGNS: "loss-nonfinite",
    # "loss-log2", "grad-norm-zero", "no-eval-loss", ...): `doctor --log` names the case when a log shows them.
    signs: list = field(default_factory=list)
    trigger_fn: Callable | None = None
    fixes: list[Fix] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = f"case {self.id!r}"
        if isinstance(self.references, str) or not self.references:
            raise ValueError(f"{where}: references must be a non-empty list of the public reports")
        for ref in self.references:
            try:
                check_reference(ref)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        if not isinstance(self.symptom, Symptom):
            raise ValueError(f"{where}: symptom must be a benchsuite.case.Symptom")
        if self.family and self.family not in FAMILIES:
            raise ValueError(f"{where}: family {self.family!r} is not one of {', '.join(FAMILIES)}")
        _check_specifiers(f"{where}: affected", self.affected)
        _check_specifiers(f"{where}: applies", self.applies)
        _check_regex(f"{where}: expected_zero", self.expected_zero)
        if isinstance(self.explains, (str, Explains)):
            self.explains = [self.explains]
        try:
            self.explains = [Explains(e) if isinstance(e, str) else e for e in self.explains]
        except ValueError as exc:
            raise ValueError(f"{where}: explains: {exc}") from None
        try:
            self.signs = check_signs(self.signs, f"{where}: signs")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not all(isinstance(e, Explains) for e in self.explains):
            raise ValueError(f"{where}: explains takes Explains(...) objects or finding kinds")

    def all_signs(self) -> list[str]:
        """The declared signs, plus those the symptom implies (a non-finite loss)."""
        implied = ["loss-nonfinite"] if self.symptom.nonfinite_loss else []
        return list(dict.fromkeys([*self.signs, *implied]))

    def trigger(self, fn: Callable) -> Callable:
        self.trigger_fn = fn
        return fn

    def fix(self, title: str, works: bool = True, note: str = "",
            applies: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
        """Register a fix. ``applies``: package specifiers outside which the fix does not exist (an
        argument added in some release, say); there it is reported as not applicable, never run."""
        _check_specifiers(f"case {self.id!r}: fix {title!r}: applies", dict(applies or {}))

        def register(fn: Callable) -> Callable:
            self.fixes.append(Fix(fn.__name__, title, fn, works, note, dict(applies or {})))
            return fn
        return register

    def metadata(self) -> dict:
        return {"id": self.id, "title": self.title, "references": self.references, "tags": self.tags,
                "family": self.family,
                "affected": self.affected, "symptom": self.symptom.description, "notes": self.notes,
                "fixed_in": self.fixed_in, "still_triggers": self.still_triggers, "requires": self.requires,
                "requires_cuda": self.requires_cuda,
                "applies": self.applies,
                "supports_model": self.supports_model, "model_families": self.model_families,
                "expected_zero": self.expected_zero,
                "explains": [e.to_dict() for e in self.explains],
                "signs": self.all_signs(),
                "symptom_match": {"exception": self.symptom.exception, "message": self.symptom.message,
                                  "warning": self.symptom.warning},
                "fixes": [{"name": f.name, "title": f.title, "declared_works": f.works, "note": f.note,
                           "applies": f.applies}
                          for f in self.fixes]}


# The scenario toolkit lives in benchsuite/scenario/; re-exported so that existing imports keep working.
from .scenario import Context, TrainResult, _current_result, healthy_problems  # noqa: E402,F401
