"""Do memory options keep the gradients in real training scripts that are not in this repository?

    python experiments/real_setups.py --medicalgpt PATH [--json out.json] [--only ID ...] [--keep DIR]

PATH is a checkout (or extracted snapshot) of github.com/shibing624/MedicalGPT. Its own scripts,
``training/supervised_finetuning.py`` (SFT) and ``training/reward_modeling.py`` (reward model), run as a
user runs them (flags only, but for the named patches below), on the CPU and offline, under
``benchsuite watch --signature``, each pair from the same seed; ``benchsuite compare-grads`` then
compares the baseline's gradients with the variant's. The model is a 2-layer Llama built from a config
(``benchsuite.models.tiny_llama_config``) and saved as a local checkpoint, with a byte-level BPE tokenizer
trained here on the data, which is made up here too (MedicalGPT's ShareGPT-style jsonl, unequal lengths).
Nothing is downloaded; everything is written in one temporary folder that is removed at the end
(``--keep DIR`` writes it there instead, to look at the logs and the signature files).

The pairs (``PAIRS``): LoRA SFT without and with ``--gradient_checkpointing True``; the LoRA reward model
without and with it (the library's default, non-reentrant), with reentrant checkpointing requested by
flag, and with reentrant checkpointing and the input-grad hook disabled, the setup behind "None of the
inputs have requires_grad=True. Gradients will be None"; and SFT accumulation, batch 4 x 1 against batch
1 x 4 on sequences of unequal length, at the first and at the second step.

Where a script cannot run as it is, a launcher applies a named patch (``PATCHES``) to the library and then
runs the script with ``runpy`` (the script's file is never changed): every reward-model run needs
"rm-load" (the script passes ``load_in_4bit=False, load_in_8bit=False`` to ``from_pretrained``, which
transformers 5.x rejects), and the fourth reward-model run adds "no-input-hook".
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchsuite import __version__, strictjson
from benchsuite.models import tiny_llama_config

SFT = "training/supervised_finetuning.py"
RM = "training/reward_modeling.py"

# Flags every run of a script gets: local model and data, CPU, a few steps, nothing saved but the final adapter.
COMMON = ["--do_train", "--use_peft", "True", "--target_modules", "all", "--lora_rank", "8", "--lora_alpha", "16",
          "--torch_dtype", "float32", "--learning_rate", "2e-4", "--max_steps", "2", "--logging_steps", "1",
          "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True", "--seed", "42",
          "--dataloader_num_workers", "0"]
SFT_FLAGS = ["--model_max_length", "256"]
RM_FLAGS = ["--max_source_length", "96", "--max_target_length", "32", "--remove_unused_columns", "False",
            "--preprocessing_num_workers", "1"]

# Patches, each applied by a launcher that then runs the script as __main__ (the script's file is untouched):
# "rm-load": reward_modeling.py passes load_in_4bit= and load_in_8bit= to from_pretrained, which transformers 5.x
# no longer accepts (TypeError: GenericForSequenceClassification.__init__() got an unexpected keyword argument
# 'load_in_4bit'); the launcher drops the two when they are False (no quantization asked for), nothing else.
# "no-input-hook": PreTrainedModel.enable_input_require_grads made a no-op (the input-grad hook never installed).
PATCHES = {
    "rm-load": ("_from_pretrained = mu.PreTrainedModel.from_pretrained.__func__\n"
                "def _without_false_quantization(cls, *args, **kwargs):\n"
                "    for key in ('load_in_4bit', 'load_in_8bit'):\n"
                "        if kwargs.get(key) is False:\n"
                "            kwargs.pop(key)\n"
                "    return _from_pretrained(cls, *args, **kwargs)\n"
                "mu.PreTrainedModel.from_pretrained = classmethod(_without_false_quantization)\n"),
    "no-input-hook": "mu.PreTrainedModel.enable_input_require_grads = lambda self: None\n",
}
PATCH_TEXT = {"rm-load": "from_pretrained without load_in_4bit=False/load_in_8bit=False",
              "no-input-hook": "enable_input_require_grads a no-op"}


def launcher(patches: tuple[str, ...]) -> str:
    return ("import runpy, sys\nimport transformers.modeling_utils as mu\n" + "".join(PATCHES[p] for p in patches)
            + "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


RUNS = {
    # id: (script, extra flags, patches)
    "sft-lora": (SFT, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                       "--lora_dropout", "0.05"], ()),
    "sft-lora-ckpt": (SFT, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                            "--lora_dropout", "0.05", "--gradient_checkpointing", "True"], ()),
    "sft-lora-b4a1": (SFT, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                            "--lora_dropout", "0"], ()),
    "sft-lora-b1a4": (SFT, ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4",
                            "--lora_dropout", "0"], ()),
    "rm-lora": (RM, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                     "--lora_dropout", "0.05"], ("rm-load",)),
    "rm-lora-ckpt": (RM, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                          "--lora_dropout", "0.05", "--gradient_checkpointing", "True"], ("rm-load",)),
    "rm-lora-ckpt-reentrant": (RM, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                                    "--lora_dropout", "0.05", "--gradient_checkpointing", "True",
                                    "--gradient_checkpointing_kwargs", '{"use_reentrant": true}'], ("rm-load",)),
    "rm-lora-ckpt-reentrant-no-input-hook": (RM, ["--per_device_train_batch_size", "4",
                                                  "--gradient_accumulation_steps", "1", "--lora_dropout", "0.05",
                                                  "--gradient_checkpointing", "True",
                                                  "--gradient_checkpointing_kwargs", '{"use_reentrant": true}'],
                                             ("rm-load", "no-input-hook")),
}

# id: (baseline run, variant run, signature step, expected verdict, what it checks)
PAIRS = {
    "a-sft-lora-checkpointing": ("sft-lora", "sft-lora-ckpt", 2, "match",
                                 "LoRA SFT, gradient checkpointing off vs on (--gradient_checkpointing True)"),
    "b1-rm-lora-checkpointing": ("rm-lora", "rm-lora-ckpt", 2, "match",
                                 "LoRA reward model, checkpointing off vs on (the library's default)"),
    "b2-rm-lora-reentrant": ("rm-lora", "rm-lora-ckpt-reentrant", 2, "match",
                             "LoRA reward model, checkpointing off vs reentrant checkpointing "
                             "(--gradient_checkpointing_kwargs '{\"use_reentrant\": true}')"),
    "b3-rm-lora-reentrant-no-input-hook": ("rm-lora", "rm-lora-ckpt-reentrant-no-input-hook", 2, "differ",
                                           "LoRA reward model, reentrant checkpointing without the input-grad hook "
                                           "(PATCHED: enable_input_require_grads a no-op)"),
    "c1-sft-accumulation-step1": ("sft-lora-b4a1", "sft-lora-b1a4", 1, "match",
                                  "LoRA SFT, batch 4 x accumulation 1 vs batch 1 x accumulation 4, first step"),
    "c2-sft-accumulation-step2": ("sft-lora-b4a1", "sft-lora-b1a4", 2, "match",
                                  "LoRA SFT, batch 4 x accumulation 1 vs batch 1 x accumulation 4, second step"),
}

_WORDS = ("fever cough headache patient doctor tablet dose daily water rest pain chest throat sleep blood "
          "pressure sugar diet exercise symptom week morning night treatment test result infection allergy "
          "skin heart lung stomach medicine hospital nurse advice take avoid should could often never").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def write_data(folder: Path, seed: int = 0) -> dict:
    """MedicalGPT's jsonl formats: SFT conversations and reward pairs, of unequal lengths."""
    rng = random.Random(seed)
    sft, rm = folder / "sft", folder / "reward"
    sft.mkdir(parents=True)
    rm.mkdir(parents=True)
    sft_rows, rm_rows = [], []
    for _ in range(24):
        q, a = _text(rng, rng.randint(3, 30)), _text(rng, rng.randint(2, 60))
        sft_rows.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        rm_rows.append({"conversations": [{"from": "human", "value": q}],
                        "chosen": _text(rng, rng.randint(2, 20)), "rejected": _text(rng, rng.randint(2, 20))})
    (sft / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    (rm / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rm_rows))
    return {"sft": str(sft), "reward": str(rm), "rows": len(sft_rows), "corpus": [
        c["value"] for r in sft_rows for c in r["conversations"]] + [r["chosen"] for r in rm_rows]
        + [r["rejected"] for r in rm_rows]}


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def write_model(folder: Path, corpus: list[str], seed: int = 0) -> dict:
    """A local checkpoint: a byte-level BPE tokenizer trained on the corpus, a tiny Llama built from a config."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus + ["<|user|>", "<|assistant|>", "<|system|>"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = tiny_llama_config(vocab_size=len(tokenizer), max_position_embeddings=512)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return {"path": str(folder), "vocab_size": len(tokenizer), "hidden_size": cfg.hidden_size,
            "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads}


def command(checkout: Path, work: Path, run_id: str, data: dict, model: dict) -> list[str]:
    script, extra, patches = RUNS[run_id]
    flags = ["--model_name_or_path", model["path"],
             "--train_file_dir", data["sft"] if script == SFT else data["reward"],
             # as scripts/run_rm.sh: without it the reward script's 1% validation split of 24 rows is empty (an error)
             *(["--validation_file_dir", data["reward"]] if script == RM else []),
             "--output_dir", str(work / "out" / run_id), "--cache_dir", str(work / "cache"),
             *COMMON, *(SFT_FLAGS if script == SFT else RM_FLAGS), *extra]
    launch = [sys.executable, "-c", launcher(patches)] if patches else [sys.executable]
    return launch + [script, *flags]


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_HOME": str(work / "hf"), "HF_DATASETS_CACHE": str(work / "hf" / "datasets"),
                "TMPDIR": str(work / "tmp"), "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true",
                "CUDA_VISIBLE_DEVICES": ""})
    return env


def _checkout_facts(checkout: Path) -> dict:
    facts = {"path": str(checkout), "commit": None}
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0:
            facts["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "benchsuite"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_pairs(checkout: Path, work: Path, pair_ids: list[str], log=print) -> dict:
    t_start = time.perf_counter()
    for sub in ("tmp", "out", "signatures", "logs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    data = write_data(work / "data")
    model = write_model(work / "model", data.pop("corpus"))
    env = _env(work)
    wanted = {}  # (run id, step) -> signature file
    for pid in pair_ids:
        base, variant, step, _, _ = PAIRS[pid]
        for rid in (base, variant):
            wanted[(rid, step)] = work / "signatures" / f"{rid}.step{step}.json"
    runs = {}
    for (rid, step), sig in wanted.items():
        cmd = command(checkout, work, rid, data, model)
        watch = [sys.executable, "-m", "benchsuite", "watch", "--signature", str(sig), "--signature-step", str(step),
                 "--"] + cmd
        log(f"[{rid} step {step}] {' '.join(_shown(watch, work, checkout))}")
        t0 = time.perf_counter()
        with open(work / "logs" / f"{rid}.step{step}.log", "w") as out:
            code = subprocess.run(watch, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        text = (work / "logs" / f"{rid}.step{step}.log").read_text(errors="replace")
        runs[f"{rid}.step{step}"] = {"run": rid, "step": step, "exit_code": code,
                                     "seconds": round(time.perf_counter() - t0, 1),
                                     "command": _shown(cmd, work, checkout),
                                     "patches": [PATCH_TEXT[p] for p in RUNS[rid][2]],
                                     "warnings": _warnings(text), "signature_written": sig.exists()}
        if code != 0 or not sig.exists():
            log(f"  FAILED (exit {code}); last lines of its log:\n" + "\n".join(text.splitlines()[-25:]))
    results = {}
    for pid in pair_ids:
        base, variant, step, expected, what = PAIRS[pid]
        a, b = wanted[(base, step)], wanted[(variant, step)]
        entry = {"what": what, "baseline": base, "variant": variant, "step": step, "expected": expected}
        if not (a.exists() and b.exists()):
            entry["verdict"] = "error"
            results[pid] = entry
            continue
        out = work / "signatures" / f"compare-{pid}.json"
        proc = subprocess.run([sys.executable, "-m", "benchsuite", "compare-grads", str(a), str(b), "--json", str(out)],
                              capture_output=True, text=True, env=env)
        entry["exit_code"] = proc.returncode
        entry["report"] = proc.stdout.replace(str(work), "$WORK")
        doc = json.loads(out.read_text()) if out.exists() else {}
        entry.update({k: doc.get(k) for k in ("verdict", "rtol", "max_rel_error", "min_cosine", "worst", "differing",
                                              "no_grad_mismatch", "both_none")})
        entry["parameters"] = len(doc.get("records") or [])
        entry["agrees_with_expected"] = entry.get("verdict") == expected
        results[pid] = entry
        log(f"\n== {pid}: {what}\n{proc.stdout}")
    model = {**model, "path": model["path"].replace(str(work), "$WORK")}
    return {"kind": "real-setups", "checkout": _checkout_facts(checkout), "versions": _versions(), "model": model,
            "data": {k: v for k, v in data.items() if k == "rows"}, "common_flags": COMMON, "sft_flags": SFT_FLAGS,
            "rm_flags": RM_FLAGS, "patches": {k: PATCH_TEXT[k] for k in PATCHES}, "runs": runs, "pairs": results,
            "seconds": round(time.perf_counter() - t_start, 1)}


def _shown(cmd: list[str], work: Path, checkout: Path) -> list[str]:
    """The command as recorded: a launcher's code by its patches, the work folder as $WORK, python as python."""
    out = []
    for c in cmd:
        if c.startswith("import runpy, sys"):
            names = [PATCH_TEXT[p] for p in PATCHES if PATCHES[p] in c]
            out.append(f"<launcher: {'; '.join(names)}; then runpy.run_path(script)>")
        elif c == sys.executable:
            out.append("python")
        else:
            out.append(c.replace(str(work), "$WORK"))
    return out


