"""Placements on tiny random GPT-2 and Llama models (no download).

Three kinds of checks, as a table of cases run on both families:
limiting cases (zero state = the unmodified model, removal restores it bit for
bit, N members in a batch = N separate runs), independent references (each
placement against a hand computation or a deep copy with edited weights), and
gradients against finite differences.  The models use a larger initialiser
range than GPT-2's 0.02 so that attention is sharp and every placement moves
the logits by O(1): a test that compares against a reference can then fail.
"""

import copy
import json

import numpy as np
import pytest
import torch

from da_embed.placements import (EmbeddingScale, HiddenScale, Placement, RotaryScale,
                                 SingularValueScale, Subspace, givens_matrix)
from da_embed.testing import random_input_ids, tiny_gpt2, tiny_llama, tiny_model

# Tolerances, declared once.
ZERO_TOL = 1e-6       # zero state vs the unmodified model (observed: bit-identical)
BATCH_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}   # batch vs separate runs
REF_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}     # vs independent references
ROTARY_REF_TOL = 1e-5  # the models compute rotary angles in float32 whatever their dtype
GRAD_RTOL = 1e-6      # autograd vs central differences (float64)
INIT = 0.2            # initializer_range of the test models (sharp attention)

FAMILIES = ("gpt2", "llama")
CASES = {
    "embedding": lambda m: EmbeddingScale(m),
    "hidden": lambda m: HiddenScale(m),
    "svf-mlp": lambda m: SingularValueScale(m),
    "svf-attention": lambda m: SingularValueScale(m, targets="attention"),
    "rotary-base": lambda m: RotaryScale(m, mode="base"),
    "rotary-frequency": lambda m: RotaryScale(m, mode="frequency"),
    "rotary-frequency+phase": lambda m: RotaryScale(m, mode="frequency+phase"),
    "rotary-givens": lambda m: RotaryScale(m, mode="givens"),
    "rotary-all": lambda m: RotaryScale(m, mode="frequency+phase+givens"),
    "subspace-hidden": lambda m: Subspace.random(HiddenScale(m), k=5, seed=0),
    "subspace-svf": lambda m: Subspace.random(SingularValueScale(m), k=4, seed=1),
}
PAIRS = [(f, c) for f in FAMILIES for c in CASES if not (f == "gpt2" and c.startswith("rotary"))]
PAIR_IDS = [f"{f}-{c}" for f, c in PAIRS]

