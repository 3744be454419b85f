"""compare(): options that change gradients are flagged, options that keep them are not; the signature."""
from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.gradscan import compare
from benchsuite.gradscan import signature as sig
from benchsuite.gradscan.compare import TOLERANCES, compare_gradients

# ------------------------------------------------------------- reentrant checkpointing, tensors by keyword

def _kwargs_net():
    from transformers.modeling_layers import GradientCheckpointingLayer

    class Block(GradientCheckpointingLayer):
        def __init__(self, h):
            super().__init__()
            self.norm, self.up, self.down = nn.LayerNorm(h), nn.Linear(h, 2 * h), nn.Linear(2 * h, h)

        def forward(self, hidden_states, attention_mask=None):
            return self.down(F.gelu(self.up(self.norm(hidden_states))))

    class Net(nn.Module):
        def __init__(self, vocab=64, h=32, layers=3):
            super().__init__()
            self.embed = nn.Embedding(vocab, h)
            self.blocks = nn.ModuleList(Block(h) for _ in range(layers))
            self.head = nn.Linear(h, vocab)
            self.unused = nn.Parameter(torch.zeros(3))  # trainable, in no forward: no gradient in either run

        def forward(self, ids):
            h = self.embed(ids)
            for block in self.blocks:
                # The hidden state by keyword: GradientCheckpointingLayer binds keywords into a partial, so
                # reentrant checkpointing sees no input that requires grad and cuts the block from the graph.
                h = h + block(hidden_states=h)
            return F.cross_entropy(self.head(h).flatten(0, 1), ids.roll(-1, 1).flatten())

    return Net


