"""The HiddenScale member path of ``TokenNLLObservation`` (the cost-critical one).

Checks against a naive twin written here (one plain forward pass of the
model per member, the head's input scaled by ``exp(s_j)`` with a hook of this
file, cross-entropy of the chunk): equal to 1e-5 for full states and
subspace states, both model families.  And the costs the benchmark relies
on: the trunk runs once per chunk whatever is evaluated (forecast-mean
score, member observations, Jacobian, gradient), the N member heads are
batched float32 matmuls (one per block of at most 256 member-token rows),
and the self-check that guards the fast path still catches a model whose
logits are not ``head(h)``.
"""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import da_embed.observations as observations
from da_embed.observations import TokenNLLObservation
from da_embed.placements import HiddenScale, Subspace
from da_embed.testing import random_input_ids, tiny_gpt2, tiny_llama

OP_TOL = 1e-5  # float32 NLLs of order 5
N, L, W = 16, 8, 25  # members, chunk, window (context 16 + chunk)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(family):
    make = tiny_gpt2 if family == "gpt2" else tiny_llama
    model = make(seed=0, initializer_range=0.4)
    ids = random_input_ids(model, batch=1, length=W, seed=1)[0]
    return model, ids


def naive_nll(model, ids, full_states):
    """Per member: a plain forward pass with the head input times exp(s_j); NLLs (N, L)."""
    head = model.get_output_embeddings()
    rows = []
    for s in full_states:
        scale = torch.exp(torch.as_tensor(s, dtype=torch.float32))
        handle = head.register_forward_pre_hook(lambda m, a: (a[0] * scale,))
        try:
            with torch.no_grad():
                logits = model(input_ids=ids[None, :-1], use_cache=False).logits[0, -L:]
        finally:
            handle.remove()
        rows.append(F.cross_entropy(logits.double(), ids[-L:], reduction="none").numpy())
    return np.stack(rows)


def placements(model, kind):
    hidden = HiddenScale(model)
    if kind == "full":
        return hidden, lambda X: X
    rng = np.random.default_rng(2)
    sub = Subspace.random(hidden, k=5, seed=3, reference=0.2 * rng.standard_normal(32))
    to_full = lambda X: sub.reference.numpy() + X @ sub.basis.numpy().T  # noqa: E731
    return sub, to_full


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["full", "subspace"])
def test_member_nlls_equal_the_naive_path(family, kind):
    model, ids = build(family)
    placement, to_full = placements(model, kind)
    rng = np.random.default_rng(4)
    X = 0.3 * rng.standard_normal((N, placement.state_dim))
    with placement.attached():
        obs = TokenNLLObservation(placement, ids.numpy(), L)
        slow = TokenNLLObservation(placement, ids.numpy(), L, fast=False)
        assert obs.fast_ and not slow.fast_
        got, mean_score = obs(X), obs.score(X.mean(0))
        ref = naive_nll(model, ids, to_full(X))
        np.testing.assert_allclose(got, ref, atol=OP_TOL, rtol=0)
        np.testing.assert_allclose(slow(X), ref, atol=OP_TOL, rtol=0)
        np.testing.assert_allclose(mean_score, naive_nll(model, ids, to_full(X.mean(0)[None]))[0],
                                   atol=OP_TOL, rtol=0)
        # The summary is the mean final hidden state over the chunk, as the slow path's.
        slow.score(np.zeros(placement.state_dim))
        np.testing.assert_allclose(obs.summary_, slow.summary_, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_trunk_runs_once_per_chunk(family):
    model, ids = build(family)
    calls = {"trunk": 0}
    base = model.base_model
    handle = base.register_forward_hook(lambda *a: calls.__setitem__("trunk", calls["trunk"] + 1))
    rng = np.random.default_rng(5)
    try:
        with HiddenScale(model).attached() as placement:
            obs = TokenNLLObservation(placement, ids.numpy(), L)
            obs.score(np.zeros(32))  # the forecast mean's prequential score
            obs(0.1 * rng.standard_normal((N, 32)))  # the members
            obs.jacobian(np.zeros(32))  # the EKF
            obs.value_and_gradient(0.1 * np.ones(32))  # dynamic evaluation
    finally:
        handle.remove()
    assert calls["trunk"] == 1


class _CountingFunctional:
    """``torch.nn.functional`` with ``linear`` calls recorded (weight, input shape, dtype)."""

    def __init__(self):
        self.calls = []

    def linear(self, x, weight, bias=None):
        self.calls.append((weight, tuple(x.shape), x.dtype))
        return F.linear(x, weight, bias)

    def __getattr__(self, name):
        return getattr(F, name)


@pytest.mark.parametrize("members,blocks", [(N, [N]), (40, [32, 8])])
def test_member_heads_are_batched_float32_matmuls(monkeypatch, members, blocks):
    """16 members of an 8-token chunk: one product; 40: blocks of 256 // 8 = 32 members."""
    model, ids = build("llama")
    counting = _CountingFunctional()
    X = 0.1 * np.random.default_rng(6).standard_normal((members, 32))
    with HiddenScale(model).attached() as placement:
        obs = TokenNLLObservation(placement, ids.numpy(), L)
        monkeypatch.setattr(observations, "F", counting)
        got = obs(X)
    head = [c for c in counting.calls if c[0] is model.get_output_embeddings().weight]
    assert [(shape, dtype) for _, shape, dtype in head] == [((b, L, 32), torch.float32)
                                                           for b in blocks]
    np.testing.assert_allclose(got, naive_nll(model, ids, X), atol=OP_TOL, rtol=0)


def test_the_self_check_still_catches_logit_post_processing():
    """A head whose output is not head(h) (here: + 0.5 on every logit) disables the fast path."""
    model, ids = build("gpt2")
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, a, out: out + 0.5 * torch.arange(
        out.shape[-1], dtype=out.dtype) / out.shape[-1])
    try:
        X = 0.3 * np.random.default_rng(7).standard_normal((4, 32))
        with HiddenScale(model).attached() as placement:
            obs = TokenNLLObservation(placement, ids.numpy(), L)
            assert not obs.fast_
            np.testing.assert_allclose(obs(X), naive_nll(model, ids, X), atol=OP_TOL, rtol=0)
    finally:
        handle.remove()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_jacobian_reuses_the_scores_head_product(monkeypatch, family):
    """The EKF scores the forecast mean, then takes the Jacobian there: one head product, not
    two; the Jacobian equals the slow path's autograd one whether or not it re-uses."""
    model, ids = build(family)
    rng = np.random.default_rng(8)
    x, other = 0.2 * rng.standard_normal(32), 0.2 * rng.standard_normal(32)
    counting = _CountingFunctional()
    with HiddenScale(model).attached() as placement:
        obs = TokenNLLObservation(placement, ids.numpy(), L)
        slow = TokenNLLObservation(placement, ids.numpy(), L, fast=False)
        monkeypatch.setattr(observations, "F", counting)
        obs.score(x)
        reused = obs.jacobian(x)
        heads = [c for c in counting.calls if c[0] is model.get_output_embeddings().weight]
        assert len(heads) == 1  # the score's; the Jacobian took its logits
        fresh = obs.jacobian(other)  # no score at this state: its own head product
        heads = [c for c in counting.calls if c[0] is model.get_output_embeddings().weight]
        assert len(heads) == 2
        monkeypatch.undo()
        np.testing.assert_allclose(reused, slow.jacobian(x), atol=OP_TOL, rtol=0)
        np.testing.assert_allclose(fresh, slow.jacobian(other), atol=OP_TOL, rtol=0)
