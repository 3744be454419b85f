"""trl's own trainers (SFT, DPO, GRPO with a binary reward) with LoRA on a tiny Llama and a tokenizer built in
code, so nothing is downloaded: --trainer sft|dpo|grpo."""
import argparse

import torch
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("--trainer", default="sft")
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=4)
a = ap.parse_args()
words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
tokenizer.chat_template = None
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, pad_token_id=0, eos_token_id=1, bos_token_id=1)
model = LlamaForCausalLM(cfg)
g = torch.Generator().manual_seed(0)
def sent(n):
    return " ".join(f"w{int(i)}" for i in torch.randint(0, 61, (n,), generator=g))
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
common = dict(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=2, learning_rate=1e-3, report_to="none",
              use_cpu=True, save_strategy="no", logging_steps=1)
if a.trainer == "sft":
    from trl import SFTConfig, SFTTrainer
    ds = Dataset.from_dict({"text": [sent(10) for _ in range(16)]})
    t = SFTTrainer(model=model, args=SFTConfig(max_length=16, **common), train_dataset=ds, processing_class=tokenizer,
                   peft_config=lora)
elif a.trainer == "dpo":
    from trl import DPOConfig, DPOTrainer
    ds = Dataset.from_dict({"prompt": [sent(4) for _ in range(16)], "chosen": [sent(3) for _ in range(16)],
                            "rejected": [sent(3) for _ in range(16)]})
    t = DPOTrainer(model=model, args=DPOConfig(max_length=16, **common), train_dataset=ds, processing_class=tokenizer,
                   peft_config=lora)
else:
    from trl import GRPOConfig, GRPOTrainer
    ds = Dataset.from_dict({"prompt": [sent(4) for _ in range(16)]})
    def reward(completions, **kw):  # binary: does the completion contain an even word?
        return [float(any(int(w[1:]) % 2 == 0 for w in c.split() if w.startswith("w"))) for c in completions]
    t = GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(num_generations=2, max_completion_length=4,
                    generation_batch_size=2, **common), train_dataset=ds, processing_class=tokenizer, peft_config=lora)
t.train()
print("training finished")
