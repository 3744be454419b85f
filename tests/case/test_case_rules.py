"""The rules a case's verdict rests on (issue 18), each checked on a small case file run through the real
harness: a scenario without an outcome is an error, a fix that trains nothing does not work, a declaration
that cannot be right is a load error, and the examples in docs/adding-a-case.md run as written."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchsuite.harness.discover import case_files, default_cases_dir, load_case
from benchsuite.harness.execute import execute

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adding-a-case.md"


def write(folder: Path, case_id: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case_id}.py"
    path.write_text(textwrap.dedent(source))
    return path


def run(folder: Path, case_id: str, source: str) -> dict:
    return execute(write(folder, case_id, source))


def fix(result: dict, name: str) -> dict:
    return next(f for f in result["fixes"] if f["name"] == name)


# ---------------------------------------------------------------- 1. no outcome, no verdict

FORGOT_RETURN = """
    from benchsuite.case import Case, Symptom
    case = Case(id="forgot-return", affected={"transformers": "<5"}, title="probe", references=["x/y#1"],
                symptom=Symptom(description="flag", observed="flag"))

    @case.trigger
    def trigger(ctx):
        ctx.train(ctx.causal_model(), steps=1)      # no return
"""


def test_trigger_that_returns_nothing_is_an_error(tmp_path):
    res = run(tmp_path, "forgot-return", FORGOT_RETURN)
    assert res["status"] == "error"
    assert "trigger 'trigger' returned None" in res["reason"] and "ctx.observed" in res["reason"]
    assert "basis" not in res  # no verdict, so nothing claims to be its basis


FORGOT_RETURN_TORCH = """
    from benchsuite.case import Case, Symptom
    case = Case(id="forgot-return", title="probe", references=["x/y#1"],
                symptom=Symptom(description="flag", observed="flag"))

    @case.trigger
    def trigger(ctx):
        import torch
        lin = torch.nn.Linear(3, 1)
        ctx.train(lin, batch=torch.randn(4, 3), loss_fn=lambda m, b: m(b).pow(2).mean(), steps=1)  # no return