_MODELS: dict = {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_for(family, dtype=torch.float32):
    """One shared model per (family, dtype); every test leaves it unmodified."""
    key = (family, dtype)
    if key not in _MODELS:
        _MODELS[key] = tiny_model(family, seed=0, dtype=dtype, initializer_range=INIT)
    return _MODELS[key]


def states_for(placement, N, seed=0, scale=0.5, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(N, placement.state_dim, generator=gen, dtype=dtype)


def snapshot(model):
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    flags = {k: v.requires_grad for k, v in model.named_parameters()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    return params, buffers, flags, hooks


# ------------------------------------------------------------------ limiting cases
@pytest.mark.parametrize("family,case", PAIRS, ids=PAIR_IDS)
def test_zero_state_is_the_unmodified_model(family, case):
    model = model_for(family)
    ids = random_input_ids(model, batch=2, length=10, seed=1)
    expected = model(ids).logits  # (B, T, V)
    with CASES[case](model).attached() as placement:
        got = placement.logits(ids, torch.zeros(3, placement.state_dim))  # (N, B, T, V)
    assert got.shape == (3, *expected.shape)
    for j in range(3):
        torch.testing.assert_close(got[j], expected, rtol=0, atol=ZERO_TOL)


@pytest.mark.parametrize("family,case", PAIRS, ids=PAIR_IDS)
def test_remove_restores_the_model_bit_for_bit(family, case):
    model = model_for(family)
    ids = random_input_ids(model, batch=2, length=6, seed=2)
    before = model(ids).logits.detach().clone()
    params, buffers, flags, hooks = snapshot(model)
    placement = CASES[case](model)
    placement.attach()
    states = states_for(placement, 3).requires_grad_(True)
    placement.token_nll(ids, states).sum().backward()  # exercise the autograd path too
    with placement.using(states.detach()):
        model(ids.repeat(3, 1))
    placement.remove()
    placement.remove()  # twice is harmless
    p2, b2, f2, h2 = snapshot(model)
    assert p2.keys() == params.keys() and b2.keys() == buffers.keys()
    assert all(torch.equal(params[k], p2[k]) for k in params)
    assert all(torch.equal(buffers[k], b2[k]) for k in buffers)
    assert f2 == flags and h2 == hooks
    assert all(p.grad is None for p in model.parameters())  # the frozen LM got no gradient
    assert torch.equal(model(ids).logits, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("family,case", PAIRS, ids=PAIR_IDS)
def test_batch_of_members_equals_separate_runs(family, case, dtype):
    model = model_for(family, dtype)
    ids = random_input_ids(model, batch=2, length=7, seed=3)
    with CASES[case](model).attached() as placement:
        states = states_for(placement, 4, seed=4)
        batched = placement.logits(ids, states)  # (N, B, T, V)
        for j in range(4):
            alone = placement.logits(ids, states[j:j + 1])[0]  # (B, T, V)
            torch.testing.assert_close(batched[j], alone, rtol=0, atol=BATCH_TOL[dtype])
        # Direct calls inside using(): a member-major batch of N * B rows.
        with placement.using(states):
            direct = placement.model(ids.repeat(4, 1)).logits.reshape(batched.shape)
        torch.testing.assert_close(direct, batched, rtol=0, atol=BATCH_TOL[dtype])


GEN_PAIRS = [p for p in PAIRS if not p[1].startswith("subspace")]


@pytest.mark.parametrize("family,case", GEN_PAIRS, ids=[f"{f}-{c}" for f, c in GEN_PAIRS])
def test_generate_inside_using_matches_greedy_decoding_by_logits(family, case):
    """Cached generation of N members in one batch = greedy decoding with logits()."""
    model = model_for(family)
    ids = random_input_ids(model, batch=2, length=4, seed=30)
    with CASES[case](model).attached() as placement:
        states = states_for(placement, 2, seed=31)
        with placement.using(states):
            out = model.generate(ids.repeat(2, 1), max_new_tokens=4, do_sample=False,
                                 pad_token_id=0)  # (N * B, T + 4)
        for j in range(2):
            cur = ids
            for _ in range(4):
                nxt = placement.logits(cur, states[j:j + 1])[0, :, -1].argmax(-1)  # (B,)
                cur = torch.cat((cur, nxt[:, None]), dim=1)
            assert torch.equal(out[2 * j:2 * j + 2], cur)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_scale_runs_the_trunk_once(family):
    model = model_for(family)
    ids = random_input_ids(model, batch=3, length=5)
    block = model.base_model.h[0] if family == "gpt2" else model.base_model.layers[0]
    batches = {"block": [], "head": []}
    hooks = [block.register_forward_pre_hook(
                 lambda m, a, kw: batches["block"].append(a[0].shape[0]) if a else
                 batches["block"].append(kw["hidden_states"].shape[0]), with_kwargs=True),
             model.get_output_embeddings().register_forward_hook(
                 lambda m, a, o: batches["head"].append(o.shape[0]))]
    try:
        with HiddenScale(model).attached() as placement:
            placement.token_nll(ids, np.zeros((8, 32)))
    finally:
        for h in hooks:
            h.remove()
    assert batches == {"block": [3], "head": [8 * 3]}


@pytest.mark.parametrize("family,case", PAIRS, ids=PAIR_IDS)
def test_a_nonzero_state_changes_the_logits(family, case):
    model = model_for(family)
    ids = random_input_ids(model, batch=2, length=12, seed=5)
    with CASES[case](model).attached() as placement:
        logits = placement.logits(ids, states_for(placement, 2, seed=6))
    diff = (logits - model(ids).logits).abs().amax(dim=(1, 2, 3))  # (N,)
    assert bool((diff > 1e-3).all()), diff
    assert float((logits[0] - logits[1]).abs().max()) > 1e-3  # members differ


# ------------------------------------------------------------ independent references
@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_scale_matches_hand_computation(family):
    model = model_for(family, torch.float64)
    ids = random_input_ids(model, batch=2, length=6, seed=7)
    placement = HiddenScale(model)
    states = states_for(placement, 3, seed=8, dtype=torch.float64)
    with placement.attached():
        got = placement.logits(ids, states)
    out = model(ids, output_hidden_states=True)
    h = model.base_model(ids).last_hidden_state  # (B, T, d), after the final norm
    head = model.get_output_embeddings()
    for j in range(3):
        expected = head(h * torch.exp(states[j]))  # (B, T, V)
        torch.testing.assert_close(got[j], expected, rtol=0, atol=REF_TOL[torch.float64])
    torch.testing.assert_close(head(h), out.logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_scale_matches_scaled_inputs_embeds(family):
    model = model_for(family, torch.float64)
    ids = random_input_ids(model, batch=2, length=6, seed=9)
    placement = EmbeddingScale(model)
    states = states_for(placement, 3, seed=10, dtype=torch.float64)
    with placement.attached():
        got = placement.logits(ids, states)
    embed = model.get_input_embeddings()(ids)  # (B, T, d)
    for j in range(3):
        expected = model(inputs_embeds=embed * torch.exp(states[j])).logits
        torch.testing.assert_close(got[j], expected, rtol=0, atol=REF_TOL[torch.float64])


def _replace_weights_by_svf(model, placement, state):
    """A deep copy whose chosen weights are U diag(sigma * exp(s)) V^T (float64 SVD)."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    for name in placement.names:
        mod = modules[name]
        linear = isinstance(mod, torch.nn.Linear)
        W = (mod.weight if linear else mod.weight.T).detach().double()  # (out, in)
        U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
        s = state[placement.slices[name]].double()
        W_new = U @ torch.diag(sigma * torch.exp(s)) @ Vh  # (out, in)
        with torch.no_grad():
            mod.weight.copy_(W_new if linear else W_new.T)
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("targets", ["mlp", "attention", ["*.0.mlp.*", "*.1.*.c_attn"]],
                         ids=["mlp", "attention", "patterns"])
@pytest.mark.parametrize("family", FAMILIES)
def test_svf_matches_a_copy_with_replaced_weights(family, targets, dtype):
    model = model_for(family, dtype)
    if family == "llama" and isinstance(targets, list):
        targets = ["*.0.mlp.*", "*.1.*.q_proj"]
    ids = random_input_ids(model, batch=2, length=6, seed=11)
    placement = SingularValueScale(model, targets=targets)
    assert placement.state_dim == sum(min(placement._factors[n][0].shape[0],
                                          placement._factors[n][2].shape[0])
                                      for n in placement.names)
    states = states_for(placement, 2, seed=12, dtype=dtype)
    with placement.attached():
        got = placement.logits(ids, states)
    for j in range(2):
        expected = _replace_weights_by_svf(model, placement, states[j])(ids).logits
        torch.testing.assert_close(got[j], expected, rtol=0, atol=REF_TOL[dtype])


def test_svf_default_targets_are_the_mlp_matrices():
    gpt2 = SingularValueScale(model_for("gpt2"))
    llama = SingularValueScale(model_for("llama"))
    assert gpt2.names == [f"transformer.h.{i}.mlp.{m}" for i in range(2)
                          for m in ("c_fc", "c_proj")]
    assert llama.names == [f"model.layers.{i}.mlp.{m}" for i in range(2)
                           for m in ("gate_proj", "up_proj", "down_proj")]
    assert gpt2.state_dim == 4 * 32 and llama.state_dim == 6 * 32
    assert [s.start for s in llama.slices.values()] == [0, 32, 64, 96, 128, 160]


def _rotary_copy(model, inv_freq_factor):
    ref = copy.deepcopy(model)
    rot = ref.model.rotary_emb
    with torch.no_grad():
        rot.inv_freq.mul_(inv_freq_factor)
        rot.original_inv_freq.mul_(inv_freq_factor)
    return ref


def test_rotary_frequency_matches_scaled_inv_freq():
    model = model_for("llama", torch.float64)
    ids = random_input_ids(model, batch=2, length=16, seed=13)
    placement = RotaryScale(model, mode="frequency")
    states = states_for(placement, 2, seed=14, dtype=torch.float64)
    with placement.attached():
        got = placement.logits(ids, states)
    for j in range(2):
        expected = _rotary_copy(model, torch.exp(states[j]))(ids).logits
        torch.testing.assert_close(got[j], expected, rtol=0, atol=ROTARY_REF_TOL)


def test_rotary_base_matches_a_model_with_a_scaled_base():
    model = model_for("llama", torch.float64)
    ids = random_input_ids(model, batch=1, length=16, seed=15)
    placement = RotaryScale(model, mode="base")
    x = torch.tensor([[0.7], [-1.2]], dtype=torch.float64)
    with placement.attached():
        got = placement.logits(ids, x)
    base, dim = model.config.rope_parameters["rope_theta"], 2 * placement.n_frequencies
    for j in range(2):
        new_base = base * float(torch.exp(x[j, 0]))
        inv_freq = 1.0 / new_base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        factor = inv_freq / model.model.rotary_emb.inv_freq
        expected = _rotary_copy(model, factor)(ids).logits
        torch.testing.assert_close(got[j], expected, rtol=0, atol=ROTARY_REF_TOL)


def _block_diag_per_head(M, n_heads):
    return torch.block_diag(*([M] * n_heads))


def test_rotary_phase_and_givens_match_rotated_projections():
    """q -> R(phi) G q and k -> G k equal q_proj / k_proj weights premultiplied per head."""
    model = model_for("llama", torch.float64)
    cfg = model.config
    ids = random_input_ids(model, batch=2, length=12, seed=16)
    placement = RotaryScale(model, mode="frequency+phase+givens")
    h = placement.n_frequencies
    states = states_for(placement, 2, seed=17, dtype=torch.float64)
    with placement.attached():
        got = placement.logits(ids, states)
    for j in range(2):
        s = states[j]
        G = givens_matrix(s[placement.slices["givens"]][None], h)[0]  # (2h, 2h)
        phi = s[placement.slices["phase"]]
        c, si = torch.diag(torch.cos(phi)), torch.diag(torch.sin(phi))
        R = torch.cat((torch.cat((c, -si), 1), torch.cat((si, c), 1)), 0)  # rotate_half layout
        ref = _rotary_copy(model, torch.exp(s[placement.slices["frequency"]]))
        with torch.no_grad():
            for layer in ref.model.layers:
                attn = layer.self_attn
                attn.q_proj.weight.copy_(
                    _block_diag_per_head(R @ G, cfg.num_attention_heads) @ attn.q_proj.weight)
                attn.k_proj.weight.copy_(
                    _block_diag_per_head(G, cfg.num_key_value_heads) @ attn.k_proj.weight)
        torch.testing.assert_close(got[j], ref(ids).logits, rtol=0, atol=ROTARY_REF_TOL)


def test_givens_matrix_is_the_documented_product():
    angles = torch.tensor([[0.3, -0.8, 1.1]], dtype=torch.float64)
    h, D = 4, 8
    expected = torch.eye(D, dtype=torch.float64)
    for p in range(h - 1):
        Gp = torch.eye(D, dtype=torch.float64)
        c, s = torch.cos(angles[0, p]), torch.sin(angles[0, p])
        for a, b in ((p, p + 1), (p + h, p + h + 1)):
            Gp[a, a], Gp[a, b], Gp[b, a], Gp[b, b] = c, -s, s, c
        expected = expected @ Gp
    G = givens_matrix(angles, h)[0]
    torch.testing.assert_close(G, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(G @ G.T, torch.eye(D, dtype=torch.float64), rtol=0, atol=1e-14)


def test_rotary_phase_shared_by_q_and_k_would_cancel():
    """Why phases act on queries only: the rotary module's own phase shift is invisible."""
    model = model_for("llama", torch.float64)
    ids = random_input_ids(model, batch=1, length=8, seed=18)
    ref = copy.deepcopy(model)
    rot = ref.model.rotary_emb
    phi = torch.linspace(0.3, 1.5, rot.inv_freq.numel(), dtype=torch.float64)
    forward = type(rot).forward

    def shifted(self, x, position_ids):  # cos/sin of (angle + phi), for q and k alike
        cos, sin = forward(self, x, position_ids)
        c, s = cos[..., :phi.numel()], sin[..., :phi.numel()]
        c, s = c * torch.cos(phi) - s * torch.sin(phi), s * torch.cos(phi) + c * torch.sin(phi)
        return torch.cat((c, c), -1), torch.cat((s, s), -1)

    rot.forward = shifted.__get__(rot)
    torch.testing.assert_close(ref(ids).logits, model(ids).logits, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ gradients
GRAD_PAIRS = [p for p in PAIRS if p[1] in ("hidden", "embedding", "svf-mlp", "rotary-all",
                                            "rotary-base", "subspace-hidden")]


@pytest.mark.parametrize("family,case", GRAD_PAIRS, ids=[f"{f}-{c}" for f, c in GRAD_PAIRS])
def test_token_nll_gradient_matches_finite_differences(family, case, float64_rmsnorm):
    model = model_for(family, torch.float64)
    ids = random_input_ids(model, batch=2, length=6, seed=19)
    gen = torch.Generator().manual_seed(20)
    with CASES[case](model).attached() as placement:
        x = states_for(placement, 2, seed=21, dtype=torch.float64, scale=0.3)
        w = torch.rand(2, 2, 5, generator=gen, dtype=torch.float64)  # weights of the NLLs

        def f(states):
            return (placement.token_nll(ids, states) * w).sum()

        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x), x)  # (N, n)
        assert grad.shape == x.shape and bool(grad.abs().sum() > 0)
        eps = 1e-5
        for seed in (0, 1):
            v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
            with torch.no_grad():
                fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
            exact = (grad * v).sum()
            assert abs(float(fd - exact)) <= GRAD_RTOL * max(1.0, abs(float(exact))), (fd, exact)


def test_gradients_reach_float64_states_of_a_float32_model():
    model = model_for("llama")
    ids = random_input_ids(model, batch=1, length=5)
    states = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    with RotaryScale(model).attached() as placement:
        nll = placement.token_nll(ids, states)
    assert nll.dtype == torch.float32
    (grad,) = torch.autograd.grad(nll.sum(), states)
    assert grad.dtype == torch.float64 and bool(grad.abs().sum() > 0)


def test_no_graph_without_grad_states():
    model = model_for("gpt2")
    with HiddenScale(model).attached() as placement:
        nll = placement.token_nll(random_input_ids(model), np.zeros((2, 32)))
    assert not nll.requires_grad


# ---------------------------------------------------------------------- token_nll
def test_token_nll_is_log_softmax_gather():
    model = model_for("llama", torch.float64)
    ids = random_input_ids(model, batch=2, length=7, seed=22)
    with SingularValueScale(model).attached() as placement:
        states = states_for(placement, 3, seed=23, dtype=torch.float64)
        logits = placement.logits(ids, states)  # (N, B, T, V)
        nll = placement.token_nll(ids, states)  # (N, B, T - 1)
        logp = torch.log_softmax(logits[:, :, :-1], dim=-1)
        expected = -logp.gather(-1, ids[None, :, 1:, None].expand(3, -1, -1, 1))[..., 0]
        torch.testing.assert_close(nll, expected, rtol=0, atol=1e-12)
        # Explicit (B, T) targets with an ignored position.
        targets = torch.roll(ids, -1, dims=1)
        targets[:, -1] = -100
        full = placement.token_nll(ids, states, targets=targets)  # (N, B, T)
        assert full.shape == (3, 2, 7)
        torch.testing.assert_close(full[:, :, :-1], nll, rtol=0, atol=0)
        assert bool((full[:, :, -1] == 0).all())


# ----------------------------------------------------------------------- subspace
def test_subspace_zero_is_the_reference():
    model = model_for("gpt2")
    ids = random_input_ids(model, batch=2, length=6, seed=24)
    inner = HiddenScale(model)
    reference = states_for(inner, 1, seed=25)[0]  # (n,)
    sub = Subspace.random(inner, k=3, seed=2, reference=reference)
    with sub.attached():
        got = sub.logits(ids, torch.zeros(2, 3))
        expected = inner.logits(ids, reference[None])
        moved = sub.logits(ids, torch.ones(1, 3))
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], expected[0], rtol=0, atol=1e-6)
    assert float((moved[0] - expected[0]).abs().max()) > 1e-3
    assert not inner.is_attached
    info = json.loads(json.dumps(sub.describe()))
    assert info["state_dim"] == 3 and info["options"]["placement"]["placement"] == "HiddenScale"


def test_subspace_maps_and_projects():
    sub = Subspace.random(EmbeddingScale(model_for("llama")), k=4, seed=3)
    P = sub.basis
    torch.testing.assert_close(P.T @ P, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(P, Subspace.random(sub.placement, k=4, seed=3).basis)  # seeded
    z = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(sub.project(sub.to_full(z)), z, rtol=0, atol=1e-12)


def test_subspace_from_gradients_finds_the_principal_directions():
    placement = HiddenScale(model_for("gpt2"))
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((32, 3)))  # (n, 3)
    G = (rng.standard_normal((200, 3)) * [10.0, 5.0, 3.0]) @ Q.T  # (200, n), rank 3
    G += 1e-3 * rng.standard_normal(G.shape)
    sub = Subspace.from_gradients(placement, G, k=3)
    P = sub.basis.numpy()
    np.testing.assert_allclose(P @ P.T, Q @ Q.T, atol=1e-3)
    with pytest.raises(ValueError, match="k must be"):
        Subspace.from_gradients(placement, G[:2], k=3)
    with pytest.raises(ValueError, match="G must have shape"):
        Subspace.from_gradients(placement, G[:, :5], k=3)


def test_subspace_validates_the_basis():
    placement = HiddenScale(model_for("gpt2"))
    with pytest.raises(ValueError, match="basis must have orthonormal columns"):
        Subspace(placement, 2.0 * np.eye(32)[:, :3])
    with pytest.raises(ValueError, match=r"basis must have shape \(n, k\) = \(32, k\)"):
        Subspace(placement, np.eye(16)[:, :3])
    with pytest.raises(ValueError, match="reference must have shape"):
        Subspace(placement, np.eye(32)[:, :3], reference=np.zeros(5))
    with pytest.raises(ValueError, match="k must be"):
        Subspace.random(placement, k=33)
    sub = Subspace(placement, np.eye(32)[:, :3])
    with sub.attached(), pytest.raises(ValueError, match=r"states must have shape \(N, k\)"):
        sub.logits(random_input_ids(placement.model), np.zeros((2, 32)))


# ---------------------------------------------------------------------- bad input
def test_rotary_scale_on_gpt2_names_the_problem():
    with pytest.raises(ValueError, match="RotaryScale needs a model with rotary position "
                                         "embeddings; GPT2LMHeadModel has none"):
        RotaryScale(model_for("gpt2"))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 31)), r"states must have shape \(N, n\) = \(N, 32\)"),
    (np.zeros(32), r"states\[None\]"),
    (np.zeros((0, 32)), "at least one member"),
    (np.full((2, 32), np.nan), r"states must be finite; members \[0, 1\]"),
    (np.zeros((2, 32), dtype=complex), "states must be real"),
    ("abc", "states must be"),
])
def test_bad_states(bad, match):
    model = model_for("gpt2")
    with HiddenScale(model).attached() as placement, pytest.raises(ValueError, match=match):
        placement.logits(random_input_ids(model), bad)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 5), "input_ids must hold integer token ids"),
    (torch.zeros(5, dtype=torch.long), r"input_ids must be a 2-D \(B, T\)"),
    (torch.full((1, 4), 97), r"input_ids must lie in \[0, 97\)"),
    (torch.full((1, 4), -1), r"input_ids must lie in \[0, 97\)"),
    (torch.zeros(1, 65, dtype=torch.long), "learned positions for at most 64"),
])
def test_bad_input_ids(bad, match):
    with EmbeddingScale(model_for("gpt2")).attached() as placement:
        with pytest.raises(ValueError, match=match):
            placement.logits(bad, np.zeros((1, 32)))


