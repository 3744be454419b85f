"""Several models trained in turn in one process, one Trainer each, as sweeps, k-fold and comparison scripts do:
--runs healthy,alpha0,bf16,warmup,lr0 (any order, repeats allowed). Every run is a tiny Llama with the same
parameter names: healthy (LoRA), alpha0 (LoRA with lora_alpha=0: every gradient is exactly zero), bf16 (a full
fine-tune of bfloat16 weights at lr 2e-5: the norm weights' updates round away), warmup (a warmup of 100000
steps: the learning rate never rises), lr0 (learning_rate=0)."""
import argparse

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--runs", default="healthy,healthy,healthy")
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=6)
a = ap.parse_args()

cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0)
for i, kind in enumerate(a.runs.split(",")):
    torch.manual_seed(i)
    base = LlamaForCausalLM(cfg)
    lr, warmup = 1e-2, 0
    if kind == "bf16":
        model, lr = base.to(torch.bfloat16), 2e-5
    else:
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=0 if kind == "alpha0" else 8,
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    if kind == "warmup":
        lr, warmup = 1e-3, 100000
    if kind == "lr0":
        lr = 0.0
    ids = torch.randint(1, 128, (16, 12))
    data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()} for x in ids]
    args = TrainingArguments(output_dir=f"{a.out}/{i}", max_steps=a.steps, per_device_train_batch_size=2,
                             learning_rate=lr, warmup_steps=warmup, report_to="none", use_cpu=True,
                             save_strategy="no", logging_steps=1, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data).train()
    print(f"run {i} ({kind}) finished", flush=True)
print("all runs finished")
