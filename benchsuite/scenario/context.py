"""Context: what a case's trigger and fixes get as ``ctx`` (see the package's docstring)."""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from typing import Any, Callable

from .. import gradscan  # the package loads its torch modules on first use
from ..models import tiny_llama, write_chatglm
from .launch import backend_for, launch, raise_rank_error
from .result import TrainResult, _current_result


class Context:
    """Handed to every scenario: where to put files, which model to use, and a training loop."""

    def __init__(self, workdir: str, model_path: str | None = None, seed: int = 0):
        self.workdir = workdir
        self.model_path = model_path
        self.seed = seed
        # Set on each rank of ctx.torchrun(...): its rank, the group's size, its device and backend.
        self.rank, self.local_rank, self.world_size = 0, 0, 1
        self.device = "cpu"
        self.backend: str | None = None

    # -- several processes
    def torchrun(self, fn: Callable, nproc: int = 2, **options) -> TrainResult:
        """Run ``fn(ctx, **options)`` on ``nproc`` ranks launched by ``torch.distributed.run`` (torchrun
        --standalone) and return rank 0's TrainResult.

        ``fn`` is a module-level function of the case file. On each rank the process group is already
        initialised: nccl where every rank has a CUDA GPU of its own (``ctx.device`` is then its GPU;
        move the model and batches there), else gloo with the ranks on the CPU; every collective times out
        after 60 s. A rank that raises makes this raise the same exception class (by name) with the same
        message; warnings rank 0 saw are warned again here, so a symptom's ``warning=`` sees them. The
        harness's timeout covers the ranks: killing the scenario kills torchrun and every rank."""
        run_dir = tempfile.mkdtemp(prefix="torchrun-", dir=self.workdir)
        spec = {"file": fn.__code__.co_filename, "function": fn.__name__, "workdir": self.workdir,
                "model_path": self.model_path, "seed": self.seed, "options": options, "nproc": nproc,
                "backend": backend_for(nproc)}
        spec_path = os.path.join(run_dir, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        failed = None
        saved_port = os.environ.pop("MASTER_PORT", None)  # --standalone picks a free port
        try:
            launch(spec_path, nproc, type(self))
        except Exception as exc:  # torchrun's ChildFailedError: the ranks' error files say what failed
            failed = exc
        finally:
            if saved_port is not None:
                os.environ["MASTER_PORT"] = saved_port
        tail = str(failed)[-2000:] if failed else ""
        errors = []
        for name in os.listdir(run_dir):
            if name.startswith("rank") and name.endswith(".error"):
                with open(os.path.join(run_dir, name)) as f:
                    errors.append(json.load(f))
        if errors:  # the first rank to fail is the failure; the others' errors follow from it
            raise_rank_error(min(errors, key=lambda e: (e.get("time", 0), e.get("rank", 0))), tail)
        result_path = os.path.join(run_dir, "result.json")
        if failed is not None or not os.path.exists(result_path):
            raise RuntimeError(f"torchrun: no rank reported a result: {tail[-800:] or 'rank 0 wrote nothing'}")
        with open(result_path) as f:
            done = json.load(f)
        for category, message in done.get("warnings", []):
            warnings.warn(message, type(category, (UserWarning,), {"__module__": "benchsuite.rank"}), stacklevel=1)
        return TrainResult(precomputed=done["summary"])

    # -- data
    def batch(self, model, batch_size: int = 2, seq_len: int = 16, task: str = "causal") -> dict:
        import torch
        vocab = int(getattr(model.config, "vocab_size", None) or model.config.padded_vocab_size)
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
        return tiny_llama("seq_cls", seed=self.seed, num_labels=num_labels)

    def chatglm_path(self) -> str:
        """A ChatGLM-style remote-code checkpoint: the user's --model, else benchsuite's own, written once."""

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
        kw: dict[str, Any] = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=self.lora_targets(model))
        if task_type:
            kw["task_type"] = task_type
        kw.update(overrides)
        return LoraConfig(**kw)

    def dataset(self, model, n: int = 4, seq_len: int = 16, task: str = "causal") -> list[dict]:
        """A tiny in-memory dataset for transformers.Trainer (rows of equal length)."""
        b = self.batch(model, batch_size=n, seq_len=seq_len, task=task)
        return [{k: v[i] for k, v in b.items()} for i in range(n)]

    # -- text: a word-level tokenizer built offline and a model whose vocabulary matches it
    WORDS = ("<pad>", "<eos>", "<unk>", *(f"w{i}" for i in range(61)))

    def tokenizer(self, pad: bool = True, padding_side: str = "right", chat_template: str | None = None):
        """A word-level ``PreTrainedTokenizerFast`` built in memory (nothing downloaded): ids 0 ``<pad>``,
        1 ``<eos>``, 2 ``<unk>``, then the words ``w0``..``w60``. ``pad=False`` leaves it without a pad
        token (as many base-model tokenizers are); ``padding_side`` is "right" or "left";
        ``chat_template``: a Jinja template string, or None. Its outputs are ``input_ids`` and
        ``attention_mask`` only (older trl passes every tokenizer output to ``generate()``)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        if padding_side not in ("right", "left"):
            raise ValueError(f"ctx.tokenizer(padding_side=...) is 'right' or 'left', not {padding_side!r}")
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(self.WORDS)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        special = {"eos_token": "<eos>", "unk_token": "<unk>", **({"pad_token": "<pad>"} if pad else {})}
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side,
                                            model_input_names=["input_ids", "attention_mask"], **special)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        return tokenizer

    def text_model(self, task: str = "causal", **config_overrides):
        """A tiny Llama (``task`` "causal" or "seq_cls") whose vocabulary is ``ctx.tokenizer()``'s:
        pad 0, eos (and bos) 1. ``config_overrides`` go to ``LlamaConfig`` (e.g. ``num_labels=1``,
        ``tie_word_embeddings=True``)."""
        if task not in ("causal", "seq_cls"):
            raise ValueError(f"ctx.text_model(task=...) is 'causal' or 'seq_cls', not {task!r}")
        cfg = dict(vocab_size=len(self.WORDS), pad_token_id=0, eos_token_id=1, bos_token_id=1)
        cfg.update(config_overrides)
        return tiny_llama(task, seed=self.seed, **cfg)

    def sentences(self, n: int, words: int = 4, seed_offset: int = 0) -> list[str]:
        """``n`` strings of ``words`` random words of ``ctx.tokenizer()``'s vocabulary (deterministic:
        ``ctx.seed + seed_offset``)."""
        import torch
        g = torch.Generator().manual_seed(self.seed + seed_offset)
        return [" ".join(f"w{int(i)}" for i in torch.randint(0, 61, (words,), generator=g)) for _ in range(n)]

    def saved_adapter(self, name: str = "adapter", base=None, task_type: str | None = "CAUSAL_LM",
                      **lora_overrides) -> str:
        """Save, once per case, a LoRA adapter that looks trained (``lora_B`` drawn from N(0, 0.1), not the
        zeros of a fresh adapter) under ``ctx.workdir/name`` and return its folder. ``base`` is the model
        to wrap (default ``ctx.text_model()``); ``task_type`` and ``lora_overrides`` go to
        ``ctx.lora_config``. The base model itself is not saved."""

        import torch
        from peft import get_peft_model
        path = os.path.join(self.workdir, name)
        if os.path.exists(os.path.join(path, "adapter_config.json")):
            return path
        base = base if base is not None else self.text_model()
        model = get_peft_model(base, self.lora_config(base, task_type, **lora_overrides))
        g = torch.Generator().manual_seed(self.seed + 1)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.save_pretrained(path)
        return path

    def trl_train(self, trainer_cls, config_cls, model, dataset, tokenizer=None, trainer_kwargs: dict | None = None,
                  **config) -> TrainResult:
        """Train a TRL trainer (``SFTTrainer``, ``DPOTrainer``, ``GRPOTrainer``, ``RewardTrainer``, ...) through
        ``ctx.trainer_train``, so its steps are scanned and its losses recorded like any Trainer's.

        ``config_cls`` is the trainer's config class (``SFTConfig``, ``DPOConfig``, ...); ``config`` overrides
        its CPU defaults: ``max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=ctx.seed,
        gradient_checkpointing=False, bf16=False`` (several TRL configs turn checkpointing and bf16 on by
        default; a case that is about them sets them). ``tokenizer`` is passed as ``processing_class``
        (default ``ctx.tokenizer()``); ``trainer_kwargs``: the trainer's other arguments
        (``reward_funcs=``, ``ref_model=``, ``peft_config=``, ...)."""
        kw = dict(output_dir=os.path.join(self.workdir, trainer_cls.__name__.lower()), max_steps=2,
                  per_device_train_batch_size=4, learning_rate=1e-2, report_to="none", use_cpu=True,
                  save_strategy="no", logging_steps=1, disable_tqdm=True, seed=self.seed,
                  gradient_checkpointing=False, bf16=False)
        kw.update(config)
        args = config_cls(**kw)
        extra = {"processing_class": tokenizer if tokenizer is not None else self.tokenizer(),
                 **(trainer_kwargs or {})}

        class _Configured(trainer_cls):  # ctx.trainer_train passes TrainingArguments; the trainer gets its config
            def __init__(self, **kwargs):
                kwargs.pop("optimizers", None)
                kwargs.pop("args", None)
                super().__init__(args=args, **kwargs, **extra)

        _Configured.__name__ = trainer_cls.__name__
        return self.trainer_train(model, dataset, trainer_class=_Configured)

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

        import torch
        from transformers import Trainer, TrainerCallback, TrainingArguments

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
            result.reports.append(gradscan.scan(model, step=step[0]))
            step[0] += 1
            return None

        class _StepLosses(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if micro:
                    result.losses.append(math.fsum(micro))
                    micro.clear()

        from torch.optim.optimizer import register_optimizer_step_pre_hook
        handle = register_optimizer_step_pre_hook(pre_step)
        kw: dict[str, Any] = dict(output_dir=tempfile.mkdtemp(dir=self.workdir), max_steps=3,
                                  per_device_train_batch_size=2, learning_rate=1e-2, report_to="none", use_cpu=True,
                                  save_strategy="no", logging_steps=1, disable_tqdm=True, seed=self.seed)
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

            # The instance's own attribute, on purpose: subclasses' overrides still run (mypy forbids assigning
            # to a method of transformers' Trainer).
            trainer.training_step = recording_training_step  # type: ignore[method-assign]
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
            result.reports.append(gradscan.scan(model, step=step))
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