def _runner(mode, ids):
    from torch.utils.checkpoint import checkpoint
    net_class = _kwargs_net()

    def run():
        torch.manual_seed(0)
        net = net_class().train()
        if mode is not None:  # what PreTrainedModel.gradient_checkpointing_enable sets on each layer
            for block in net.blocks:
                block.gradient_checkpointing = True
                block._gradient_checkpointing_func = partial(checkpoint, use_reentrant=mode == "reentrant")
        net(ids).backward()
        return net
    return run


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["exact", "signature"])
def test_reentrant_checkpointing_with_keyword_tensors_is_flagged(ids, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "None of the inputs have requires_grad=True"
        report = compare(_runner(None, ids), _runner("reentrant", ids), method=method)
    assert not report.ok
    # The embedding produces the tensor passed by keyword: its gradient is finite, non-zero and wrong.
    emb = report["embed.weight"]
    assert "embed.weight" in report.differing and not emb.none_a and not emb.none_b
    assert emb.rel_error > 0.1 and emb.cosine < 0.99 and emb.norm_b > 0
    assert report.no_grad_mismatch == [n for n, _ in _kwargs_net()().named_parameters()
                                       if n.startswith("blocks.")]
    assert "head.weight" not in report.differing
    # No gradient on both sides: reported, not a difference.
    assert report.both_none == ["unused"] and "unused" not in report.differing
    assert "embed.weight" in report.summary()


def test_non_reentrant_checkpointing_with_keyword_tensors_matches(ids):
    report = compare(_runner(None, ids), _runner("non-reentrant", ids))
    assert report.ok, report.summary()
    assert report.max_rel_error <= TOLERANCES["fp32"] and report.min_cosine > 0.999999
    assert len(report.compared) == 21 and report.both_none == ["unused"]


# ------------------------------------------------------------- accumulation on unequal sequence lengths

def _batch(vocab=256, rows=4, seq=32):
    """Right-padded rows of 5..32 tokens whose first quarter (a prompt) is not labelled."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (rows, seq), generator=g)
    mask = torch.zeros(rows, seq, dtype=torch.long)
    labels = torch.full((rows, seq), -100)
    for i, n in enumerate([32, 5, 19, 11][:rows]):
        mask[i, :n] = 1
        labels[i, n // 4:n] = ids[i, n // 4:n]
        ids[i, n:] = 0
    return ids, mask, labels


def _accumulated(norm: str, micro: int = 1):
    from benchsuite.models import tiny_llama
    ids, mask, labels = _batch()
    total = int((labels[:, 1:] != -100).sum())  # what the loss counts: labels after the shift

    def run():
        model = tiny_llama(seed=0).train()
        k = ids.shape[0] // micro
        for s in range(0, ids.shape[0], micro):
            sl = slice(s, s + micro)
            loss = model(input_ids=ids[sl], attention_mask=mask[sl], labels=labels[sl]).loss
            if norm == "micro-mean":       # each micro-batch's mean counts 1/k
                loss = loss / k
            elif norm == "token-weighted":  # each micro-batch's mean weighted by its share of the tokens
                loss = loss * int((labels[sl, 1:] != -100).sum()) / total
            loss.backward()
        return model
    return run


def test_accumulation_per_micro_batch_mean_flagged_token_weighted_matches():
    base = _accumulated("none", micro=4)
    bad = compare(base, _accumulated("micro-mean"))
    good = compare(base, _accumulated("token-weighted"))
    assert not bad.ok and bad.max_rel_error > 0.1, bad.summary()
    assert set(bad.differing) == {n for n, _ in _accumulated("none", 4)().named_parameters()}
    assert good.ok and good.max_rel_error < 1e-4, good.summary()


def test_both_runs_start_from_the_same_rng_state():
    # Dropout draws from torch's generator: the same run twice matches only if both start from one state.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.Linear(64, 1)).train()
    x = torch.randn(8, 16)

    def run():
        net(x).pow(2).mean().backward()
        return net
    report = compare(run, run)
    assert report.ok and report.max_rel_error == 0.0, report.summary()
    assert all(p.grad is not None for p in net.parameters())  # run_b's gradients are left in place


# ------------------------------------------------------------- bad input

def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="zero-argument callables"):
        compare(nn.Linear(2, 2), lambda: nn.Linear(2, 2))
    with pytest.raises(TypeError, match="zero-argument callables"):
        compare("model", lambda: nn.Linear(2, 2))
    with pytest.raises(TypeError, match="must return the module"):
        compare(lambda: 1.0, lambda: nn.Linear(2, 2))
    with pytest.raises(ValueError, match="method must be"):
        compare(lambda: None, lambda: None, method="approx")
    with pytest.raises(ValueError, match="shape"):
        compare_gradients({"w": torch.ones(2)}, {"w": torch.ones(3)})


def test_one_sided_and_non_finite_gradients_differ():
    a = {"w": torch.ones(4), "v": torch.ones(2), "only_a": torch.ones(1), "z": torch.zeros(3)}
    b = {"w": torch.tensor([1.0, 1.0, float("nan"), 1.0]), "v": None, "only_b": torch.ones(1), "z": torch.zeros(3)}
    r = compare_gradients(a, b)
    assert set(r.differing) == {"w", "v", "only_a", "only_b"} and r.no_grad_mismatch == ["v"]
    assert r["z"].matches and r["z"].cosine == 1.0  # zero in both: the same gradient
    assert "non-finite" in r["w"].reason and r.worst in ("w", "v")


# ------------------------------------------------------------- the signature

def test_mix32_matches_the_reference_on_cpu():
    vals = [0, 1, 63, 2**31 - 1, 2**31, 2**32 - 1]
    assert sig.mix32(torch.tensor(vals)).tolist() == [sig.mix32_ref(v) for v in vals]


def test_signature_is_the_definition_element_by_element():
    """Every bucket equals the sum of sign * value over the elements the definition puts there (a tensor over
    two chunks with a partial last one, and a tiny one whose elements all have buckets of their own)."""
    x = torch.randn(2 * 65_536 + 1_027, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = [0.0] * sig.K
    for i, v in enumerate(x.tolist()):
        b, s = sig.bucket_and_sign_ref(i)
        ref[b] += s * v
    assert sig.signature(x).proj == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert len({sig.bucket_and_sign_ref(i)[0] for i in range(sig.K)}) == sig.K


def test_signature_independent_of_chunking_and_dtype_path(monkeypatch):
    x = torch.randn(300_001, generator=torch.Generator().manual_seed(0))
    whole = sig.signature(x)
    monkeypatch.setattr(sig, "CHUNK", 1 << 16)
    chunked = sig.signature(x)
    assert whole.sumsq == pytest.approx(chunked.sumsq, rel=1e-12)
    assert whole.proj == pytest.approx(chunked.proj, rel=1e-9, abs=1e-9)
    # Small tensors (at most K elements) are compared exactly.
    a, b = torch.randn(100), torch.randn(100)
    rel, cos = sig.estimate(sig.signature(a), sig.signature(b))
    assert rel == pytest.approx(float((a.double() - b.double()).norm() / a.double().norm()), rel=1e-9)
    assert cos == pytest.approx(float(F.cosine_similarity(a, b, dim=0)), rel=1e-6)


def test_signature_estimate_error():
    # 40 random differences of a 1M-element gradient: estimated / exact relative error within 25%
    # (standard deviation sqrt(1/(2K)) = 6%: 25% is four of them).
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1 << 20, generator=g)
    sa = sig.signature(a)
    ratios = []
    for i in range(40):
        d = torch.randn(1 << 20, generator=g) * 10.0 ** -(i % 6)
        b = a + d
        rel, _ = sig.estimate(sa, sig.signature(b))
        ratios.append(rel / float((b.double() - a.double()).norm() / a.double().norm()))
    assert 0.75 < min(ratios) and max(ratios) < 1.25, ratios
    assert abs(sum(ratios) / len(ratios) - 1) < 0.05
