"""trl's own trainers (SFT, DPO, KTO, GRPO with a binary reward) with LoRA on a tiny Llama and a tokenizer built in
code, so nothing is downloaded: --trainer sft|dpo|kto|grpo.

Broken variants: --lora-alpha 0 (every gradient exactly zero), --beta 0 (KTO/DPO: the loss ignores the policy),
--identical (DPO: chosen == rejected, the loss stays at log 2), --truncate (SFT on prompt-completion pairs whose
prompt fills max_length: every label is -100, the loss is NaN), --reward any-even with --num-generations 2 (GRPO:
most groups' rewards are equal, most steps carry no signal). The defaults are healthy: GRPO groups of 4 with a
reward that holds for about half the completions (an occasional group with equal rewards)."""
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
ap.add_argument("--lora-alpha", type=float, default=8)
ap.add_argument("--beta", type=float, default=0.1)
ap.add_argument("--identical", action="store_true")
ap.add_argument("--truncate", action="store_true")
ap.add_argument("--reward", default="first-even", choices=["first-even", "any-even"])
ap.add_argument("--num-generations", type=int, default=4)
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
lora = LoraConfig(r=4, lora_alpha=a.lora_alpha, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
common = dict(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=2, learning_rate=1e-3, report_to="none",
              use_cpu=True, save_strategy="no", logging_steps=1)
if a.trainer == "sft" and a.truncate:
    from trl import SFTConfig, SFTTrainer
    ds = Dataset.from_dict({"prompt": [sent(10) for _ in range(16)], "completion": [sent(4) for _ in range(16)]})
    t = SFTTrainer(model=model, args=SFTConfig(max_length=8, **common), train_dataset=ds, processing_class=tokenizer,
                   peft_config=lora)
elif a.trainer == "sft":
    from trl import SFTConfig, SFTTrainer
    ds = Dataset.from_dict({"text": [sent(10) for _ in range(16)]})
    t = SFTTrainer(model=model, args=SFTConfig(max_length=16, **common), train_dataset=ds, processing_class=tokenizer,
                   peft_config=lora)
elif a.trainer == "dpo":
    from trl import DPOConfig, DPOTrainer
    chosen = [sent(3) for _ in range(16)]
    ds = Dataset.from_dict({"prompt": [sent(4) for _ in range(16)], "chosen": chosen,
                            "rejected": list(chosen) if a.identical else [sent(3) for _ in range(16)]})
    t = DPOTrainer(model=model, args=DPOConfig(max_length=16, beta=a.beta, **common), train_dataset=ds,
                   processing_class=tokenizer, peft_config=lora)
elif a.trainer == "kto":
    from trl import KTOConfig, KTOTrainer
    ds = Dataset.from_dict({"prompt": [sent(4) for _ in range(16)], "completion": [sent(3) for _ in range(16)],
                            "label": [i % 2 == 0 for i in range(16)]})
    t = KTOTrainer(model=model, args=KTOConfig(max_length=16, beta=a.beta, **common), train_dataset=ds,
                   processing_class=tokenizer, peft_config=lora)
else:
    from trl import GRPOConfig, GRPOTrainer
    ds = Dataset.from_dict({"prompt": [sent(4) for _ in range(16)]})
    def reward(completions, **kw):  # binary: is the first word even (about half), or is any word even (most)?
        words = [[int(w[1:]) for w in c.split() if w.startswith("w")] for c in completions]
        if a.reward == "any-even":
            return [float(any(x % 2 == 0 for x in ws)) for ws in words]
        return [float(bool(ws) and ws[0] % 2 == 0) for ws in words]
    n = a.num_generations
    common["per_device_train_batch_size"] = n
    t = GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(num_generations=n, max_completion_length=4,
                    generation_batch_size=n, **common), train_dataset=ds, processing_class=tokenizer, peft_config=lora)
t.train()
print("training finished")
