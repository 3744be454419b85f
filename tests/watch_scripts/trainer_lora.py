"""A Trainer-based LoRA run, as public fine-tuning scripts write it; flags choose the setup.

--task seqcls (a reward-model-like classifier, default) or causal; --warmup-steps, --scheduler,
--weight-decay, --accum, --lr, --ckpt. --broken: reentrant checkpointing without the input-grad hook,
what transformers 4.35-4.57 do by default for a get_peft_model model (5.x installs the hook itself, so
the script removes it to plant the same failure on every version). --lr 0: nothing can train."""
import argparse
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--broken", action="store_true")
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--task", default="seqcls", choices=["seqcls", "causal"])
ap.add_argument("--lr", type=float, default=1e-2)
ap.add_argument("--warmup-steps", type=int, default=0)
ap.add_argument("--scheduler", default="linear")
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--accum", type=int, default=1)
ap.add_argument("--ckpt", default="auto", choices=["auto", "off", "reentrant", "non-reentrant"])
a = ap.parse_args()

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0, num_labels=2)
if a.task == "seqcls":
    model = get_peft_model(LlamaForSequenceClassification(cfg),
                           LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]))
else:
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(task_type="CAUSAL_LM", r=4, lora_dropout=0.05,
                                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
ids = torch.randint(1, 128, (16, 12))
if a.task == "seqcls":
    data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": int(i % 2)} for i, x in enumerate(ids)]
else:
    data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()} for x in ids]
ckpt = "reentrant" if a.broken else ("off" if a.ckpt == "auto" else a.ckpt)
if ckpt != "off":
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": ckpt == "reentrant"})
    if a.broken and hasattr(model, "disable_input_require_grads"):  # 4.x installs no hook for this model
        model.disable_input_require_grads()
    elif ckpt == "reentrant":
        model.enable_input_require_grads()
args = TrainingArguments(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=2, learning_rate=a.lr,
                         warmup_steps=a.warmup_steps, lr_scheduler_type=a.scheduler, weight_decay=a.weight_decay,
                         gradient_accumulation_steps=a.accum, report_to="none", use_cpu=True, save_strategy="no",
                         logging_steps=1)
Trainer(model=model, args=args, train_dataset=data).train()
print("training finished")
sys.exit(0)