def test_bad_targets_and_short_inputs():
    model = model_for("llama")
    ids = random_input_ids(model, batch=2, length=5)
    with HiddenScale(model).attached() as placement:
        with pytest.raises(ValueError, match=r"targets must have shape \(B, T - 1\)"):
            placement.token_nll(ids, np.zeros((1, 32)), targets=ids[:, :2])
        with pytest.raises(ValueError, match="targets must lie in"):
            placement.token_nll(ids, np.zeros((1, 32)), targets=ids[:, 1:] + 200)
        with pytest.raises(ValueError, match="T >= 2"):
            placement.token_nll(ids[:, :1], np.zeros((1, 32)))
        with pytest.raises(ValueError, match="attention_mask must have the shape"):
            placement.logits(ids, np.zeros((1, 32)), attention_mask=torch.ones(2, 3))


def test_bad_options():
    llama = model_for("llama")
    with pytest.raises(ValueError, match="mode must be one of"):
        RotaryScale(llama, mode="frequency+base")
    with pytest.raises(ValueError, match="mode must be one of"):
        RotaryScale(llama, mode="phases")
    with pytest.raises(ValueError, match="targets entry 'foo' matches no module"):
        SingularValueScale(llama, targets="foo")
    with pytest.raises(ValueError, match="matches no nn.Linear/Conv1D"):
        SingularValueScale(llama, targets=["*.input_layernorm"])
    with pytest.raises(ValueError, match="targets must be"):
        SingularValueScale(llama, targets=[])
    with pytest.raises(ValueError, match="model must be a Hugging Face causal LM"):
        HiddenScale("gpt2")
    with pytest.raises(ValueError, match="HiddenScale needs a causal LM with an output head"):
        HiddenScale(llama.model)  # the trunk alone has no head
    with pytest.raises(ValueError, match="placement must be a Placement"):
        Subspace(llama, np.eye(32)[:, :2])


