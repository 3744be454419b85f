"""A hand-written loop on a LoRA model. --nan-at K plants a NaN in one gradient at step K;
--frozen loads the adapter with PeftModel.from_pretrained (no is_trainable) and trains the head only;
--exit-code N ends the script with that code after training."""
import argparse
import sys
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--nan-at", type=int, default=-1)
ap.add_argument("--frozen", action="store_true")
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--exit-code", type=int, default=0)
ap.add_argument("--hidden", type=int, default=32)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--seq", type=int, default=12)
a = ap.parse_args()

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=128, hidden_size=a.hidden, intermediate_size=2 * a.hidden, num_hidden_layers=a.layers,
                  num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0)
lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
if a.frozen:
    with tempfile.TemporaryDirectory() as d:
        get_peft_model(LlamaForCausalLM(cfg), lora).save_pretrained(d)
        model = PeftModel.from_pretrained(LlamaForCausalLM(cfg), d)
    model.base_model.model.lm_head.weight.requires_grad_(True)
else:
    model = get_peft_model(LlamaForCausalLM(cfg), lora)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
ids = torch.randint(1, 128, (2, a.seq))
import time  # noqa: E402

t0 = time.perf_counter()
for step in range(a.steps):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    if step == a.nan_at:
        target = model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight
        target.grad[0, 0] = float("nan")
    opt.step()
    opt.zero_grad()
    print(f"step {step} loss {loss.item():.4f}")
print(f"train loop {time.perf_counter() - t0:.3f} s for {a.steps} steps")
sys.exit(a.exit_code)
