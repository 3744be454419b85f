"""A hand-written training loop on a tiny Llama, the way fine-tuning scripts write it; flags choose the setup.

Healthy setups: LoRA (default), --lora-embed (LoRA on the embeddings too), --full (full fine-tune),
--warmup N with --schedule linear|cosine, --weight-decay, --accum N, --ckpt reentrant|non-reentrant
(with the input-grad hook), --use-dora, --resume (an adapter trained, saved and loaded back with is_trainable=True).
Broken ones: --nan-at K (a NaN in one gradient at step K), --frozen (adapter loaded without
is_trainable, head trained), --train-head (the LM head trains too), --optimizer-before-peft, --lr 0, --dtype bfloat16 with --full (updates
round away), --lora-alpha 0, --no-input-grads with --ckpt reentrant, --crash-before-step, --mask-labels (every
label -100: the loss is NaN), --full --dtype float16 (fp16 weights with AdamW and no GradScaler: the loss diverges),
--warmup N larger than --steps (the learning rate never rises), --sched-every K (the scheduler stepped once per K
optimizer steps, as per epoch, with --schedule torch-warmup). Healthy again: --amp float16 (fp32 weights, fp16 autocast and a GradScaler) or
--amp bfloat16.
"""
import argparse
import math
import sys
import tempfile
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

ap = argparse.ArgumentParser()
ap.add_argument("--nan-at", type=int, default=-1)
ap.add_argument("--frozen", action="store_true")
ap.add_argument("--train-head", action="store_true")
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--exit-code", type=int, default=0)
ap.add_argument("--hidden", type=int, default=32)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--seq", type=int, default=12)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--targets", default="q_proj,v_proj")
ap.add_argument("--lora-embed", action="store_true")
ap.add_argument("--lora-alpha", type=float, default=8)
ap.add_argument("--full", action="store_true")
ap.add_argument("--use-dora", action="store_true")
ap.add_argument("--dtype", default="float32")
ap.add_argument("--lr", type=float, default=1e-2)
ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--warmup", type=int, default=0)
ap.add_argument("--schedule", default="constant", choices=["constant", "linear", "cosine", "torch-warmup"])
ap.add_argument("--accum", type=int, default=1)
ap.add_argument("--ckpt", default="off", choices=["off", "reentrant", "non-reentrant"])
ap.add_argument("--no-input-grads", action="store_true")
ap.add_argument("--resume", action="store_true")
ap.add_argument("--optimizer-before-peft", action="store_true")
ap.add_argument("--crash-before-step", action="store_true")
ap.add_argument("--mask-labels", action="store_true")
ap.add_argument("--amp", default="", choices=["", "float16", "bfloat16"])
ap.add_argument("--sched-every", type=int, default=1)
a = ap.parse_args()

torch.manual_seed(0)
dtype = getattr(torch, a.dtype)
cfg = LlamaConfig(vocab_size=128, hidden_size=a.hidden, intermediate_size=2 * a.hidden, num_hidden_layers=a.layers,
                  num_attention_heads=4, num_key_value_heads=4, pad_token_id=0)
targets = a.targets.split(",") + (["embed_tokens"] if a.lora_embed else [])
lora = LoraConfig(r=4, lora_alpha=a.lora_alpha, target_modules=targets, use_dora=a.use_dora)
base = LlamaForCausalLM(cfg).to(dtype)
early_optimizer = torch.optim.AdamW(base.parameters(), lr=a.lr) if a.optimizer_before_peft else None
if a.full:
    model = base
elif a.frozen or a.resume:
    with tempfile.TemporaryDirectory() as d:
        trained = get_peft_model(LlamaForCausalLM(cfg), lora)
        with torch.no_grad():  # an adapter that has been trained: lora_B is no longer zero
            for n, p in trained.named_parameters():
                if "lora_B" in n or "lora_embedding_A" in n:
                    p.normal_(0, 0.02)
        trained.save_pretrained(d)
        model = PeftModel.from_pretrained(base, d, is_trainable=a.resume)
    if a.frozen:
        model.base_model.model.lm_head.weight.requires_grad_(True)
else:
    model = get_peft_model(base, lora)
if a.train_head:
    model.base_model.model.lm_head.weight.requires_grad_(True)
if a.ckpt != "off":
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": a.ckpt == "reentrant"})
    if a.no_input_grads:
        model.disable_input_require_grads()
    elif a.ckpt == "reentrant":
        model.enable_input_require_grads()
model.train()
params = [p for p in model.parameters() if p.requires_grad]
if early_optimizer is not None:
    opt = early_optimizer
elif a.optimizer == "sgd":
    opt = torch.optim.SGD(params, lr=a.lr, weight_decay=a.weight_decay)
else:
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
if a.schedule == "linear":
    sched = get_linear_schedule_with_warmup(opt, a.warmup, a.steps)
elif a.schedule == "cosine":
    sched = get_cosine_schedule_with_warmup(opt, a.warmup, a.steps)
elif a.schedule == "torch-warmup":  # torch's own warmup, from 1e-4 of the learning rate over --warmup steps
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-4, total_iters=a.warmup)
else:
    sched = None
ids = torch.randint(1, 128, (a.batch * a.accum, a.seq))
labels = torch.full_like(ids, -100) if a.mask_labels else ids
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) if a.amp == "float16" else None
if a.crash_before_step:
    raise ValueError("the dataset has no 'text' column")

t0 = time.perf_counter()
for step in range(a.steps):
    for micro in range(a.accum):
        chunk = ids[micro * a.batch:(micro + 1) * a.batch]
        with torch.autocast("cpu", dtype=getattr(torch, a.amp or "float32"), enabled=bool(a.amp)):
            loss = model(input_ids=chunk, labels=labels[micro * a.batch:(micro + 1) * a.batch]).loss / a.accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if step == a.nan_at:
        target = model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight
        target.grad[0, 0] = float("nan")
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if sched is not None and (step + 1) % a.sched_every == 0:
        sched.step()
    opt.zero_grad()
    print(f"step {step} loss {loss.item() * a.accum:.4f}" + ("" if math.isfinite(loss.item()) else " (non-finite)"))
print(f"train loop {time.perf_counter() - t0:.3f} s for {a.steps} steps")
sys.exit(a.exit_code)
