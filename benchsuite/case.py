"""The case API: what a file in cases/ declares and the helpers its scenarios use.

A case file defines ``case = Case(...)``, one trigger (the reported setup) and the fixes people were
given. Each scenario is a function ``fn(ctx) -> TrainResult | None`` run in its own forked process;
the harness records what it raised, warned and logged, and the gradients it saw, then matches the
case's Symptom against that. See docs/adding-a-case.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

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
            none = outcome.get("trainable_params") == 0
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
    notes: str = ""
    fixed_in: str = ""  # e.g. "transformers 5.0": a fix that is an upgrade, checked by the matrix
    trigger_fn: Callable | None = None
    fixes: list[Fix] = field(default_factory=list)

    def trigger(self, fn: Callable) -> Callable:
        self.trigger_fn = fn
        return fn

    def fix(self, title: str, works: bool = True, note: str = "",
            applies: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
        """Register a fix. ``applies``: package specifiers outside which the fix does not exist (an
        argument added in some release, say); there it is reported as not applicable, never run."""
        def register(fn: Callable) -> Callable:
            self.fixes.append(Fix(fn.__name__, title, fn, works, note, dict(applies or {})))
            return fn
        return register

    def metadata(self) -> dict:
        return {"id": self.id, "title": self.title, "references": self.references, "tags": self.tags,
                "affected": self.affected, "symptom": self.symptom.description, "notes": self.notes,
                "fixed_in": self.fixed_in, "requires": self.requires, "requires_cuda": self.requires_cuda,
                "applies": self.applies,
                "supports_model": self.supports_model,
                "fixes": [{"name": f.name, "title": f.title, "declared_works": f.works, "note": f.note,
                           "applies": f.applies}
                          for f in self.fixes]}


# ---------------------------------------------------------------- scenario helpers


@dataclass
class TrainResult:
    """What a scenario's training loop saw; the harness turns it into the outcome."""

    losses: list[float] = field(default_factory=list)
    reports: list = field(default_factory=list)  # benchsuite.gradscan.ScanReport per step
    trainable: list[str] = field(default_factory=list)
    changed: dict[str, bool] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    precomputed: dict | None = None  # a summary made elsewhere (another process's training loop)

    def summary(self) -> dict:
        if self.precomputed is not None:
            return {**self.precomputed, "extra": {**self.precomputed.get("extra", {}), **self.extra}}
        got_grad = {r.name for rep in self.reports for r in rep if not r.none}
        nonfinite = sorted({r.name for rep in self.reports for r in rep if r.nonfinite})
        # Exactly zero at every step, never None: structural (e.g. a reward head's bias under a
        # pairwise loss, which cancels in r_chosen - r_rejected), not a broken graph.
        zero_sets = [{r.name for r in rep if r.all_zero} for rep in self.reports]
        always_zero = [n for n in self.trainable if zero_sets and all(n in z for z in zero_sets)]
        return {
            "steps": len(self.losses),
            "losses": self.losses,
            "trainable_params": len(self.trainable),
            "no_grad": [n for n in self.trainable if n not in got_grad] if self.reports else [],
            "nonfinite_grads": nonfinite,
            "unchanged": [n for n, c in self.changed.items() if not c],
            "always_zero_grad": always_zero,
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

    def trainer_train(self, model, dataset: list | None = None, optimizer=None, **training_args) -> TrainResult:
        """Train with transformers.Trainer on the CPU; gradients are scanned before every optimizer step
        through torch's global optimizer hook (every transformers version has it, unlike the callback)."""
        dataset = dataset if dataset is not None else self.dataset(model)
        import tempfile

        import torch
        from transformers import Trainer, TrainingArguments

        from .gradscan import scan
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        result = TrainResult(trainable=[n for n, _ in named])
        _current_result[0] = result
        before = {n: p.detach().clone() for n, p in named}
        step = [0]

        def pre_step(opt, args, kwargs):
            result.reports.append(scan(model, step=step[0]))
            step[0] += 1
            return None

        from torch.optim.optimizer import register_optimizer_step_pre_hook
        handle = register_optimizer_step_pre_hook(pre_step)
        kw = dict(output_dir=tempfile.mkdtemp(dir=self.workdir), max_steps=3, per_device_train_batch_size=2,
                  learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                  disable_tqdm=True, seed=self.seed)
        kw.update(training_args)
        try:
            trainer = Trainer(model=model, args=TrainingArguments(**kw), train_dataset=dataset,
                              optimizers=(optimizer, None) if optimizer is not None else (None, None))
            trainer.train()
        finally:
            handle.remove()
        result.losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
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


def healthy_problems(outcome: dict) -> list[str]:
    """Why a run is not healthy training (empty list = healthy): used to judge fixes."""
    problems = []
    if outcome.get("exception"):
        e = outcome["exception"]
        problems.append(f"raised {e['type']}: {e['message'][:200]}")
        return problems
    if outcome.get("crashed"):
        return [f"crashed: {outcome['crashed']}"]
    if outcome.get("steps", 0) == 0:
        return ["no training step ran"]
    if outcome.get("trainable_params", 0) == 0:
        problems.append("no trainable parameter")
    if any(not math.isfinite(x) for x in outcome.get("losses", [])):
        problems.append("non-finite loss")
    if outcome.get("no_grad"):
        problems.append(f"{len(outcome['no_grad'])} trainable parameter(s) never got a gradient")
    if outcome.get("nonfinite_grads"):
        problems.append(f"{len(outcome['nonfinite_grads'])} parameter(s) with non-finite gradients")
    structural = set(outcome.get("always_zero_grad", []))
    stuck = [n for n in outcome.get("unchanged", []) if n not in structural]
    if stuck:
        problems.append(f"{len(stuck)} trainable parameter(s) never changed")
    return problems
