"""DDP + LoRA on a module the loss never uses: "Expected to have finished reduction in the prior iteration".

target_modules=["dense"] on an ESM encoder (EsmModel) also matches pooler.dense. The user's loss reads
last_hidden_state only, so the pooler's lora_A/lora_B never get a gradient; DistributedDataParallel with
find_unused_parameters=False (accelerate's and plain DDP's default) waits for them, and the next forward
raises. One GPU works, which is how the reports describe it. Reproduced with two ranks under torchrun
(gloo on the CPU; nccl with a GPU per rank), a tiny EsmModel built from a config, and the user's setup:
get_peft_model(EsmModel, LoraConfig(target_modules=["dense"])).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="ddp-lora-unused-pooler-reduction",
    title="DDP + LoRA targeting 'dense' (pooler unused by the loss): Expected to have finished reduction "
          "in the prior iteration before starting a new one",
    references=["huggingface/peft#951", "huggingface/peft#393"],
    family="distributed",
    tags=["lora", "ddp", "distributed", "unused-parameters", "crash"],
    affected={},  # DDP's reducer behaves so on every torch release; peft matches pooler.dense by name
    symptom=Symptom(
        description="RuntimeError at the second step under DDP: the LoRA weights of pooler.dense did not receive "
                    "a gradient, since the loss uses last_hidden_state only",
        exception="RuntimeError",
        message=r"Expected to have finished reduction in the prior iteration",
    ),
)


def _esm(pooler=True):
    import torch
    from transformers import EsmConfig, EsmModel
    torch.manual_seed(0)
    cfg = EsmConfig(vocab_size=33, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=64, pad_token_id=1, mask_token_id=32,
                    position_embedding_type="absolute")
    return EsmModel(cfg, add_pooling_layer=pooler)


def _train_rank(ctx, target_modules=("dense",), pooler=True, find_unused=False):
    import torch
    from peft import LoraConfig, get_peft_model

    target = list(target_modules) if isinstance(target_modules, (list, tuple)) else target_modules
    model = get_peft_model(_esm(pooler), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                     target_modules=target))
    model.to(ctx.device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=find_unused, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
    g = torch.Generator().manual_seed(ctx.rank)  # each rank its own shard of the data
    batch = {"input_ids": torch.randint(4, 30, (2, 12), generator=g).to(ctx.device),
             "target": torch.randn(2, 64, generator=g).to(ctx.device)}

    def loss_fn(m, b):  # the user's objective: an embedding read from last_hidden_state (the pooler is not used)
        hidden = ddp(input_ids=b["input_ids"]).last_hidden_state
        return torch.nn.functional.mse_loss(hidden.mean(dim=1), b["target"])

    return ctx.train(model, batch=batch, steps=2, loss_fn=loss_fn)


def _run(ctx, **options):
    return ctx.torchrun(_train_rank, nproc=2, **options)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("do not put adapters on modules the loss does not use: target the encoder's dense layers only "
          "(target_modules=r'.*encoder.*\\.dense')")
def encoder_only(ctx):
    return _run(ctx, target_modules=r".*encoder.*\.dense")


@case.fix("build the encoder without the unused pooler (EsmModel(..., add_pooling_layer=False))")
def no_pooler(ctx):
    return _run(ctx, pooler=False)


@case.fix("DDP(find_unused_parameters=True) (accelerate: DistributedDataParallelKwargs)", works=False,
          note="the error goes away, but pooler.dense's lora_A/lora_B stay trainable and never get a gradient: "
               "they are saved at their initialisation (lora_B all zero), and every step pays for the search")
def find_unused(ctx):
    return _run(ctx, find_unused=True)
