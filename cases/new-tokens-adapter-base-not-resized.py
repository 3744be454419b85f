"""An adapter trained after adding tokens, loaded onto the original base: size mismatch for embed_tokens/lm_head.

Adding tokens to the tokenizer and calling resize_token_embeddings grows embed_tokens and lm_head; with
modules_to_save=["embed_tokens", "lm_head"] (or peft's save_embedding_layers) the adapter stores the
resized matrices. PeftModel.from_pretrained onto the base model as downloaded, with its original
vocabulary, then fails in load_state_dict: "size mismatch for ...embed_tokens...: copying a param with
shape [V+n, d] from checkpoint, the shape in current model is [V, d]". The base has to be resized to
the tokenizer saved with the adapter first.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="new-tokens-adapter-base-not-resized",
    title="PeftModel.from_pretrained after adding tokens: RuntimeError size mismatch for embed_tokens "
          "(base model not resized)",
    references=["huggingface/peft#1700", "huggingface/peft#838", "huggingface/peft#1457", "huggingface/peft#2898",
                "unslothai/unsloth#237", "unslothai/unsloth#1343", "oobabooga/textgen#959"],
    family="save-load-merge",
    tags=["lora", "peft", "load", "new-tokens", "modules-to-save", "crash"],
    affected={},
    symptom=Symptom(description="RuntimeError: Error(s) in loading state_dict ... size mismatch for "
                                "...embed_tokens...", exception="RuntimeError", message=r"size mismatch.*embed_tokens"),
)

NEW_TOKENS = ["<tool_call>", "</tool_call>", "<think>"]


def _load(ctx, resize_first=False):
    import os

    import torch
    from peft import PeftModel

    tokenizer = ctx.tokenizer()
    tokenizer.add_tokens(NEW_TOKENS, special_tokens=True)
    tok_dir = os.path.join(ctx.workdir, "tokenizer")
    if not os.path.exists(tok_dir):
        tokenizer.save_pretrained(tok_dir)
    trained = ctx.text_model()
    trained.resize_token_embeddings(len(tokenizer))
    path = ctx.saved_adapter(base=trained, modules_to_save=["embed_tokens", "lm_head"])

    base = ctx.text_model()  # the base model as downloaded: original vocabulary
    if resize_first:
        from transformers import AutoTokenizer
        base.resize_token_embeddings(len(AutoTokenizer.from_pretrained(tok_dir)))
    model = PeftModel.from_pretrained(base, path)
    ids = tokenizer(" ".join(["w1", *NEW_TOKENS]), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return ctx.observed(loaded_vocab=int(logits.shape[-1]), size_mismatch=False)


@case.trigger
def trigger(ctx):
    return _load(ctx)


@case.fix("base.resize_token_embeddings(len(tokenizer saved with the adapter)) before PeftModel.from_pretrained")
def resize_first(ctx):
    return _load(ctx, resize_first=True)
