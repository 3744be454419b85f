"""A plain Trainer run of a tiny causal LM whose sequences have different numbers of labelled tokens (3-16),
as a fine-tuning script with padding and label masking would have them: --batch B --accum A.

Batch 4 x accumulation 1 and batch 1 x accumulation 4 see the same 4 sequences in their first optimizer step.
From transformers 4.46 the Trainer normalises the accumulated loss by the step's labelled tokens
(num_items_in_batch), so both give the same gradient; before, each micro-batch's mean loss counted
equally (huggingface/transformers#34191). Runs on 4.3x-5.x: only arguments every one of them takes."""
import argparse
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--accum", type=int, default=1)
a = ap.parse_args()

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0)
model = LlamaForCausalLM(cfg)
g = torch.Generator().manual_seed(1)
data = []
for n in (3, 9, 14, 16):  # labelled tokens per sequence
    ids = torch.randint(1, 128, (16,), generator=g)
    labels = ids.clone()
    labels[n:] = -100
    data.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
args = TrainingArguments(output_dir=a.out, max_steps=1, per_device_train_batch_size=a.batch,
                         gradient_accumulation_steps=a.accum, learning_rate=1e-3, max_grad_norm=0.0,
                         report_to="none", save_strategy="no", logging_steps=1, dataloader_drop_last=False,
                         **({"use_cpu": True} if "use_cpu" in TrainingArguments.__dataclass_fields__ else {"no_cuda": True}))
trainer = Trainer(model=model, args=args, train_dataset=data)
trainer.train()
print("training finished")
sys.exit(0)