def test_attach_rules():
    model = model_for("gpt2")
    a, b = HiddenScale(model), EmbeddingScale(model)
    with pytest.raises(RuntimeError, match="attach"):
        a.logits(random_input_ids(model), np.zeros((1, 32)))
    with a.attached():
        assert a.attach() is a  # attaching again is a no-op
        with pytest.raises(ValueError, match="already carries HiddenScale"):
            b.attach()
        with a.attached():  # nested: the inner block does not detach
            pass
        assert a.is_attached
        with a.using(np.zeros((2, 32))), pytest.raises(ValueError, match="multiple of the N = 2"):
            model(random_input_ids(model, batch=3))
    b.remove()  # never attached: harmless
    with b.attached():
        assert b.is_attached and not a.is_attached
    assert isinstance(a, Placement)


def test_attached_model_without_states_is_the_model():
    model = model_for("llama")
    ids = random_input_ids(model, batch=2, length=6)
    expected = model(ids).logits
    with RotaryScale(model, mode="frequency+phase+givens").attached():
        assert torch.equal(model(ids).logits, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_describe_is_json(family):
    model = model_for(family)
    placements = [EmbeddingScale(model), SingularValueScale(model, targets="attention")]
    if family == "llama":
        placements.append(RotaryScale(model, mode="givens"))
    for p in placements:
        info = json.loads(json.dumps(p.describe()))
        assert info["placement"] == type(p).__name__ and info["state_dim"] == p.state_dim
        assert info["model"] == type(model).__name__
        assert type(p).__name__ in repr(p)


def test_testing_models_are_seeded_and_cast():
    a, b = tiny_gpt2(seed=3), tiny_gpt2(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    c = tiny_llama(seed=3, dtype=torch.float64)
    assert not c.training and c.lm_head.weight.dtype == torch.float64
    assert c.model.rotary_emb.inv_freq.dtype == torch.float64
    with pytest.raises(ValueError, match="family must be one of"):
        tiny_model("bert")
