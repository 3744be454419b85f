"""The case API: what a file in cases/ declares and the helpers its scenarios use.

A case file defines ``case = Case(...)``, one trigger (the reported setup) and the fixes people were
given. Each scenario is a function ``fn(ctx) -> TrainResult`` run in its own forked process: it
returns what ``ctx.train``/``ctx.trainer_train`` gave it, or ``ctx.observed(**flags)`` when there is
nothing to train, or it raises. The harness records what it raised, warned and logged, and the
gradients it saw, then matches the case's Symptom against that. See docs/adding-a-case.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

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
            if ok and self.exception:
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
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
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
        from .watch.verdicts import TITLES
        if self.finding not in TITLES:
            raise ValueError(f"Explains: unknown finding {self.finding!r} (one of {', '.join(TITLES)})")
        _check_regex("Explains(params=...)", self.params)
        unknown = set(self.context) - set(EXPLAIN_CONTEXT)
        if not isinstance(self.context, dict) or unknown:
            raise ValueError(f"Explains: context takes {{fact: value}} with facts {', '.join(EXPLAIN_CONTEXT)}; "
                             f"got {self.context!r}")

    def to_dict(self) -> dict:
        return {"finding": self.finding, "params": self.params, "context": self.context, "note": self.note}


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
    # Regex of trainable parameter names whose gradient is exactly zero at every step by construction
    # (say, a reward head's bias under a pairwise loss): not held against a fix. See healthy_problems.
    expected_zero: str | None = None
    # Watch/scanner findings this failure shows as (Explains or a bare finding kind): benchsuite watch names
    # the case when a run reports one. See Explains and docs/my-run-went-wrong.md.
    explains: list = field(default_factory=list)
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
        _check_specifiers(f"{where}: affected", self.affected)
        _check_specifiers(f"{where}: applies", self.applies)
        _check_regex(f"{where}: expected_zero", self.expected_zero)
        if isinstance(self.explains, (str, Explains)):
            self.explains = [self.explains]
        try:
            self.explains = [Explains(e) if isinstance(e, str) else e for e in self.explains]
        except ValueError as exc:
            raise ValueError(f"{where}: explains: {exc}") from None
        if not all(isinstance(e, Explains) for e in self.explains):
            raise ValueError(f"{where}: explains takes Explains(...) objects or finding kinds")

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
                "affected": self.affected, "symptom": self.symptom.description, "notes": self.notes,
                "fixed_in": self.fixed_in, "requires": self.requires, "requires_cuda": self.requires_cuda,
                "applies": self.applies,
                "supports_model": self.supports_model, "model_families": self.model_families,
                "expected_zero": self.expected_zero,
                "explains": [e.to_dict() for e in self.explains],
                "fixes": [{"name": f.name, "title": f.title, "declared_works": f.works, "note": f.note,
                           "applies": f.applies}
                          for f in self.fixes]}


# ---------------------------------------------------------------- scenario helpers


@dataclass
class TrainResult:
    """A scenario's outcome: what its training loop saw (``ctx.train``, ``ctx.trainer_train``), or, from
    ``ctx.observed(**flags)``, the facts of a scenario with nothing to train (``trains=False``)."""

    losses: list[float] = field(default_factory=list)
    reports: list = field(default_factory=list)  # benchsuite.gradscan.ScanReport per step
    trainable: list[str] = field(default_factory=list)
    changed: dict[str, bool] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    precomputed: dict | None = None  # a summary made elsewhere (another process's training loop)
    trains: bool = True  # False: ctx.observed(), an explicit outcome without training

    def summary(self) -> dict:
        if self.precomputed is not None:
            return {**self.precomputed, "extra": {**self.precomputed.get("extra", {}), **self.extra}}
        if not self.trains:
            return {"trains": False, "extra": self.extra}
        got_grad = {r.name for rep in self.reports for r in rep if not r.none}
        nonfinite = sorted({r.name for rep in self.reports for r in rep if r.nonfinite})
        # Exactly zero (never None) at every step. The scanner marks a zero that is zero by construction
        # at that step (gradscan's _expected_zero_names: a LoRA factor whose partner is still all zero);
        # a parameter so marked at every step is explained, the others are for the harness to judge.
        zero_sets = [{r.name for r in rep if r.all_zero} for rep in self.reports]
        always_zero = [n for n in self.trainable if zero_sets and all(n in z for z in zero_sets)]
        excused_sets = [{r.name for r in rep if r.all_zero and r.expected_zero} for rep in self.reports]
        by_construction = [n for n in always_zero if all(n in z for z in excused_sets)]
        return {
            "trains": True,
            "steps": len(self.losses),
            "losses": self.losses,
            "trainable_params": len(self.trainable),
            "no_grad": [n for n in self.trainable if n not in got_grad] if self.reports else [],
            "nonfinite_grads": nonfinite,
            "unchanged": [n for n, c in self.changed.items() if not c],
            "always_zero_grad": always_zero,
            "zero_by_construction": by_construction,
            "grad_problems": [p.__dict__ for p in self.reports[-1].problems] if self.reports else [],
            "extra": self.extra,
        }


class Context:
    """Handed to every scenario: where to put files, which model to use, and a training loop."""

    def __init__(self, workdir: str, model_path: str | None = None, seed: int = 0):
        self.workdir = workdir
        self.model_path = model_path
        self.seed = seed

    # -- data
    def batch(self, model, batch_size: int = 2, seq_len: int = 16, task: str = "causal") -> dict:
        import torch
        vocab = int(getattr(model.config, "vocab_size", None) or getattr(model.config, "padded_vocab_size"))
        g = torch.Generator().manual_seed(self.seed)
        ids = torch.randint(1, vocab, (batch_size, seq_len), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if task == "causal":
            batch["labels"] = ids.clone()
        elif task == "seq_cls":
            n = int(getattr(model.config, "num_labels", 2))
            batch["labels"] = (torch.randn(batch_size, generator=g) if n == 1
                               else torch.randint(0, n, (batch_size,), generator=g))
        return batch

    def reward_batch(self, model, batch_size: int = 2, seq_len: int = 16) -> dict:
        """Chosen/rejected pairs, as a reward-model trainer feeds them."""
        chosen = self.batch(model, batch_size, seq_len, task="none")
        g_rej = Context(self.workdir, self.model_path, self.seed + 1).batch(model, batch_size, seq_len, task="none")
        return {"input_ids": chosen["input_ids"], "attention_mask": chosen["attention_mask"],
                "input_ids_rejected": g_rej["input_ids"], "attention_mask_rejected": g_rej["attention_mask"]}

    @staticmethod
    def pairwise_loss(model, batch: dict):
        """-log sigmoid(r_chosen - r_rejected), MedicalGPT's reward-modelling loss."""
        import torch.nn.functional as F
        chosen = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        rejected = model(input_ids=batch["input_ids_rejected"], attention_mask=batch["attention_mask_rejected"])[0]
        return -F.logsigmoid(chosen - rejected).mean()

    # -- models (tiny from a config, or the user's --model PATH)
    def causal_model(self):
        import torch
        if self.model_path:
            from transformers import AutoModelForCausalLM
            return AutoModelForCausalLM.from_pretrained(self.model_path, trust_remote_code=True,
                                                        torch_dtype=torch.float32)
        from .models import tiny_llama
        return tiny_llama("causal", seed=self.seed)

    def seq_cls_model(self, num_labels: int = 1):
        import torch
        if self.model_path:
            from transformers import AutoModelForSequenceClassification
            model = AutoModelForSequenceClassification.from_pretrained(
                self.model_path, num_labels=num_labels, trust_remote_code=True, torch_dtype=torch.float32)
            if getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = getattr(model.config, "eos_token_id", None) or 0
            return model
        from .models import tiny_llama
        return tiny_llama("seq_cls", seed=self.seed, num_labels=num_labels)

    def chatglm_path(self) -> str:
        """A ChatGLM-style remote-code checkpoint: the user's --model, else benchsuite's own, written once."""
        import os

        from .models import write_chatglm
        if self.model_path:
            return self.model_path
        path = os.path.join(self.workdir, "chatglm")
        if not os.path.exists(os.path.join(path, "config.json")):
            write_chatglm(path, seed=self.seed)
        return path

    def chatglm(self, task: str = "causal", path: str | None = None, num_labels: int = 1):
        """Load it through transformers' trust_remote_code path, as users do."""
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        path = path or self.chatglm_path()
        if task == "seq_cls":
            return AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True,
                                                                      num_labels=num_labels)
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

    @staticmethod
    def lora_targets(model) -> list[str] | str:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        for group in (["q_proj", "v_proj"], ["query_key_value"], ["c_attn"], ["query", "value"]):
            if all(g in names for g in group):
                return group
        return "all-linear"

    def lora_config(self, model, task_type: str | None, **overrides):
        from peft import LoraConfig
        kw = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=self.lora_targets(model))
        if task_type:
            kw["task_type"] = task_type
        kw.update(overrides)
        return LoraConfig(**kw)

    def dataset(self, model, n: int = 4, seq_len: int = 16, task: str = "causal") -> list[dict]:
        """A tiny in-memory dataset for transformers.Trainer (rows of equal length)."""
        b = self.batch(model, batch_size=n, seq_len=seq_len, task=task)
        return [{k: v[i] for k, v in b.items()} for i in range(n)]

    @staticmethod
    def observed(**flags) -> TrainResult:
        """The outcome of a scenario with nothing to train (it loads a model, calls an API, inspects a
        config): the facts it measured, by name, for ``Symptom(observed=...)``. A fix that returns this
        is judged on the symptom alone (no exception, flag false), not on training health."""
        if not flags:
            raise ValueError("ctx.observed() needs at least one named fact, e.g. ctx.observed(head_frozen=True)")
        return TrainResult(extra=dict(flags), trains=False)

    def trainer_train(self, model, dataset: list | None = None, optimizer=None, trainer_class=None,
                      callbacks: list | None = None, trainer_kwargs: dict | None = None,
                      **training_args) -> TrainResult:
        """Train with transformers.Trainer (or ``trainer_class``, a subclass) on the CPU.

        ``callbacks``: TrainerCallbacks added to the trainer; ``trainer_kwargs``: further arguments of the
        trainer's constructor (``data_collator``, ``processing_class``, ``compute_loss_func``, ...).

        Defaults: ``TrainingArguments(max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
        use_cpu=True, logging_steps=1, save_strategy="no", report_to="none", seed=ctx.seed)``, every one
        overridable through ``training_args``; ``dataset`` defaults to ``ctx.dataset(model)``. Gradients are
        scanned before every optimizer step through torch's global optimizer hook (every transformers
        version has it). Losses are the training_step values of each optimizer step (summed over
        accumulation), as floats at full precision: not the log history, which transformers 4.x rounds to
        4 decimals and in which a NaN loss is replaced (logging_nan_inf_filter).
        """
        dataset = dataset if dataset is not None else self.dataset(model)
        import tempfile

        import torch
        from transformers import Trainer, TrainerCallback, TrainingArguments

        from .gradscan import scan
        trainer_class = trainer_class or Trainer
        if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
            raise TypeError(f"trainer_class must be transformers.Trainer or a subclass, not {trainer_class!r}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        result = TrainResult(trainable=[n for n, _ in named])
        _current_result[0] = result
        before = {n: p.detach().clone() for n, p in named}
        step = [0]
        micro: list[float] = []  # this optimizer step's micro-batch losses

        def pre_step(opt, args, kwargs):
            result.reports.append(scan(model, step=step[0]))
            step[0] += 1
            return None

        class _StepLosses(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if micro:
                    result.losses.append(math.fsum(micro))
                    micro.clear()

        from torch.optim.optimizer import register_optimizer_step_pre_hook
        handle = register_optimizer_step_pre_hook(pre_step)
        kw = dict(output_dir=tempfile.mkdtemp(dir=self.workdir), max_steps=3, per_device_train_batch_size=2,
                  learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                  disable_tqdm=True, seed=self.seed)
        kw.update(training_args)
        try:
            trainer = trainer_class(model=model, args=TrainingArguments(**kw), train_dataset=dataset,
                                    optimizers=(optimizer, None) if optimizer is not None else (None, None),
                                    callbacks=[*(callbacks or []), _StepLosses()], **(trainer_kwargs or {}))
            training_step = trainer.training_step

            def recording_training_step(*args, **kwargs):
                loss = training_step(*args, **kwargs)
                micro.append(float(loss.detach().float().mean()))
                return loss

            trainer.training_step = recording_training_step  # the instance's: subclasses' overrides still run
            trainer.train()
        finally:
            handle.remove()
        result.changed = {n: not torch.equal(before[n], p.detach()) for n, p in named}
        return result

    # -- training
    def train(self, model, batch: dict | None = None, steps: int = 3, lr: float = 1e-2, task: str = "causal",
              loss_fn: Callable | None = None, optimizer_cls=None, train_mode: bool = True,
              autocast_dtype=None, scaler=None, scheduler_fn: Callable | None = None) -> TrainResult:
        """A few optimizer steps; scans every trainable gradient before each step.

        Raises what the libraries raise (the harness records it). With no trainable parameter the
        optimizer's own error ("optimizer got an empty parameter list") is what users see, so it is
        kept, with the trainable count recorded first.
        """
        import torch

        from .gradscan import scan
        torch.manual_seed(self.seed)
        if train_mode:
            model.train()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        result = TrainResult(trainable=[n for n, _ in named])
        _current_result[0] = result
        before = {n: p.detach().clone() for n, p in named}
        opt = (optimizer_cls or torch.optim.AdamW)([p for _, p in named], lr=lr)
        scheduler = scheduler_fn(opt) if scheduler_fn else None
        batch = batch if batch is not None else self.batch(model, task=task)
        for step in range(steps):
            with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = loss_fn(model, batch) if loss_fn else model(**batch).loss
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # scan the true gradients; raises for fp16 trainable weights
            else:
                loss.backward()
            result.reports.append(scan(model, step=step))
            result.losses.append(float(loss.detach()))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if scheduler is not None:
                scheduler.step()
            opt.zero_grad(set_to_none=True)
        result.changed = {n: not torch.equal(before[n], p.detach()) for n, p in named}
        return result


# The result being filled, so an exception mid-training still reports the steps that ran.
_current_result: list[TrainResult | None] = [None]


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def healthy_problems(outcome: dict, expected_zero: str | None = None) -> list[str]:
    """Why a run is not healthy training (empty list = healthy): used to judge fixes.

    ``expected_zero``: the case's regex of parameters whose gradient is zero by construction. A trainable
    parameter whose gradient is exactly zero at every step is a problem unless the scanner marked it zero
    by construction at every step (a LoRA factor whose partner is still all zero) or it matches that regex:
    otherwise the "fix" may train nothing (LoRA with lora_alpha=0, say) and could never be told apart from
    one that works. A trainable parameter that never gets a gradient (one the model never uses) is a
    problem too: freeze it (``requires_grad_(False)``) in the scenario.
    An outcome from ``ctx.observed(...)`` has no training to judge: only an exception counts against it.
    """
    problems = []
    if outcome.get("exception"):
        e = outcome["exception"]
        problems.append(f"raised {e['type']}: {e['message'][:200]}")
        return problems
    if outcome.get("crashed"):
        return [f"crashed: {outcome['crashed']}"]
    if outcome.get("trains") is False:
        return []
    if outcome.get("steps", 0) == 0:
        return ["no training step ran"]
    if outcome.get("trainable_params", 0) == 0:
        problems.append("no trainable parameter")
    if any(not math.isfinite(x) for x in outcome.get("losses", [])):
        problems.append("non-finite loss")
    if outcome.get("no_grad"):
        problems.append(f"{len(outcome['no_grad'])} trainable parameter(s) never got a gradient: "
                        f"{_names(outcome['no_grad'])} (freeze parameters the model does not use)")
    if outcome.get("nonfinite_grads"):
        problems.append(f"{len(outcome['nonfinite_grads'])} parameter(s) with non-finite gradients: "
                        f"{_names(outcome['nonfinite_grads'])}")
    always_zero = outcome.get("always_zero_grad", [])
    explained = set(outcome.get("zero_by_construction", []))
    if expected_zero:
        explained |= {n for n in always_zero if re.search(expected_zero, n)}
    unexplained = [n for n in always_zero if n not in explained]
    if unexplained:
        steps = outcome.get("steps", 0)
        problems.append(f"{len(unexplained)} trainable parameter(s) had an exactly zero gradient at every step "
                        f"({steps} step(s)) with no explanation: {_names(unexplained)}")
    stuck = [n for n in outcome.get("unchanged", []) if n not in set(always_zero)]
    if stuck:
        problems.append(f"{len(stuck)} trainable parameter(s) never changed: {_names(stuck)}")
    return problems
