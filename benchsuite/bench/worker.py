"""One benchmark configuration, run inside a forked child (see grid.py)."""
from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any

from .. import gradscan  # the package loads its torch modules on first use
from ..case import Context
from ..checkpointing import RecomputeCounter, decoder_layers
from ..gradscan.signature import signatures
from ..models import write_chatglm
from .estimate import estimate, shape_of

MODELS = ("tiny-llama", "tiny-qwen2", "tiny-chatglm")
# Elements the gradient signature reads at a time: its transient memory (~40 bytes an element, 2.6 MB)
# stays far below any configuration's peak.
SIGNATURE_CHUNK = 1 << 16
# Sized so that activations dominate weights at the default batch and sequence length: the effect of
# checkpointing is then plainly visible in a CPU measurement.
TINY: dict[str, Any] = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=2048, max_position_embeddings=4096)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def build_model(name: str, workdir: str):
    import torch
    torch.manual_seed(0)
    if name == "tiny-llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=False))
    if name == "tiny-qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM
        return Qwen2ForCausalLM(Qwen2Config(**TINY, tie_word_embeddings=False))
    if name == "tiny-chatglm":
        from transformers import AutoModelForCausalLM

        path = write_chatglm(os.path.join(workdir, "chatglm"), num_layers=4, hidden_size=256, ffn_hidden_size=688,
                             kv_channels=64, num_attention_heads=4, padded_vocab_size=2048, seq_length=4096)
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(name, trust_remote_code=True, torch_dtype=torch.float32)


