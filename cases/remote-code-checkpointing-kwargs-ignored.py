"""Old-format remote code: gradient_checkpointing_kwargs are silently ignored.

From 4.36 transformers falls back to the old _set_gradient_checkpointing(module, value) API for
remote code that still defines it, warns "You are using an old version of the checkpointing format
... (We will also silently ignore gradient_checkpointing_kwargs ...)", and the model keeps calling
torch.utils.checkpoint its own way: a requested use_reentrant=False is ignored and it runs reentrant.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="remote-code-checkpointing-kwargs-ignored",
    title="Old-format remote code: gradient_checkpointing_kwargs={'use_reentrant': False} silently ignored",
    references=["shibing624/MedicalGPT#341", "QwenLM/Qwen#1143"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "remote-code", "silent"],
    affected={},
    applies={"transformers": ">=4.36"},  # 4.35.x raises instead: remote-code-old-checkpointing-enable
    symptom=Symptom(
        description="'old version of the checkpointing format' warning, and torch.utils.checkpoint still runs "
                    "reentrant although use_reentrant=False was requested",
        warning=r"old version of the checkpointing format",
        observed="ran_reentrant",
    ),
)


def _train(ctx, patch_modeling=False):
    import os
    import shutil

    import torch.utils.checkpoint as cp

    path = ctx.chatglm_path()
    if patch_modeling:  # what users do: edit the remote code's checkpoint call (in a copy of the folder)
        path = shutil.copytree(path, os.path.join(ctx.workdir, "chatglm-patched"))
        f = os.path.join(path, "modeling_chatglm.py")
        text = open(f).read()
        old = "torch.utils.checkpoint.checkpoint(layer, hidden_states, attention_mask)"
        assert old in text
        open(f, "w").write(text.replace(old, old[:-1] + ", use_reentrant=False)"))
    model = ctx.chatglm("causal", path=path)
    modes = []
    real = cp.checkpoint

    def observing(fn, *args, **kwargs):  # records the mode, then runs the real checkpoint
        modes.append(kwargs.get("use_reentrant"))
        return real(fn, *args, **kwargs)

    cp.checkpoint = observing
    try:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        result = ctx.train(model)
    finally:
        cp.checkpoint = real
    # use_reentrant=None is torch's default: reentrant through every release that reproduces this.
    result.extra["checkpoint_calls"] = len(modes)
    result.extra["ran_reentrant"] = any(m is None or m is True for m in modes)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("edit the remote modeling file to pass use_reentrant=False to its checkpoint call")
def patch_remote_code(ctx):
    return _train(ctx, patch_modeling=True)