def _warnings(text: str) -> list[str]:
    """The run's warnings about gradients (each once, from where the warning starts)."""
    keys = ("None of the inputs have requires_grad", "does not require grad")
    seen = []
    for line in text.splitlines():
        for k in keys:
            if k in line:
                head = line[:line.index(k)]
                cut = head.rfind("site-packages/")  # from the library file that warns, without a progress bar
                w = (line[cut + len("site-packages/"):] if cut >= 0 else line[line.index(k):]).strip()[:300]
                if w not in seen:
                    seen.append(w)
    return seen[:5]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python experiments/real_setups.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--medicalgpt", required=True, metavar="PATH", help="a MedicalGPT checkout (or extracted snapshot)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    ap.add_argument("--only", nargs="+", default=None, choices=list(PAIRS), metavar="ID",
                    help=f"some pairs only ({', '.join(PAIRS)})")
    ap.add_argument("--commit", default=None, metavar="SHA",
                    help="the snapshot's commit, to record when PATH is not a git checkout (an extracted archive)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="work in DIR and keep it (logs, signature files); default: a temporary folder, removed")
    args = ap.parse_args(argv)
    checkout = Path(args.medicalgpt).expanduser().resolve()
    missing = [s for s in (SFT, RM) if not (checkout / s).is_file()]
    if missing:
        print(f"{ap.prog}: {checkout} is not a MedicalGPT checkout: {', '.join(missing)} not found", file=sys.stderr)
        return 2
    import importlib.util
    absent = [pip for mod, pip in (("loguru", "loguru"), ("sklearn", "scikit-learn"), ("datasets", "datasets"))
              if importlib.util.find_spec(mod) is None]
    if absent:  # MedicalGPT's scripts import them; benchsuite itself does not need them
        print(f"{ap.prog}: MedicalGPT's scripts import {', '.join(absent)}, not installed here "
              f"(pip install {' '.join(absent)})", file=sys.stderr)
        return 2
    pair_ids = args.only or list(PAIRS)
    if args.keep:
        work = Path(args.keep).expanduser().resolve()
        if work.exists() and any(work.iterdir()):
            print(f"{ap.prog}: --keep {work}: the folder is not empty", file=sys.stderr)
            return 2
        result = run_pairs(checkout, work, pair_ids)
    else:
        tmp = tempfile.mkdtemp(prefix="benchsuite-real-setups-")
        try:
            result = run_pairs(checkout, Path(tmp), pair_ids)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {"benchsuite_version": __version__, **result}
    if args.commit:
        result["checkout"]["commit"] = args.commit
    if args.json:
        Path(args.json).write_text(strictjson.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    bad = [p for p, r in result["pairs"].items() if not r.get("agrees_with_expected")]
    print("\n" + "\n".join(f"{p}: {r.get('verdict')} (expected {r['expected']})" for p, r in result["pairs"].items()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