def _warm_libraries(cfg: dict, device) -> None:
    import gc

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    small = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=4, vocab_size=256)).to(device)
    if cfg["checkpointing"] != "off":
        small.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": cfg["checkpointing"] == "reentrant"})
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg["precision"])
    opt = torch.optim.AdamW(small.parameters(), lr=1e-4)
    ids = torch.randint(1, 256, (2, 32), device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        loss = small(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    del small, opt, loss
    gc.collect()


def _check(cfg: dict) -> None:
    if cfg["precision"] not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {cfg['precision']!r} (fp32, fp16 or bf16)")
    if cfg["checkpointing"] not in ("off", "reentrant", "non-reentrant"):
        raise ValueError(f"unknown checkpointing {cfg['checkpointing']!r} (off, reentrant or non-reentrant)")
    if cfg["adapter"] not in ("full", "lora"):
        raise ValueError(f"unknown adapter {cfg['adapter']!r} (full or lora)")
    if cfg["batch"] % cfg["accumulation"]:
        raise ValueError(f"batch {cfg['batch']} is not divisible by accumulation {cfg['accumulation']}")


def _memory_baseline(cfg: dict, device) -> tuple[int, int]:
    """The memory level before the model exists (CPU: resident set, high-water mark reset; CUDA: allocated,
    peak reset), after one step of a miniature of the same model with the same options: libraries map their
    kernels' code lazily, so that the baseline already holds them and the peak is the model's own."""
    import torch
    _warm_libraries(cfg, device)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    base_rss = _status_kb("VmRSS") * 1024
    if cfg.get("max_memory_mb"):
        limit = _status_kb("VmSize") * 1024 + int(cfg["max_memory_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    base_gpu = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_gpu = torch.cuda.memory_allocated(device)
    return base_rss, base_gpu


def _model(cfg: dict, device):
    """The model as the configuration trains it: train mode, the adapter, checkpointing."""
    model = build_model(cfg["model"], cfg["workdir"]).to(device)
    # from_pretrained returns a model in eval mode, where transformers skips checkpointing altogether
    # (the catalogue's eval-mode-disables-checkpointing): a training benchmark trains.
    model.train()
    model.config.use_cache = False
    if cfg["adapter"] == "lora":
        from peft import get_peft_model
        model = get_peft_model(model, Context(cfg["workdir"]).lora_config(model, "CAUSAL_LM"))
    if cfg["checkpointing"] != "off":
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": cfg["checkpointing"] == "reentrant"})
        if cfg["adapter"] == "lora":
            model.enable_input_require_grads()  # what a working LoRA + checkpointing setup needs
    return model


class _Steps:
    """The training steps of one configuration: forward and backward over the micro-batches, the optimizer
    step, the gradient signatures of the first step, timing (signature passes excluded)."""

    def __init__(self, cfg: dict, model, device, shape, res: dict):
        import torch
        self.cfg, self.model, self.device, self.res = cfg, model, device, res
        self.cuda = device.type == "cuda"
        self.recompute = RecomputeCounter(model)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg["precision"])
        self.scaler = torch.amp.GradScaler(device.type) if cfg["precision"] == "fp16" else None
        self.batch = make_batch(shape.vocab, cfg["batch"], cfg["seq_len"], device)
        self.micro = cfg["batch"] // cfg["accumulation"]
        self.batch["micro_labelled"] = [sum(self.batch["labelled"][k * self.micro:(k + 1) * self.micro])
                                        for k in range(cfg["accumulation"])]
        self.hook = gradscan.GradScanHook(model, policy="record", keep=False) if cfg.get("scan") else None
        self.pairs = gradscan.named_trainable(model)
        self.sig_seconds = 0.0
        self.first = True

    def signature(self, scale: float = 1.0) -> dict:
        t0 = time.perf_counter()
        out = {n: s.to_dict() for n, s in signatures(self.pairs, scale=scale, chunk=SIGNATURE_CHUNK).items()}
        self.sig_seconds += time.perf_counter() - t0
        return out

    def backward_all(self, normalisation: str) -> float:
        """Forward and backward over the micro-batches, the loss normalised over the whole effective batch
        ("token-weighted": each micro-batch's mean loss times its share of the labelled tokens) or, as
        transformers < 4.46 did, each micro-batch's mean divided by the number of micro-batches."""
        import torch
        b, total = self.batch, 0.0
        for k in range(self.cfg["accumulation"]):
            sl = slice(k * self.micro, (k + 1) * self.micro)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                loss = self.model(input_ids=b["input_ids"][sl], attention_mask=b["attention_mask"][sl],
                                  labels=b["labels"][sl], use_cache=False).loss
            if normalisation == "token-weighted":
                loss = loss * (b["micro_labelled"][k] / b["total_labelled"])
            else:
                loss = loss / self.cfg["accumulation"]
            with self.recompute.backward():
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
        return total

    def micro_mean_signature(self) -> None:
        """What per-micro-batch-mean normalisation would do to the same first step: its gradients are
        compared with the baseline too (they are not the ones this configuration trains with)."""
        self.backward_all("micro-mean")
        scale = 1.0 / self.scaler.get_scale() if self.scaler else 1.0
        self.res["gradient_signature_micro_mean"] = self.signature(scale)
        self.opt.zero_grad(set_to_none=True)

    def step(self, scan: bool) -> float:
        total = self.backward_all("token-weighted")
        if self.scaler and (scan or self.first):
            self.scaler.unscale_(self.opt)
        if self.first:  # the gradients of the first optimizer step, compared with the baseline's
            self.res["gradient_signature"] = self.signature()
            self.first = False
        if scan and self.hook is not None:
            self.hook()
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total

    def timed(self, n: int, scan: bool) -> tuple[list[float], list[float], int]:
        import torch
        times, losses, c0 = [], [], self.recompute.calls
        for _ in range(n):
            if self.cuda:
                torch.cuda.synchronize(self.device)
            t0, s0 = time.perf_counter(), self.sig_seconds
            losses.append(self.step(scan))
            if self.cuda:
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - t0 - (self.sig_seconds - s0))  # the signature is not the step's
        return times, losses, self.recompute.calls - c0


def _record_steps(res: dict, cfg: dict, times: list[float], losses: list[float], ncalls: int) -> None:
    res["step_time_s"] = statistics.median(times)
    res["step_times_s"] = times
    res["step_time_min_s"], res["step_time_max_s"] = min(times), max(times)
    res["step_time_spread_fraction"] = (max(times) - min(times)) / res["step_time_s"]
    res["tokens_per_s"] = cfg["batch"] * cfg["seq_len"] / res["step_time_s"]
    res["losses"] = losses
    res["loss_finite"] = all(x == x and abs(x) != float("inf") for x in losses)
    res["recomputed_module_calls_per_step"] = ncalls / max(1, cfg["steps"])
    res["recompute_observed"] = ncalls > 0


def _record_memory(res: dict, device, base_rss: int, base_gpu: int) -> None:
    import torch
    if device.type == "cuda":
        res["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) - base_gpu
        res["peak_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        res["peak_memory_source"] = "torch.cuda.max_memory_allocated"
        res["nvml_used_bytes"] = _nvml_process_bytes(device)
    else:
        res["peak_memory_bytes"] = _status_kb("VmHWM") * 1024 - base_rss
        res["peak_memory_source"] = "process peak RSS (VmHWM) above the level before the model was built"


def run(cfg: dict) -> dict:
    """One configuration: its estimate, peak memory, step times and first-step gradient signatures."""
    import torch
    _check(cfg)
    device = torch.device(cfg.get("device", "cpu"))
    base_rss, base_gpu = _memory_baseline(cfg, device)
    model = _model(cfg, device)
    res: dict = {}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = shape_of(model, trainable)
    res.update(estimate(shape, batch=cfg["batch"], seq=cfg["seq_len"], accumulation=cfg["accumulation"],
                        precision=cfg["precision"], checkpointing=cfg["checkpointing"]))
    res["params"], res["trainable_params"], res["layers"] = shape.params, shape.trainable, len(decoder_layers(model))
    steps = _Steps(cfg, model, device, shape, res)
    res["sequence_lengths"], res["labelled_tokens"] = steps.batch["lengths"], steps.batch["labelled"]
    if cfg["accumulation"] > 1:
        steps.micro_mean_signature()
    steps.timed(cfg["warmup"], False)
    _record_steps(res, cfg, *steps.timed(cfg["steps"], False))
    _record_memory(res, device, base_rss, base_gpu)
    res["gradient_signature_s"] = steps.sig_seconds
    if steps.hook is not None:
        scan_times, _, _ = steps.timed(cfg["steps"], True)
        res["scan_step_time_s"] = statistics.median(scan_times)
        res["scan_seconds_per_step"] = steps.hook.seconds / max(1, steps.hook.scans)
        res["scan_overhead_fraction"] = res["scan_seconds_per_step"] / res["step_time_s"]
    return res


def make_batch(vocab: int, rows: int, seq: int, device) -> dict:
    """A fixed-seed batch with realistic, unequal sequence lengths: rows spread evenly from seq down to
    seq/8 tokens (4 rows of 512: 512, 363, 213, 64), right-padded (attention mask 0, id 0), the first
    quarter of each row a prompt that is not labelled, and padding not labelled either (-100).
    ``micro_labelled``/``total_labelled``: the tokens the loss counts (labels after the causal shift)
    per row and in all."""
    import torch
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (rows, seq), generator=g)
    low = max(2, seq // 8)
    lengths = [seq - round(i * (seq - low) / max(1, rows - 1)) for i in range(rows)]
    mask = torch.zeros(rows, seq, dtype=torch.long)
    labels = torch.full((rows, seq), -100, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        start = min(n // 4, n - 2)
        labels[i, start:n] = ids[i, start:n]
        ids[i, n:] = 0
    labelled = [int((labels[i, 1:] != -100).sum()) for i in range(rows)]
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "lengths": lengths, "labelled": labelled, "total_labelled": sum(labelled), "micro_labelled": None}


def _nvml_process_bytes(device) -> int | None:
    """This process's memory on the device as NVML sees it (None where NVML cannot say)."""
    try:
        import pynvml
        import torch
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            u = pynvml.nvmlDeviceGetUUID(h)
            u = u.decode() if isinstance(u, bytes) else u
            if uuid.replace("GPU-", "") in u:
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == os.getpid():
                        return p.usedGpuMemory
        return None
    except Exception:
        return None
