"""accelerator.gather() in a distributed evaluation loop counts padded duplicates: the metric is wrong.

An eval DataLoader prepared by accelerate gives every rank the same number of batches (even_batches=True):
when the dataset does not divide evenly across ranks, the last batches are completed with samples taken
again from the start of the dataset. accelerator.gather() returns those duplicates too, so a metric
computed over the gathered predictions scores 12 samples for a 9-sample eval set, and the eval loss and
accuracy differ from the single-process values, with no warning. Reproduced with two ranks under torchrun
(accelerate's MULTI_CPU state on gloo; on a GPU node, MULTI_GPU on nccl), a tiny sequence classifier and
9 eval rows, batch size 2 per rank.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="accelerate-gather-eval-duplicates",
    title="Distributed eval with accelerator.gather(): padded duplicate samples are scored, the metric is wrong",
    references=["huggingface/accelerate#226", "huggingface/accelerate#350", "huggingface/trl#7010"],
    family="distributed",
    tags=["accelerate", "evaluation", "metrics", "distributed", "silent"],
    affected={},  # gather() returns the padding by design; gather_for_metrics drops it
    symptom=Symptom(
        description="the eval loss computed from accelerator.gather() outputs differs from the same model's loss over "
                    "the eval set in one process: duplicated samples from the padded last batches are counted",
        observed="metric_wrong",
    ),
)

N_EVAL = 9


def _train_rank(ctx, how="gather"):
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    acc = Accelerator(cpu=ctx.backend != "nccl")  # picks up the torchrun process group
    model = ctx.seq_cls_model(num_labels=2).eval()
    rows = ctx.dataset(model, n=N_EVAL, task="seq_cls")
    with torch.no_grad():  # the reference: every eval row once, in this process
        ref = model(input_ids=torch.stack([r["input_ids"] for r in rows]),
                    attention_mask=torch.stack([r["attention_mask"] for r in rows]))
        labels = torch.stack([r["labels"] for r in rows])
        ref_losses = torch.nn.functional.cross_entropy(ref.logits, labels, reduction="none")
        ref_acc = (ref.logits.argmax(-1) == labels).float().mean().item()

    model, loader = acc.prepare(model, DataLoader(rows, batch_size=2))
    losses, correct, batch_means = [], [], []
    with torch.no_grad():
        for batch in loader:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="none")
            hit = (out.logits.argmax(-1) == batch["labels"]).float()
            if how == "gather":  # as reported: gather every rank's per-sample values
                losses.append(acc.gather(loss))
                correct.append(acc.gather(hit))
            elif how == "gather_for_metrics":
                loss, hit = acc.gather_for_metrics((loss, hit))
                losses.append(loss)
                correct.append(hit)
            elif how == "truncate":  # gather, then cut the padding off (accelerate#350's workaround)
                losses.append(acc.gather(loss))
                correct.append(acc.gather(hit))
            elif how == "rank_mean":  # reduce on the rank first, then gather_for_metrics the scalar
                batch_means.append(acc.gather_for_metrics(torch.stack([loss.mean(), hit.mean()]).unsqueeze(0)))
    if how == "rank_mean":
        means = torch.cat(batch_means)
        eval_loss, accuracy, scored = means[:, 0].mean().item(), means[:, 1].mean().item(), None
    else:
        loss_all, hit_all = torch.cat(losses), torch.cat(correct)
        if how == "truncate":
            loss_all, hit_all = loss_all[:N_EVAL], hit_all[:N_EVAL]
        eval_loss, accuracy, scored = loss_all.mean().item(), hit_all.mean().item(), int(loss_all.numel())
    ref_loss = ref_losses.mean().item()
    return ctx.observed(metric_wrong=abs(eval_loss - ref_loss) > 1e-5, eval_loss=eval_loss, reference_loss=ref_loss,
                        accuracy=accuracy, reference_accuracy=ref_acc, samples_scored=scored, eval_rows=N_EVAL)


def _run(ctx, how="gather"):
    return ctx.torchrun(_train_rank, nproc=2, how=how)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("accelerator.gather_for_metrics(...) instead of accelerator.gather(...)")
def gather_for_metrics(ctx):
    return _run(ctx, how="gather_for_metrics")


@case.fix("gather, then truncate to len(eval_dataset) (the manual workaround before gather_for_metrics)")
def truncate(ctx):
    return _run(ctx, how="truncate")


@case.fix("average on each rank first, then gather_for_metrics the per-batch means", works=False,
          note="gather_for_metrics removes the padding by slicing samples; a rank-local mean has already folded "
               "the duplicates in, and on the last batch the slice keeps rank 0's mean only (huggingface/trl#7010)")
def rank_mean(ctx):
    return _run(ctx, how="rank_mean")
