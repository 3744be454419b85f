"""return_assistant_tokens_mask with a chat template that has no {% generation %} block: the mask is all zeros.

apply_chat_template(..., return_assistant_tokens_mask=True) finds the assistant's tokens only through
{% generation %}...{% endgeneration %} markers in the template. No stock template of the common
families (Llama 3, Qwen 2.5/3, Gemma, Mistral) has them; transformers then logs one warning and returns
an all-zero mask. An SFT preprocessing that labels only the masked tokens (assistant-only loss) sets
every label to -100: the run trains on nothing while the logs look normal. TRL's SFTTrainer refuses
this setup (RuntimeError since 0.19, a patched training template since 1.2); hand-written pipelines do not.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="assistant-mask-no-generation-tag",
    title="return_assistant_tokens_mask with a template lacking {% generation %}: all-zero mask, every label -100",
    references=["huggingface/transformers#34172", "huggingface/transformers#30650", "QwenLM/Qwen3#1522",
                "marin-community/marin#7237", "Liquid4All/liquid-finetune#37"],
    signs=["loss-nonfinite", "loss-zero"],  # what its training log shows (doctor --log)
    family="data",
    tags=["data", "labels", "chat-template", "assistant-only-loss", "silent"],
    applies={"transformers": ">=4.44"},  # return_assistant_tokens_mask arrived in 4.43/4.44
    affected={},
    symptom=Symptom(
        description="warning 'chat template does not contain {% generation %} keyword'; the assistant mask is all "
                    "zeros, so every label is -100",
        warning=r"does not contain .\{% generation %\}. keyword",
        observed="all_labels_masked",
    ),
)

# roles are rendered as words of the toy vocabulary: w0 = user header, w1 = assistant header
PLAIN = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ 'w0 ' + m['content'] + ' <eos> ' }}"
         "{% else %}{{ 'w1 ' + m['content'] + ' <eos> ' }}{% endif %}{% endfor %}")
MARKED = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ 'w0 ' + m['content'] + ' <eos> ' }}"
          "{% else %}{{ 'w1 ' }}{% generation %}{{ m['content'] + ' <eos> ' }}{% endgeneration %}{% endif %}"
          "{% endfor %}")


def _train(ctx, template=PLAIN):
    from transformers import DataCollatorForSeq2Seq

    tokenizer = ctx.tokenizer(chat_template=template)
    model = ctx.text_model()
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q, a in zip(ctx.sentences(4, words=5), ctx.sentences(4, words=3, seed_offset=1))]
    rows = []
    for conv in convs:   # the assistant-only-loss preprocessing of the reports
        enc = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                     "labels": [t if m else -100 for t, m in zip(ids, mask)]})
    labelled = sum(sum(1 for t in r["labels"] if t != -100) for r in rows)
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                               trainer_kwargs={"data_collator": DataCollatorForSeq2Seq(tokenizer)})
    result.extra.update(all_labels_masked=labelled == 0, labelled_tokens=labelled,
                        tokens=sum(len(r["input_ids"]) for r in rows))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("wrap the assistant content of the template in {% generation %}...{% endgeneration %}",
          applies={"transformers": ">=5.25"},
          note="verified on 5.25.0; on 4.44.2 this toy template still gave an all-zero mask (not investigated), "
               "so the range where the fix works is not bisected")
def generation_markers(ctx):
    return _train(ctx, template=MARKED)
