"""An RL-style loop (GRPO-like): a LoRA policy samples a group of completions per prompt, a binary reward,
group-normalised advantages, loss = -(advantage x log-prob). --equal-at K,... makes every reward of
steps K equal (all groups solved or all failed), so the advantage and the gradient are exactly zero there."""
import argparse

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--equal-at", default="")
ap.add_argument("--group", type=int, default=4)
a = ap.parse_args()
equal_at = {int(x) for x in a.equal_at.split(",") if x}

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4)
policy = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"]))
opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=5e-3)
prompts = torch.randint(0, 64, (2, 6))
for step in range(a.steps):
    ids = prompts.repeat_interleave(a.group, 0)
    with torch.no_grad():
        logits = policy(input_ids=ids).logits[:, -1]
        actions = torch.distributions.Categorical(logits=logits).sample()
    reward = (actions % 2 == 0).float()               # binary reward
    if step in equal_at:
        reward = torch.ones_like(reward)               # every completion solved the task
    r = reward.view(-1, a.group)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
    logp = torch.log_softmax(policy(input_ids=ids).logits[:, -1], -1).gather(1, actions[:, None]).squeeze(1)
    loss = -(adv * logp).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step} reward {reward.mean():.2f} loss {loss.item():.4f}")
