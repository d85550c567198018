"""Exactness of the batched candidate stage against separate full forward passes.

Every row of a cycle's batch (its own state, its own tokens) decoded on the
shared prefix cache (hidden placement) or with a batched per-row prefix pass
(every other placement) must give the logits of a separate full forward pass
of ``[context, tokens so far]`` under that row's state alone, with no cache;
the verifier's batched scores must equal one full pass per candidate.  On
tiny GPT-2 and Llama models built here, for every placement generation
supports (rotary: Llama only; a random subspace of the hidden placement).
"""

import numpy as np
import pytest
import torch

from da_embed.generate.batch import (cached_logprob, decode_rows, fuses_verifier, head_logprob,
                                     shares_prefix_cache)
from da_embed.lm.kv_cache import prefill
from da_embed.placements import Subspace
from da_embed.placements.registry import make_placement
from da_embed.testing import tiny_gpt2, tiny_llama
from da_embed.textmetrics import continuation_logprob_ids

ATOL = 1e-5  # float32: a cached, batched pass against a full pass of one row
ROWS, STEPS = 5, 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [("gpt2", "hidden"), ("gpt2", "embedding"), ("gpt2", "svf"), ("gpt2", "svf:attention"),
         ("gpt2", "subspace"), ("llama", "hidden"), ("llama", "embedding"), ("llama", "svf"),
         ("llama", "rotary"), ("llama", "rotary:givens"), ("llama", "subspace")]


def _model(family):
    build = tiny_gpt2 if family == "gpt2" else tiny_llama
    return build(seed=1, initializer_range=0.2).eval()  # states move the tokens


def _placement(model, spec):
    if spec == "subspace":
        return Subspace.random(make_placement(model, "hidden"), 3, seed=0)
    return make_placement(model, spec)


def _setup(family, spec, seed=0):
    model = _model(family)
    pl = _placement(model, spec)
    rng = np.random.default_rng(seed)
    states = rng.normal(0.0, 0.5, (ROWS, pl.state_dim))
    states[0] = 0.0  # one row at the frozen model
    context = torch.as_tensor(rng.integers(0, 97, (1, 7)))
    return model, pl, states, context


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("family,spec", CASES)
def test_batched_rows_equal_separate_full_passes(family, spec, sample):
    model, pl, states, context = _setup(family, spec)
    u = np.random.default_rng(5).random((ROWS, STEPS)) if sample else None
    logits = []
    with pl.attached(), torch.no_grad():
        shared = shares_prefix_cache(pl)
        cache = prefill(model, context[:, :-1]) if shared else None  # at no state
        tok, out_cache = decode_rows(model, pl, states, context, STEPS, u, cache=cache,
                                     logits_out=logits)
        assert tuple(tok.shape) == (ROWS, STEPS)
        assert out_cache.get_seq_length() == context.shape[1] + STEPS - 1
        if shared:
            assert cache.get_seq_length() == context.shape[1] - 1  # not extended
        for r in range(ROWS):
            full = torch.cat([context[0], tok[r, :-1]])[None]  # (1, T + STEPS - 1)
            ref = pl.logits(full, torch.as_tensor(states[r:r + 1]))[0, 0]  # no cache
            got = torch.stack([lg[r] for lg in logits])  # (STEPS, V)
            T = context.shape[1]
            torch.testing.assert_close(got, ref[T - 1:], atol=ATOL, rtol=0)
    # the rows really differ (the check is not vacuous)
    assert not torch.allclose(logits[0][0], logits[0][1], atol=1e-3)


@pytest.mark.parametrize("family,spec", CASES)
def test_batched_verifier_scores_equal_full_passes(family, spec):
    model, pl, states, context = _setup(family, spec, seed=3)
    heads = []
    with pl.attached(), torch.no_grad():
        fused = fuses_verifier(model, pl)
        shared = shares_prefix_cache(pl)
        cache = prefill(model, context[:, :-1]) if shared else None
        u = np.random.default_rng(2).random((ROWS, STEPS))
        tok, _ = decode_rows(model, pl, states, context, STEPS, u, cache=cache,
                             head_inputs=heads if fused else None)
        base_cache = prefill(model, context[:, :-1])  # outside using(): the frozen model
        scores = cached_logprob(model, base_cache, int(context[0, -1]), tok.numpy())
        expect = continuation_logprob_ids(model, context[0].numpy(), tok.numpy())
        np.testing.assert_allclose(scores, expect, atol=ATOL, rtol=0)
        if fused:
            np.testing.assert_allclose(head_logprob(model, heads, tok.numpy()), expect,
                                       atol=ATOL, rtol=0)
    assert fused == (spec in ("hidden", "subspace"))


def test_only_the_head_placements_share_the_prefix_cache():
    """The documented split: the prefix's K/V change with the state except for hidden."""
    model = _model("llama")
    ctx = torch.as_tensor(np.random.default_rng(0).integers(0, 97, (1, 6)))
    for spec in ("hidden", "subspace", "embedding", "svf", "rotary"):
        pl = _placement(model, spec)
        state = np.full((1, pl.state_dim), 0.5)
        with pl.attached(), torch.no_grad():
            plain = prefill(model, ctx).layers[-1].keys  # last layer: after every block
            with pl.using(state):
                moved = prefill(model, ctx).layers[-1].keys
        assert torch.equal(plain, moved) == shares_prefix_cache(pl), spec
