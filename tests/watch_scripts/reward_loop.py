"""A reward model trained with the pairwise loss -logsigmoid(r_chosen - r_rejected), as preference
pipelines do: a BERT-style classifier (its head has a bias) fully fine-tuned; --lora: LoRA on the encoder
with the head trained (modules_to_save). The head's bias cancels in the difference, so its gradient is
exactly zero at every step: that is by construction, not a finding."""
import argparse

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--lora", action="store_true")
a = ap.parse_args()

torch.manual_seed(0)
cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 num_labels=1)
model = BertForSequenceClassification(cfg)
if a.lora:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
chosen, rejected = torch.randint(1, 128, (4, 10)), torch.randint(1, 128, (4, 10))
for step in range(a.steps):
    rewards = model(input_ids=torch.cat([chosen, rejected])).logits.squeeze(-1)
    loss = -F.logsigmoid(rewards[:4] - rewards[4:]).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step} loss {loss.item():.4f}")