"""


def test_trigger_that_returns_nothing_fails_the_run(tmp_path):
    write(tmp_path, "forgot-return", FORGOT_RETURN_TORCH)  # torch only: the runner starts without transformers
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "run", "forgot-return", "--cases-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"forgot-return\s+error", proc.stdout)


def test_fix_that_returns_something_else_is_an_error(tmp_path):
    res = run(tmp_path, "fix-returns-dict", """
        from benchsuite.case import Case, Symptom
        case = Case(id="fix-returns-dict", title="probe", references=["x/y#1"],
                    symptom=Symptom("KeyError", exception="KeyError"))

        @case.trigger
        def trigger(ctx):
            raise KeyError("boom")

        @case.fix("returns the losses instead of the result")
        def returns_dict(ctx):
            result = ctx.train(ctx.causal_model(), steps=1)
            return {"losses": result.losses}

        @case.fix("returns nothing")
        def returns_none(ctx):
            ctx.causal_model()
    """)
    assert res["status"] == "error"
    assert "fix 'returns_dict' returned a dict, not an outcome" in res["reason"]
    assert "fix 'returns_none' returned None" in res["reason"]
    for name in ("returns_dict", "returns_none"):
        f = fix(res, name)
        assert f["works"] is None and f["agrees"] is None and f["error"]


def test_observed_outcome_for_a_scenario_with_nothing_to_train(tmp_path):
    res = run(tmp_path, "load-only", """
        from benchsuite.case import Case, Symptom
        case = Case(id="load-only", title="a config flag the model loads with", references=["x/y#1"],
                    symptom=Symptom("use_cache is on after loading", observed="cache_on"))

        @case.trigger
        def trigger(ctx):
            return ctx.observed(cache_on=bool(ctx.causal_model().config.use_cache))

        @case.fix("switch it off")
        def off(ctx):
            model = ctx.causal_model()
            model.config.use_cache = False
            return ctx.observed(cache_on=bool(model.config.use_cache))
    """)
    assert res["status"] == "reproduced", res
    assert res["basis"].startswith("symptom seen (nothing to train: ctx.observed): cache_on: True")
    assert fix(res, "off")["works"] is True and fix(res, "off")["problems"] == []


def test_observed_outcome_cannot_decide_a_gradient_symptom(tmp_path):
    res = run(tmp_path, "observed-gradient", """
        from benchsuite.case import Case, Symptom
        case = Case(id="observed-gradient", title="probe", references=["x/y#1"],
                    symptom=Symptom("lora_B never trains", unchanged="lora_B"))

        @case.trigger
        def trigger(ctx):
            return ctx.observed(loaded=True)
    """)
    assert res["status"] == "error"
    assert "ctx.observed" in res["reason"] and "unchanged" in res["reason"]


def test_missing_observed_flag_is_an_error_not_a_verdict(tmp_path):
    res = run(tmp_path, "flag-typo", """
        from benchsuite.case import Case, Symptom
        case = Case(id="flag-typo", title="probe", references=["x/y#1"],
                    symptom=Symptom("no recompute", observed="no_recompute"))

        @case.trigger
        def trigger(ctx):
            result = ctx.train(ctx.causal_model(), steps=1)
            result.extra["no_recomputed"] = True   # a typo: not the flag the symptom names
            return result
    """)
    assert res["status"] == "error"
    assert "extra['no_recompute']" in res["reason"]


def test_trigger_that_trained_no_step_is_an_error(tmp_path):
    res = run(tmp_path, "zero-steps", """
        from benchsuite.case import Case, Symptom
        case = Case(id="zero-steps", title="probe", references=["x/y#1"],
                    symptom=Symptom("warns while training", warning="use_cache=True"))

        @case.trigger
        def trigger(ctx):
            return ctx.train(ctx.causal_model(), steps=0)
    """)
    assert res["status"] == "error"
    assert ("trigger 'trigger' cannot be judged: it returned a training result in which no training step ran"
            in res["reason"])


def test_not_reproduced_shows_what_ran_and_what_did_not_match(tmp_path):
    res = run(tmp_path, "healthy", """
        from benchsuite.case import Case, Symptom
        case = Case(id="healthy", title="probe", references=["x/y#1"], affected={"torch": "<1"},
                    symptom=Symptom("warns and lora_B stays zero", warning="None of the inputs", unchanged="lora_B"))

        @case.trigger
        def trigger(ctx):
            from peft import get_peft_model
            model = ctx.causal_model()
            return ctx.train(get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM")))
    """)
    assert res["status"] == res["expected"] == "not-reproduced"
    basis = res["basis"]
    assert basis.startswith("symptom not seen: 3 training step(s), 8 trainable parameter(s)")
    assert "/None of the inputs/" in basis and "/lora_B/ left unchanged" in basis
    assert res["evidence"]["trigger"]["steps"] == 3


def test_scenario_raising_before_training(tmp_path):
    res = run(tmp_path, "raises-early", """
        from benchsuite.case import Case, Symptom
        case = Case(id="raises-early", title="probe", references=["x/y#1"],
                    symptom=Symptom("TypeError at the first forward", exception="TypeError"))

        @case.trigger
        def trigger(ctx):
            raise KeyError("not the reported failure")
    """)
    assert res["status"] == "error"
    assert "trigger raised KeyError" in res["reason"] and "(not the symptom)" in res["reason"]
    res = run(tmp_path, "fix-raises-early", """
        from benchsuite.case import Case, Symptom
        case = Case(id="fix-raises-early", title="probe", references=["x/y#1"],
                    symptom=Symptom("TypeError", exception="TypeError"))

        @case.trigger
        def trigger(ctx):
            raise TypeError("the reported failure")

        @case.fix("a remedy that fails before training", works=False)
        def fails(ctx):
            raise RuntimeError("cannot even load")
    """)
    assert res["status"] == "reproduced"
    f = fix(res, "fails")
    assert f["works"] is False and f["agrees"] is True
    assert f["problems"] == ["raised RuntimeError: cannot even load"]


def test_no_trainable_still_matches_when_train_raises(tmp_path):
    res = run(tmp_path, "frozen", """
        from benchsuite.case import Case, Symptom
        case = Case(id="frozen", title="probe", references=["x/y#1"],
                    symptom=Symptom("nothing trainable", no_trainable=True))

        @case.trigger
        def trigger(ctx):
            model = ctx.causal_model().requires_grad_(False)
            return ctx.train(model)    # AdamW raises: optimizer got an empty parameter list
    """)
    assert res["status"] == "reproduced"
    assert res["evidence"]["trainable_params"] == 0
    assert res["evidence"]["trigger"]["exception"]["type"] == "ValueError"


# ---------------------------------------------------------------- 2. a fix that trains nothing

ALPHA_ZERO = """
    from benchsuite.case import Case, Symptom
    case = Case(id="alpha-zero", title="probe", references=["x/y#2"],
                symptom=Symptom("nothing trainable", no_trainable=True))

    @case.trigger
    def trigger(ctx):
        return ctx.train(ctx.causal_model().requires_grad_(False))

    @case.fix("LoRA with lora_alpha=0")
    def alpha_zero(ctx):
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(ctx.causal_model(), LoraConfig(r=4, lora_alpha=0, target_modules=["q_proj", "v_proj"]))
        return ctx.train(model)

    @case.fix("LoRA, one step")
    def one_step(ctx):
        from peft import get_peft_model
        model = ctx.causal_model()
        return ctx.train(get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM")), steps=1)
"""


def test_fix_whose_adapters_get_zero_gradients_does_not_work(tmp_path):
    res = run(tmp_path, "alpha-zero", ALPHA_ZERO)
    assert res["status"] == "fix-failed"
    f = fix(res, "alpha_zero")
    assert f["works"] is False and f["agrees"] is False
    [problem] = f["problems"]
    assert ("4 trainable parameter(s) had an exactly zero gradient at every step (3 step(s)) with no explanation"
            in problem)
    assert "q_proj.lora_B" in problem
    assert "alpha_zero (declared works=True: 4 trainable parameter(s)" in res["reason"]
    assert len(set(f["outcome"]["losses"])) == 1  # the adapters cannot change the output


def test_lora_A_zero_while_its_lora_B_is_zero_is_excused(tmp_path):
    res = run(tmp_path, "alpha-zero", ALPHA_ZERO)
    f = fix(res, "one_step")
    # steps=1: every lora_A gradient is zero (lora_B starts at zero), explained by the scanner
    assert all("lora_A" in n for n in f["outcome"]["always_zero_grad"]) and f["outcome"]["always_zero_grad"]
    assert f["outcome"]["zero_by_construction"] == f["outcome"]["always_zero_grad"]
    assert f["works"] is True and f["problems"] == []


REWARD = """
    from benchsuite.case import Case, Symptom
    case = Case(id="{id}", title="probe", references=["x/y#3"], {declaration}
                symptom=Symptom("ValueError", exception="ValueError"))

    class Reward(__import__("torch").nn.Module):
        def __init__(self):
            super().__init__()
            self.head = __import__("torch").nn.Linear(4, 1)
            # a shared offset cancels under a pairwise loss; unlike the head's bias (whose weight gets a
            # gradient) the scanner cannot tell it is zero by construction: only the case can
            self.offset = __import__("torch").nn.Parameter(__import__("torch").zeros(1))

        def forward(self, x):
            return self.head(x).squeeze(-1) + self.offset

    def pairwise(model, batch):
        import torch.nn.functional as F
        return -F.logsigmoid(model(batch["chosen"]) - model(batch["rejected"])).mean()

    @case.trigger
    def trigger(ctx):
        raise ValueError("reported")

    @case.fix("train the reward head")
    def train_head(ctx):
        import torch
        torch.manual_seed(0)
        batch = {{"chosen": torch.randn(8, 4), "rejected": torch.randn(8, 4)}}
        return ctx.train(Reward(), batch=batch, loss_fn=pairwise)
"""


def test_zero_gradient_declared_by_the_case_is_excused(tmp_path):
    res = run(tmp_path, "undeclared", REWARD.format(id="undeclared", declaration=""))
    f = fix(res, "train_head")
    assert res["status"] == "fix-failed" and f["works"] is False
    assert "exactly zero gradient at every step" in f["problems"][0] and "offset" in f["problems"][0]
    res = run(tmp_path, "declared", REWARD.format(id="declared", declaration='expected_zero=r"^offset$",'))
    f = fix(res, "train_head")
    assert res["status"] == "reproduced" and f["works"] is True and f["problems"] == []


def test_trainable_parameter_the_model_never_uses_fails_the_fix(tmp_path):
    source = """
        import torch
        from benchsuite.case import Case, Symptom
        case = Case(id="{id}", title="probe", references=["x/y#4"],
                    symptom=Symptom("ValueError", exception="ValueError"))

        class WithSpare(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.used = torch.nn.Linear(4, 1)
                self.spare = torch.nn.Linear(4, 1)          # never called in forward

            def forward(self, x):
                return self.used(x)

        @case.trigger
        def trigger(ctx):
            raise ValueError("reported")

        @case.fix("train")
        def train(ctx):
            torch.manual_seed(0)
            model = WithSpare()
            {freeze}
            return ctx.train(model, batch={{"x": torch.randn(8, 4)}}, loss_fn=lambda m, b: m(b["x"]).pow(2).mean())
    """
    res = run(tmp_path, "spare", source.format(id="spare", freeze="pass"))
    f = fix(res, "train")
    assert f["works"] is False
    assert "2 trainable parameter(s) never got a gradient: spare.weight, spare.bias" in f["problems"][0]
    assert "freeze" in f["problems"][0]
    res = run(tmp_path, "spare-frozen", source.format(id="spare-frozen", freeze="model.spare.requires_grad_(False)"))
    assert fix(res, "train")["works"] is True


# ---------------------------------------------------------------- 3. declarations checked at load

@pytest.mark.parametrize("ref", ["huggingface/peft#282", "huggingface/transformers@v4.57.6:src/transformers/trainer.py",
                                 "https://discuss.huggingface.co/t/lora-nan/12345"])
def test_reference_formats_accepted(tmp_path, ref):
    path = write(tmp_path, "ref-ok", f"""
        from benchsuite.case import Case, Symptom
        case = Case(id="ref-ok", title="t", references=[{ref!r}], symptom=Symptom("d", exception="KeyError"))

        @case.trigger
        def trigger(ctx):
            raise KeyError("x")
    """)
    assert load_case(path).references == [ref]


@pytest.mark.parametrize("field, message", [
    ('references=["a forum post about NaN"]',
     "reference 'a forum post about NaN' is not owner/repo#N, owner/repo@ref:path or an https:// URL"),
    ('references=["http://example.com/x"]', "is not owner/repo#N"),
    ('references=["huggingface/peft#"]', "is not owner/repo#N"),
    ('references=[]', "references must be a non-empty list"),
    ('references=["x/y#1"], affected={"transformers": "4.57"}', "transformers: '4.57' is not a version specifier"),
    ('references=["x/y#1"], expected_zero="bias("', "expected_zero: 'bias(' is not a valid regular expression"),
])
def test_bad_declarations_are_clear_load_errors(tmp_path, field, message):
    res = run(tmp_path, "bad-decl", f"""
        from benchsuite.case import Case, Symptom
        case = Case(id="bad-decl", title="t", {field}, symptom=Symptom("d", exception="KeyError"))

        @case.trigger
        def trigger(ctx):
            raise KeyError("x")
    """)
    assert res["status"] == "error" and res["reason"].startswith("could not load case file bad-decl.py: ValueError")
    assert message in res["reason"]


def test_symptom_without_a_condition_is_a_load_error(tmp_path):
    res = run(tmp_path, "no-condition", """
        from benchsuite.case import Case, Symptom
        case = Case(id="no-condition", title="t", references=["x/y#1"], symptom=Symptom("something goes wrong"))

        @case.trigger
        def trigger(ctx):
            return ctx.observed(flag=True)
    """)
    assert res["status"] == "error" and "Symptom declares no condition" in res["reason"]


def test_every_catalogue_case_loads():
    for cid, path in case_files(default_cases_dir()).items():
        assert load_case(path).id == cid


# ---------------------------------------------------------------- ctx.trainer_train

def test_trainer_train_takes_a_trainer_class_and_callbacks_and_keeps_full_precision_losses(tmp_path):
    res = run(tmp_path, "custom-trainer", """
        from benchsuite.case import Case, Symptom
        case = Case(id="custom-trainer", title="probe", references=["x/y#5"],
                    symptom=Symptom("the override ran", observed="override_ran"))

        @case.trigger
        def trigger(ctx):
            from transformers import Trainer, TrainerCallback, default_data_collator
            seen, steps, collated = [], [], []

            class ScaledLoss(Trainer):                    # a reported compute_loss override
                def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
                    loss = model(**inputs).loss * 1.2345678
                    seen.append(float(loss.detach()))
                    return (loss, None) if return_outputs else loss

            class Count(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    steps.append(state.global_step)

            def collate(rows):
                collated.append(len(rows))
                return default_data_collator(rows)

            model = ctx.causal_model()
            result = ctx.trainer_train(model, trainer_class=ScaledLoss, callbacks=[Count()], max_steps=2,
                                       per_device_train_batch_size=4, trainer_kwargs={"data_collator": collate})
            result.extra.update(override_ran=len(seen) == 2, compute_loss_values=seen, callback_steps=steps,
                                batch_sizes=collated)
            return result
    """)
    assert res["status"] == "reproduced", res
    trig = res["evidence"]["trigger"]
    assert trig["extra"]["callback_steps"] == [1, 2]
    assert trig["extra"]["batch_sizes"][:2] == [4, 4]                 # per_device_train_batch_size, own collator
    assert trig["losses"] == trig["extra"]["compute_loss_values"]  # the loss tensors themselves
    assert any(round(x, 4) != x for x in trig["losses"])          # not rounded as 4.x's log history is


def test_trainer_train_rejects_a_class_that_is_not_a_trainer(tmp_path):
    res = run(tmp_path, "not-a-trainer", """
        from benchsuite.case import Case, Symptom
        case = Case(id="not-a-trainer", title="probe", references=["x/y#5"], symptom=Symptom("d", exception="KeyError"))

        @case.trigger
        def trigger(ctx):
            return ctx.trainer_train(ctx.causal_model(), trainer_class=dict)
    """)
    assert res["status"] == "error" and "trainer_class must be transformers.Trainer or a subclass" in res["reason"]


# ---------------------------------------------------------------- the docs' examples run as written

def doc_cases() -> dict[str, str]:
    """Every complete case file in docs/adding-a-case.md (a python block that defines ``case = Case(``)."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    out = {}
    for block in blocks:
        m = re.search(r'case = Case\(\s*id="([\w-]+)"', block)
        if m and "@case.trigger" in block:
            out[m.group(1)] = block
    return out


def test_docs_have_a_runnable_example_per_scenario_kind():
    text = "\n".join(doc_cases().values())
    for api in ("ctx.train(", "ctx.trainer_train(", "ctx.observed(", "trainer_class=", "callbacks=", "expected_zero="):
        assert api in text, api


@pytest.mark.parametrize("case_id", sorted(doc_cases()))
def test_docs_example_runs_as_declared(tmp_path, case_id):
    res = run(tmp_path, case_id, doc_cases()[case_id])
    assert res["status"] == res["expected"], res
    assert all(f["agrees"] is not False and not f.get("error") for f in res["fixes"]), res["fixes"]


# ---------------------------------------------------------------- issue 14: repeats and the no-op fix

FLAKY_FIX = """
    import os
    from benchsuite.case import Case, Symptom
    case = Case(id="flaky-fix", title="probe", references=["x/y#1"],
                symptom=Symptom(description="flag", observed="flag"))
    COUNTER = {counter!r}

    @case.trigger
    def trigger(ctx):
        return ctx.observed(flag=True)

    @case.fix("works every other time")
    def alternating(ctx):
        n = int(open(COUNTER).read()) if os.path.exists(COUNTER) else 0
        open(COUNTER, "w").write(str(n + 1))
        return ctx.observed(flag=bool(n % 2))
"""

ORDER_DEPENDENT = """
    import os
    from benchsuite.case import Case, Symptom
    case = Case(id="order-dependent", title="probe", references=["x/y#1"],
                symptom=Symptom(description="flag", observed="flag"))

    @case.trigger
    def trigger(ctx):       # shows the symptom only while the work folder is empty
        marker = os.path.join(ctx.workdir, "marker")
        first = not os.path.exists(marker)
        open(marker, "w").close()
        return ctx.observed(flag=first)

    @case.fix("anything")
    def anything(ctx):
        return ctx.observed(flag=False)
"""


def test_repeat_flags_verdicts_that_differ_between_runs_as_flaky(tmp_path):
    source = FLAKY_FIX.replace("{counter!r}", repr(str(tmp_path / "counter")))
    res = execute(write(tmp_path / "cases", "flaky-fix", source), repeat=2)
    assert res["status"] == "flaky" and res["repeat"] == 2
    assert [r["fixes"]["alternating"] for r in res["runs"]] == [True, False]
    assert "run 1: reproduced (alternating:works" in res["reason"] and "run 2: fix-failed" in res["reason"]
    from benchsuite.harness import report
    assert not report.agrees(res)
    assert "flaky" in report.table([res]) and "run 2" in report.markdown([res], {"repeat": 2})
    assert "<failure" in report.junit([res], {}) and "run 2: fix-failed" in report.junit([res], {})


def test_repeat_of_a_steady_case_keeps_its_status_and_records_every_run(tmp_path):
    source = FLAKY_FIX.replace("{counter!r}", repr(str(tmp_path / "counter")))
    res = execute(write(tmp_path / "cases", "flaky-fix", source), repeat=1)
    assert res["status"] == "reproduced" and res["repeat"] == 1 and len(res["runs"]) == 1
    assert res["noop_fix"]["works"] is False  # the trigger's code run as a fix shows the symptom again


def test_noop_fix_judged_working_is_an_error_of_the_case(tmp_path):
    res = run(tmp_path, "order-dependent", ORDER_DEPENDENT)
    assert res["status"] == "error"
    assert res["noop_fix"]["works"] is True and "no-op fix" in res["reason"]
