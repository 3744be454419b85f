"""A Trainer-based LoRA sequence-classification run; --broken: reentrant checkpointing, no input hook.

--broken is what transformers 4.35-4.57 do by default for a get_peft_model model; 5.x installs the
input hook itself, so the script removes it to plant the same failure on every version."""
import argparse
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForSequenceClassification, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--broken", action="store_true")
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=4)
a = ap.parse_args()

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0, num_labels=2)
model = get_peft_model(LlamaForSequenceClassification(cfg),
                       LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]))
ids = torch.randint(1, 128, (8, 12))
data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": int(i % 2)} for i, x in enumerate(ids)]
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": bool(a.broken)})
if a.broken:
    model.disable_input_require_grads()
args = TrainingArguments(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=2, learning_rate=1e-2,
                         report_to="none", use_cpu=True, save_strategy="no", logging_steps=1)
Trainer(model=model, args=args, train_dataset=data).train()
print("training finished")
sys.exit(0)
