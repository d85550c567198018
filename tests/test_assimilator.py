"""The online assimilation loop on tiny models: observations, protocol, filters, outputs, CLI.

Kinds of checks: against independent computations (the observation operator
against the placement and a plain forward pass, the analytic HiddenScale
Jacobian against autograd, Jacobians against central differences, the EKF
update against the natural-gradient formula it should equal); the
prequential protocol's honesty; a planted shift with known truth that the
filters must recover; determinism; outputs (netCDF appended per chunk, kept
on Ctrl-C); bad input (clear errors, never a traceback).
"""

import json
import math
import warnings
import os

import numpy as np
import pytest
import torch
import xarray as xr

from da_embed.assimilator import (AssimilationDiverged, OnlineAssimilator, PrequentialConfig,
                                  max_positions)
from da_embed.baselines import DynamicEvaluation, Frozen, PointState, VerificationRule
from da_embed.cli import main
from da_embed.compare import compare, make_placement
from da_embed.dynamics import (LearnedDynamics, LowRankAdapter, RandomWalk, TransitionNetwork,
                               count_parameters)
from da_embed.methods import make_method, parse_methods
from da_embed.metrics import paired_change, perplexity
from da_embed.observations import (TokenNLLObservation, pseudo_observation,
                                   predicted_observation, verification_scores)
from da_embed.placements import EmbeddingScale, HiddenScale, RotaryScale, Subspace
from da_embed.planted import planted_shift
from da_embed.subspaces import fisher_subspace, parse_subspace
from da_embed.testing import random_input_ids, tiny_gpt2, tiny_llama
from da_embed.trajectory import open_trajectory, run_file_stem
from filters import EKF
from filters.covariance import as_covariance
from filters.states import GaussianState

# Tolerances, declared once.
OP_TOL = 1e-5          # operator vs placement.token_nll / a plain forward pass (float32)
JAC_TOL = 1e-4         # analytic vs autograd Jacobian (float32, relative to max |G|)
FD_RTOL = 1e-6         # autograd vs central differences (float64 models)
EXACT = 1e-10          # float64 identities
INIT = 0.4             # sharp tiny models: states move the logits by O(1)
PROTOCOL = PrequentialConfig(chunk=8, context=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_MODELS = {}


def model_for(family, dtype=torch.float32):
    key = (family, dtype)
    if key not in _MODELS:
        build = tiny_gpt2 if family == "gpt2" else tiny_llama
        _MODELS[key] = build(seed=0, dtype=dtype, initializer_range=INIT)
    return _MODELS[key]


def stream(model, length=81, seed=0):
    return random_input_ids(model, batch=1, length=length, seed=seed)[0].numpy()


def strip_timing(ds):
    return ds.drop_vars([v for v in ds.data_vars if v.startswith("wall_time")])


PLACEMENTS = {
    "hidden": lambda m: HiddenScale(m),
    "hidden-subspace": lambda m: Subspace.random(HiddenScale(m), k=5, seed=1),
    "embedding": lambda m: EmbeddingScale(m),
    "rotary": lambda m: RotaryScale(m, mode="frequency+phase"),
}
OP_CASES = [("gpt2", "hidden"), ("gpt2", "hidden-subspace"), ("gpt2", "embedding"),
            ("llama", "hidden"), ("llama", "rotary")]


# ------------------------------------------------------------------- dynamics
def test_dynamics_hold_about_a_tenth_of_a_million_parameters_at_d768(capsys):
    f, a = TransitionNetwork(768, 768), LowRankAdapter(768, 768)
    counts = count_parameters(f), count_parameters(a)
    print(f"TransitionNetwork(768, 768): {counts[0]:,}; LowRankAdapter(768, 768): {counts[1]:,}; "
          f"together {sum(counts):,}")
    assert 90_000 <= sum(counts) <= 110_000
    assert "together 99,104" in capsys.readouterr().out


def test_learned_dynamics_start_at_the_identity_and_have_exact_jacobians():
    dyn = LearnedDynamics(TransitionNetwork(6, 4, hidden=8), LowRankAdapter(6, 4, rank=2))
    dyn.set_summary(np.arange(4.0))
    x = np.linspace(-1, 1, 6)
    assert np.array_equal(dyn.step(x, 0.0, 1.0), x)
    assert np.array_equal(dyn.jacobian(x, 0.0, 1.0), np.eye(6))
    torch.manual_seed(0)
    for p in list(dyn.transition.parameters()) + list(dyn.adapter.parameters()):
        torch.nn.init.normal_(p, std=0.5)
    dyn.transition.double(), dyn.adapter.double()
    from filters.models import finite_difference_jacobian

    fd = finite_difference_jacobian(lambda X: dyn.step(X, 0.0, 1.0), x)
    np.testing.assert_allclose(dyn.jacobian(x, 0.0, 1.0), fd, rtol=FD_RTOL, atol=1e-8)
    E = np.random.default_rng(0).standard_normal((3, 6))  # ensembles step row by row
    np.testing.assert_allclose(dyn.step(E, 0.0, 1.0)[1], dyn.step(E[1], 0.0, 1.0), atol=EXACT)


def test_untrained_learned_dynamics_give_the_random_walk_run():
    model = model_for("gpt2")
    ids = stream(model, 57)
    d = model.config.n_embd
    dyn = LearnedDynamics(TransitionNetwork(d, d), LowRankAdapter(d, d))
    a = OnlineAssimilator(HiddenScale(model), "ekf", protocol=PROTOCOL).run(ids)
    b = OnlineAssimilator(HiddenScale(model), "ekf", protocol=PROTOCOL, dynamics=dyn).run(ids)
    xr.testing.assert_equal(strip_timing(a).drop_attrs(), strip_timing(b).drop_attrs())
    assert np.array_equal(RandomWalk(3).step(np.ones(3), 0, 1), np.ones(3))


# -------------------------------------------------------- observation operator
def window_for(model, length=25, seed=3):
    return stream(model, length, seed)


@pytest.mark.parametrize("family,case", OP_CASES, ids=[f"{f}-{c}" for f, c in OP_CASES])
def test_observation_equals_placement_token_nll(family, case):
    model = model_for(family)
    w = window_for(model)
    placement = PLACEMENTS[case](model)
    with placement.attached():
        H = TokenNLLObservation(placement, w, n_targets=8)
        assert H.fast_ == case.startswith("hidden")
        X = 0.3 * np.random.default_rng(0).standard_normal((5, placement.state_dim))
        got = H(X)  # (N, L)
        ref = placement.token_nll(torch.as_tensor(w[None]), X)[:, 0, -8:]  # (N, L)
        np.testing.assert_allclose(got, ref.double().numpy(), rtol=0, atol=OP_TOL)
        np.testing.assert_array_equal(H(X[2]), got[2])  # (n,) -> (L,)
        assert got.dtype == np.float64 and H.nobs == 8 and H.ndim == placement.state_dim


def test_observation_at_zero_is_the_plain_model():
    model = model_for("llama")
    w = window_for(model)
    with HiddenScale(model).attached() as placement:
        got = TokenNLLObservation(placement, w, 8)(np.zeros(32))
    logits = model(torch.as_tensor(w[None, :-1])).logits[0]  # (W - 1, V)
    ref = torch.nn.functional.cross_entropy(logits, torch.as_tensor(w[1:]), reduction="none")
    np.testing.assert_allclose(got, ref[-8:].double().detach().numpy(), atol=OP_TOL)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("sub", [False, True], ids=["full", "subspace"])
def test_hidden_scale_analytic_jacobian_equals_autograd(family, sub):
    model = model_for(family)
    w = window_for(model)
    placement = HiddenScale(model)
    if sub:
        placement = Subspace.random(placement, k=6, seed=2)
    x = 0.4 * np.random.default_rng(1).standard_normal(placement.state_dim)
    with placement.attached():
        fast = TokenNLLObservation(placement, w, 8)
        slow = TokenNLLObservation(placement, w, 8, fast=False)  # autograd through the model
        assert fast.fast_ and not slow.fast_
        G, G_ref = fast.jacobian(x), slow.jacobian(x)
        assert G.shape == (8, placement.state_dim)
        np.testing.assert_allclose(G, G_ref, rtol=0, atol=JAC_TOL * np.abs(G_ref).max())
        v, g = slow.value_and_gradient(x)
        np.testing.assert_allclose(g, G_ref.sum(0), atol=JAC_TOL * np.abs(g).max())
        np.testing.assert_allclose(v, fast(x), atol=OP_TOL)


@pytest.mark.parametrize("family,case", OP_CASES, ids=[f"{f}-{c}" for f, c in OP_CASES])
def test_observation_jacobian_equals_finite_differences(family, case, float64_rmsnorm):
    model = model_for(family, torch.float64)
    w = window_for(model, 17)
    placement = PLACEMENTS[case](model)
    x = 0.2 * np.random.default_rng(2).standard_normal(placement.state_dim)
    with placement.attached():
        H = TokenNLLObservation(placement, w, 5, member_batch=3)  # batches of members
        J = H.jacobian(x)
        from filters.models import finite_difference_jacobian

        fd = finite_difference_jacobian(H, x)
    np.testing.assert_allclose(J, fd, rtol=FD_RTOL, atol=1e-7 * np.abs(fd).max())


def test_ekf_update_is_the_natural_gradient_step_of_the_decrement_target():
    """With y = h(m) - c and R = r I the EKF moves by -(c/r) (P^-1 + J^T J / r)^-1 J^T 1."""
    model = model_for("gpt2", torch.float64)
    w = window_for(model)
    n = 32
    P = 0.1 * np.eye(n)
    m = 0.1 * np.random.default_rng(3).standard_normal(n)
    c, r = 0.7, 2.0
    with HiddenScale(model).attached() as placement:
        H = TokenNLLObservation(placement, w, 8)
        state = GaussianState(m, P)
        y = pseudo_observation(predicted_observation(EKF(), state, H), "decrement", c)
        out = EKF().analysis(state, y, H, as_covariance(r, 8), None)
        J = H.jacobian(m)
    A = np.linalg.inv(np.linalg.inv(P) + J.T @ J / r)
    np.testing.assert_allclose(out.mean, m - (c / r) * A @ J.sum(0), atol=EXACT)
    np.testing.assert_allclose(out.cov, A, atol=EXACT)


def test_pseudo_observation_and_scores():
    assert pseudo_observation([2.0, 3.0], "decrement", 0.5).tolist() == [1.5, 2.5]
    assert pseudo_observation([2.0, 3.0], "zero").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="target must be one of"):
        pseudo_observation([1.0], "floor")
    s = verification_scores(np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 3.0]]))
    assert s.tolist() == [1.0, -1.0, 0.0]


def test_observation_rejects_bad_input():
    model = model_for("gpt2")
    placement = HiddenScale(model)
    with pytest.raises(ValueError, match="must be attached"):
        TokenNLLObservation(placement, np.arange(10), 4)
    with placement.attached():
        with pytest.raises(ValueError, match="n_targets must be in"):
            TokenNLLObservation(placement, np.arange(10), 10)
        H = TokenNLLObservation(placement, np.arange(10), 4)
        with pytest.raises(ValueError, match="states must have shape"):
            H(np.zeros((2, 5)))
        with pytest.raises(ValueError, match="finite"):
            H(np.full(32, np.nan))
    with EmbeddingScale(model).attached() as emb:
        with pytest.raises(ValueError, match="fast=True needs a HiddenScale"):
            TokenNLLObservation(emb, np.arange(10), 4, fast=True)


# ------------------------------------------------------------------ protocol
def test_protocol_schedule_and_validation():
    p = PrequentialConfig(chunk=4, context=8, stride=6)
    assert p.starts(20).tolist() == [1, 7, 13] and p.window == 11
    assert PrequentialConfig(chunk=4, context=8, max_tokens=9).starts(100).tolist() == [1, 5]
    with pytest.raises(ValueError, match=r"chunk \(9\) must not be longer than context \(8\)"):
        PrequentialConfig(chunk=9, context=8)
    with pytest.raises(ValueError, match=r"stride \(2\) must be >= chunk \(4\)"):
        PrequentialConfig(chunk=4, context=8, stride=2)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        PrequentialConfig(chunk=0)
    with pytest.raises(ValueError, match="max_tokens must be an integer >= 5"):
        PrequentialConfig(chunk=4, context=8, max_tokens=3)


def test_frozen_equals_the_plain_model_nll():
    model = model_for("gpt2")
    ids = stream(model, 60)
    protocol = PrequentialConfig(chunk=8, context=16, stride=10)
    ds = OnlineAssimilator(HiddenScale(model), "frozen", protocol=protocol).run(ids)
    assert ds.sizes["time"] == len(protocol.starts(60)) == 6  # targets 1-8, 11-18, ..., 51-58
    for k, start in enumerate(protocol.starts(60)):
        a = max(0, start - 16)
        logits = model(torch.as_tensor(ids[None, a:start + 7])).logits[0]  # (W - 1, V)
        ref = torch.nn.functional.cross_entropy(logits, torch.as_tensor(ids[a + 1:start + 8]),
                                                reduction="none")[-8:]
        np.testing.assert_allclose(ds.token_nll.values[k], ref.detach().double().numpy(),
                                   atol=OP_TOL)
        assert ds.token_id.values[k].tolist() == ids[start:start + 8].tolist()
        assert ds.context_tokens.values[k] == start - a
    assert float(ds.analysis_mean.max()) == 0.0 and ds.attrs["adaptation_parameters"] == 0
    assert ds.attrs["perplexity"] == pytest.approx(math.exp(ds.nll.values.mean()))


@pytest.mark.parametrize("method", ["ekf", "etkf", "dyneval", "verify"])
def test_the_score_of_a_chunk_does_not_depend_on_its_tokens(method):
    """Prequential honesty: changing chunk k's tokens leaves the state that scores it unchanged."""
    model = model_for("gpt2")
    ids = stream(model, 57)
    k = 3
    start = int(PROTOCOL.starts(57)[k])
    other = ids.copy()
    other[start:start + PROTOCOL.chunk] = (ids[start:start + PROTOCOL.chunk] + 7) % 97
    run = lambda x: OnlineAssimilator(HiddenScale(model), method, protocol=PROTOCOL,  # noqa: E731
                                      members=4, seed=5).run(x)
    a, b = run(ids), run(other)
    np.testing.assert_array_equal(a.forecast_mean.values[:k + 1], b.forecast_mean.values[:k + 1])
    np.testing.assert_array_equal(a.nll.values[:k], b.nll.values[:k])
    assert not np.array_equal(a.nll.values[k], b.nll.values[k])  # its own tokens did change
    assert not np.array_equal(a.forecast_mean.values[k + 1], b.forecast_mean.values[k + 1])


@pytest.mark.parametrize("method", ["etkf", "enkf", "verify", "ekf"])
def test_same_seed_same_trajectory(method):
    model = model_for("gpt2")
    ids = stream(model, 49)
    run = lambda seed: OnlineAssimilator(HiddenScale(model), method, protocol=PROTOCOL,  # noqa
                                         members=4, seed=seed).run(ids)
    a, b = run(11), run(11)
    xr.testing.assert_identical(strip_timing(a).drop_attrs(), strip_timing(b).drop_attrs())
    if method != "ekf":
        assert not np.array_equal(a.analysis_mean.values, run(12).analysis_mean.values)


ALL_METHODS = ["frozen", "dyneval", "verify", "ekf", "3dvar", "enkf", "etkf", "ensrf", "denkf",
               "ukf"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_and_logs_the_layout(method, tmp_path):
    model = model_for("llama")
    ids = stream(model, 41)
    placement = Subspace.random(HiddenScale(model), k=3, seed=0)
    path = tmp_path / f"{method}.nc"
    ds = OnlineAssimilator(placement, method, protocol=PROTOCOL, members=4, seed=1,
                           model_name="tiny").run(ids, out=path)
    point = method in ("frozen", "dyneval", "verify")  # no covariance to store at the end
    assert ds.sizes == {"time": 5, "state": 3, "obs": 8, "state_full": 32,
                        **({} if point else {"state_b": 3})}
    assert ("analysis_covariance" in ds) == (not point)
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name") and "units" in var.attrs, name
    assert np.all(np.isfinite(ds.analysis_mean.values))
    a = ds.attrs
    assert (a["chunk"], a["context"], a["stride"], a["method"], a["status"]) == \
        (8, 16, 8, method, "complete")
    assert json.loads(a["placement"])["placement"] == "Subspace" and a["model"] == "tiny"
    assert a["tokens_scored"] == 40 and a["Conventions"] == "CF-1.8" and "version" in a
    json.loads(a["filter_params"])
    disk = open_trajectory(path)
    xr.testing.assert_allclose(disk.drop_attrs(), ds.drop_attrs())
    np.testing.assert_allclose(disk.subspace_basis.values, placement.basis.numpy())
    assert disk.attrs["status"] == "complete" and int(disk.attrs["chunks_completed"]) == 5


def test_baselines_move_as_documented():
    model = model_for("gpt2", torch.float64)
    w = window_for(model)
    x = np.zeros(32)
    with HiddenScale(model).attached() as placement:
        H = TokenNLLObservation(placement, w, 8)
        dyn = DynamicEvaluation(lr=0.01, optimizer="sgd")
        dyn.validate()
        state = dyn.initialize(GaussianState(x, np.eye(32)), None)
        out = dyn.analysis(state, None, H, None, None)
        np.testing.assert_allclose(out.mean, -0.01 * H.jacobian(x).mean(0), atol=EXACT)
        # The verification rule estimates -sigma * grad(mean NLL): with many antithetic
        # candidates and a small sigma it points along the negative gradient.
        ver = VerificationRule(K=2000, eta=1.0, sigma=1e-3)
        ver.validate()
        step = ver.analysis(PointState(x), None, H, None, np.random.default_rng(0)).mean
        g = H.jacobian(x).mean(0)
        assert np.dot(step, -g) / (np.linalg.norm(step) * np.linalg.norm(g)) > 0.8
    assert Frozen().analysis(PointState(x), None, None, None, None).mean is x
    with pytest.raises(ValueError, match=r"K \(candidates, --members\) must be even"):
        VerificationRule(K=5).validate()


# ---------------------------------------------------------------- planted shift
def _planted_setup(seed, n_tokens):
    """A planted-shift stream, a 6-dim basis holding its 4 directions, and the per-chunk
    mean NLLs of the frozen model and of the planted truth (the two ends of the gap)."""
    model = tiny_gpt2(seed=seed, initializer_range=INIT)
    protocol = PrequentialConfig(chunk=8, context=24)
    K = len(protocol.starts(n_tokens))
    ps = planted_shift(HiddenScale(model), protocol, n_tokens, k=4, amplitude=2.0,
                       shift_chunk=K // 4, seed=seed)
    # A 6-dim subspace containing the 4 planted directions (and 2 others).
    extra = np.random.default_rng(99).standard_normal((32, 2))
    basis, _ = np.linalg.qr(np.column_stack([ps.directions, extra]))
    placement = HiddenScale(model)
    frozen, oracle = [], []
    with placement.attached():
        for start, truth in zip(protocol.starts(ps.token_ids.size), ps.truth()):
            a = max(0, start - protocol.context)
            H = TokenNLLObservation(placement, ps.token_ids[a:start + protocol.chunk],
                                    protocol.chunk)
            frozen.append(H(np.zeros(32)).mean())
            oracle.append(H(truth).mean())
    return model, protocol, K, ps, basis, frozen, oracle


def _planted_case(seed, n_tokens):
    model, protocol, K, ps, basis, frozen, oracle = _planted_setup(seed, n_tokens)
    late = slice(K // 2, K)  # after the filters had a quarter of the stream to adapt
    results = {}
    for name, pl, method in [("ekf (full state)", HiddenScale(model), "ekf"),
                             ("etkf (subspace)", Subspace(HiddenScale(model), basis), "etkf"),
                             ("ukf (subspace)", Subspace(HiddenScale(model), basis), "ukf")]:
        ds = OnlineAssimilator(pl, method, protocol=protocol, members=16, P0=0.1, Q=1e-3,
                               seed=seed).run(ps.token_ids)
        est = ds.analysis_mean.values
        if isinstance(pl, Subspace):
            est = est @ basis.T
        corr = np.corrcoef(est[late].mean(0), ps.state)[0, 1]
        nll = ds.nll.values[late].mean()
        gap = (np.mean(frozen[late]) - nll) / (np.mean(frozen[late]) - np.mean(oracle[late]))
        results[name] = (corr, math.exp(nll), gap)
    summary = {"frozen": math.exp(np.mean(frozen[late])),
               "oracle": math.exp(np.mean(oracle[late]))}
    return results, summary


def _check_planted(results, summary):
    print(f"\nlate perplexity: frozen {summary['frozen']:.2f}, "
          f"planted truth {summary['oracle']:.2f}")
    for name, (corr, ppl, gap) in results.items():
        print(f"  {name}: corr {corr:.3f}, perplexity {ppl:.2f}, gap closed {gap:.2f}")
    for name, (corr, ppl, gap) in results.items():
        assert corr > 0.9, (name, corr)
        assert gap > 0.8, (name, gap)
        assert ppl < 1.1 * summary["oracle"], (name, ppl)


def test_planted_shift_is_recovered():
    """A known log-scale planted along 4 directions mid-stream is recovered (corr > 0.9)."""
    _check_planted(*_planted_case(seed=0, n_tokens=1201))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_planted_shift_is_recovered_for_other_seeds(seed):
    _check_planted(*_planted_case(seed=seed, n_tokens=1601))


# ------------------------------------------------------------ interruption
def test_an_interrupted_run_keeps_every_completed_chunk(tmp_path, monkeypatch):
    model = model_for("gpt2")
    ids = stream(model, 81)
    path = tmp_path / "ekf.nc"
    calls = {"n": 0}
    original = EKF.analysis

    def analysis(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # Ctrl-C in the middle of chunk 3
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(EKF, "analysis", analysis)
    runner = OnlineAssimilator(HiddenScale(model), "ekf", protocol=PROTOCOL)
    with pytest.raises(KeyboardInterrupt):
        runner.run(ids, out=path)
    ds = open_trajectory(path)
    assert ds.sizes["time"] == 3 and ds.attrs["status"] == "interrupted"
    assert int(ds.attrs["chunks_completed"]) == 3
    assert np.all(np.isfinite(ds.nll.values)) and np.all(np.isfinite(ds.analysis_mean.values))
    xr.testing.assert_allclose(ds.drop_attrs(), runner.dataset_.drop_attrs())


def test_a_callback_interrupt_after_a_chunk_keeps_it(tmp_path):
    model = model_for("gpt2")

    def stop(k, record):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        OnlineAssimilator(HiddenScale(model), "etkf", protocol=PROTOCOL, members=4).run(
            stream(model, 81), out=tmp_path / "r.nc", callback=stop)
    assert open_trajectory(tmp_path / "r.nc").sizes["time"] == 2


def test_divergence_is_reported_with_the_chunks_kept(tmp_path, monkeypatch):
    model = model_for("gpt2")
    original = EKF.analysis
    calls = {"n": 0}

    def analysis(self, state, *args):
        calls["n"] += 1
        out = original(self, state, *args)
        return GaussianState(out.mean * (np.nan if calls["n"] == 3 else 1.0), out.cov)

    monkeypatch.setattr(EKF, "analysis", analysis)
    with pytest.raises(AssimilationDiverged, match="diverged at chunk 2"):
        OnlineAssimilator(HiddenScale(model), "ekf", protocol=PROTOCOL).run(
            stream(model, 81), out=tmp_path / "d.nc")
    ds = open_trajectory(tmp_path / "d.nc")
    assert ds.sizes["time"] == 2 and ds.attrs["status"] == "diverged"


# ------------------------------------------------------------------ bad input
def test_bad_settings_raise_clear_errors():
    model = model_for("gpt2")
    ids = stream(model, 81)
    hs = HiddenScale(model)
    run = lambda method="ekf", **kw: OnlineAssimilator(hs, method, protocol=PROTOCOL,  # noqa
                                                       **kw).run(ids)
    with pytest.raises(ValueError, match="members must be an integer >= 2 for etkf"):
        run("etkf", members=1)
    with pytest.raises(ValueError, match="letkf' is not available: the LETKF localises"):
        run("letkf")
    with pytest.raises(ValueError, match="unknown method 'kalman'"):
        run("kalman")
    with pytest.raises(ValueError, match="UKF needs 2n \\+ 1 = 65 sigma points"):
        run("ukf", max_sigma_points=33)
    with pytest.raises(ValueError, match="3dvar keeps an n x n covariance; n = 32 exceeds "
                                         "max_dense_state = 16"):
        run("3dvar", max_dense_state=16)
    with pytest.raises(ValueError, match="P0 \\(prior variance\\) must be"):
        run(P0=0.0)
    with pytest.raises(ValueError, match="Q must be a finite number >= 0"):
        run(Q=-1.0)
    with pytest.raises(ValueError, match="R must be positive definite"):
        run(R=0.0)
    with pytest.raises(ValueError, match="target must be one of"):
        run(target="floor")
    with pytest.raises(ValueError, match="token stream has 5 tokens; at least chunk \\+ 1 = 9"):
        OnlineAssimilator(hs, "ekf", protocol=PROTOCOL).run(ids[:5])
    with pytest.raises(ValueError, match="token stream has 0 tokens"):
        OnlineAssimilator(hs, "ekf", protocol=PROTOCOL).run(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="must lie in \\[0, 97\\).*tokenizer and model"):
        OnlineAssimilator(hs, "ekf", protocol=PROTOCOL).run(ids + 100)
    with pytest.raises(ValueError, match="exceed the model's position limit of 64"):
        OnlineAssimilator(hs, "ekf", protocol=PrequentialConfig(chunk=32, context=40)).run(ids)
    with pytest.raises(ValueError, match="RotaryScale needs a model with rotary"):
        make_placement(model, "rotary")
    with pytest.raises(ValueError, match="placement must be one of"):
        make_placement(model, "attention")
    with pytest.raises(ValueError, match="subspace must be 'random:k' or 'fisher:k'"):
        parse_subspace("pca:4")
    assert parse_methods("Frozen,EKF,ekf,ETKF@Fisher:8") == ["frozen", "ekf", "etkf@fisher:8"]
    with pytest.raises(ValueError, match="subspace must be 'random:k' or 'fisher:k'"):
        parse_methods("etkf@pca:3")
    assert max_positions(model) == 64
    with pytest.raises(ValueError, match="method 'LETKF' is not available"):
        make_method("LETKF")


# --------------------------------------------------------------- comparison
def test_paired_change_interval():
    rng = np.random.default_rng(0)
    base = rng.normal(5.0, 0.5, 400)
    pc = paired_change(base - 0.05 + rng.normal(0, 0.02, 400), base, n_boot=500)
    assert pc.low < pc.change < pc.high and pc.high < 0
    assert pc.change == pytest.approx(100 * math.expm1(-0.05), abs=0.3)
    const = paired_change(base - 0.1, base, n_boot=200)
    assert const.low == pytest.approx(const.change) == pytest.approx(const.high)
    assert math.isnan(paired_change([1.0], [2.0]).low)
    assert perplexity([0.0, 2.0], [1, 1]) == pytest.approx(math.e)
    # A diverged run (mean NLL difference past exp's range) is +inf, not an OverflowError.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = paired_change(base + 900.0, base, n_boot=200)
    assert huge.change == huge.low == huge.high == math.inf


def test_compare_api_tabulates_against_frozen(tmp_path):
    model = model_for("llama")
    ids, tune = stream(model, 121, seed=1), stream(model, 81, seed=2)
    lines = []
    res = compare(model, ids, methods="ekf,etkf@fisher:4,ukf@fisher:4,dyneval,verify@random:2",
                  tune_ids=tune, protocol=PROTOCOL, members=4, tune_tokens=64, out=tmp_path,
                  n_boot=200, print_fn=lines.append)
    names = [r["method"] for r in res.rows]
    assert names == ["frozen", "ekf", "etkf@fisher:4", "ukf@fisher:4", "dyneval",
                     "verify@random:2"]
    assert res.rows[0]["wall_ratio"] == 1.0 and res.rows[0]["adapt_params"] == 0
    assert [r["adapt_params"] for r in res.rows[1:]] == [32, 4, 4, 32, 2]
    for r in res.rows[1:]:
        assert r["ci_low"] <= r["change_pct"] <= r["ci_high"]
        assert r["chunks"] == 15 and r["tokens"] == 120 and r["peak_extra_mb"] >= 0
    table = lines[0]
    assert "chunk 8, context 16, stride 8" in table and "120 tokens scored in 15 chunks" in table
    assert set(res.settings["dyneval_lr_tuning"]) == {0.003, 0.01, 0.03, 0.1, 0.3}
    assert res.settings["subspaces"]["etkf@fisher:4"].startswith("gradients")
    # one Fisher basis for both methods that asked for it
    np.testing.assert_array_equal(res.datasets["etkf@fisher:4"].subspace_basis,
                                  res.datasets["ukf@fisher:4"].subspace_basis)
    for m in names:
        ds = open_trajectory(tmp_path / (run_file_stem(m) + ".nc"))
        assert ds.sizes["time"] == 15 and ds.attrs["method"] == m
        assert ("subspace_basis" in ds) == ("@" in m)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"]["chunk"] == 8 and len(summary["rows"]) == 6
    assert (tmp_path / "summary.csv").read_text().startswith("method,perplexity")
    assert xr.load_dataset(tmp_path / "summary.nc").nll.shape == (6, 15)
    # A diverged row (perplexity 1e188) prints in 3 digits and keeps the table's width.
    res.rows[1].update(perplexity=7.359e188, change_pct=4.03e187, ci_low=1.39e113,
                       ci_high=1.09e273)
    wide = res.table().splitlines()
    row = next(line for line in wide if line.startswith("ekf "))
    assert "7.36e+188" in row and "+4.03e+187% [+1.39e+113, +1.09e+273]" in row, row
    assert max(map(len, wide[-7:])) < 120
    assert "frozen " in res.table() and f"{res.rows[0]['perplexity']:.2f}" in res.table()


def test_fisher_subspace_spans_the_leading_gradient_directions():
    model = model_for("gpt2")
    ids = stream(model, 121)
    sub = fisher_subspace(HiddenScale(model), ids, 3, PROTOCOL)
    assert sub.state_dim == 3 and sub.origin.startswith("gradients(num_samples=120")
    np.testing.assert_allclose(sub.basis.T @ sub.basis, np.eye(3), atol=1e-10)


# --------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny GPT-2 and a byte-level BPE tokenizer saved with save_pretrained."""
    from da_embed.reference import train_tokenizer

    text = ("The quick brown fox jumps over the lazy dog. Ünïcödé ταχύ 速い 🦊 مرحبا.\n" * 40)
    tokenizer = train_tokenizer(text, vocab_size=300)
    model = tiny_gpt2(seed=0, vocab_size=len(tokenizer), initializer_range=INIT)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


UNICODE = ("Ĉu vi parolas Esperanton? Да, немного. 日本語のテキストも。 ✓ naïve café — "
           "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦊🐕 עברית ‏RTL‏ e\u0301 (combining), tabs\tand\nnew lines.\n") * 8


def cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_compare_runs_on_any_unicode_text(saved_model, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(UNICODE, encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, stderr = cli(["compare", "--model", saved_model, "--corpus", corpus,
                                "--tune-corpus", corpus, "--methods", "frozen,ekf,etkf,ukf",
                                "--subspace", "fisher:3", "--members", 4, "--chunk", 8,
                                "--context", 16, "--max-tokens", 200, "--tune-tokens", 64,
                                "--out", out, "--no-progress",
                                "--allow-overlap"], capsys)  # the tuning text is the corpus
    assert code == 0, stderr
    assert "WARNING: the tuning text shares" in stdout
    assert "chunk 8, context 16, stride 8, max_tokens 200" in stdout
    assert "tokens scored in" in stdout and "vs frozen [95% CI]" in stdout
    for m in ("frozen", "ekf", "etkf", "ukf"):
        assert (out / f"{m}.nc").exists() and f"\n{m}" in stdout
    assert (out / "summary.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/model"], "--model path does not exist: '/no/such/model'"),
    (["--corpus", "/no/such/corpus.txt"], "corpus file not found"),
    (["--corpus", "EMPTY"], "--corpus: corpus 'EMPTY' has 0 characters"),
    (["--corpus", "TINY"], "the token stream has 4 tokens; at least chunk + 1 = 9"),
    (["--placement", "rotary"], "RotaryScale needs a model with rotary position embeddings; "
                                "GPT2LMHeadModel has none"),
    (["--members", "1"], "--members must be >= 2"),
    (["--chunk", "32", "--context", "16"], "chunk (32) must not be longer than context (16)"),
    (["--methods", "frozen,letkf"], "method 'letkf' is not available"),
    (["--subspace", "fisher:x"], "subspace size k must be an integer"),
    (["--context", "100"], "exceed the model's position limit of 64"),
    (["--model", "NOTAMODEL"], "could not load a causal LM and its tokenizer"),
])
def test_cli_bad_input_is_one_clear_line(saved_model, tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").write_text("  \n", encoding="utf-8")
    (tmp_path / "TINY").write_text("fox fox", encoding="utf-8")
    (tmp_path / "NOTAMODEL").mkdir()
    args = [str(tmp_path / a) if a in ("EMPTY", "TINY", "NOTAMODEL") else a for a in args]
    base = {"--model": str(saved_model), "--corpus": str(tmp_path / "TINY"),
            "--chunk": "8", "--context": "16", "--methods": "frozen,ekf"}
    base["--corpus"] = str(tmp_path / "corpus.txt")
    (tmp_path / "corpus.txt").write_text(UNICODE, encoding="utf-8")
    for k in list(base):
        if k in args:
            del base[k]
    argv = ["compare", *[x for kv in base.items() for x in kv], *args,
            "--tune-corpus", str(tmp_path / "corpus.txt"), "--no-progress",
            "--out", str(tmp_path / "out")]
    code, stdout, stderr = cli(argv, capsys)
    assert code == 2
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert message.replace("EMPTY", str(tmp_path / "EMPTY")) in stderr, stderr


def test_cli_ctrl_c_keeps_completed_chunks(saved_model, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(UNICODE, encoding="utf-8")
    calls = {"n": 0}
    original = TokenNLLObservation.score

    def score(self, x):
        calls["n"] += 1
        if calls["n"] == 9:  # frozen has 25 chunks: stop in its 9th
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(TokenNLLObservation, "score", score)
    out = tmp_path / "out"
    code, stdout, stderr = cli(["compare", "--model", saved_model, "--corpus", corpus,
                                "--tune-corpus", corpus, "--methods", "frozen,ekf",
                                "--chunk", 8, "--context", 16, "--max-tokens", 201,
                                "--out", out, "--no-progress"], capsys)
    assert code == 130 and "interrupted" in stderr
    ds = open_trajectory(out / "frozen.nc")
    assert ds.sizes["time"] == 8 and ds.attrs["status"] == "interrupted"


# ------------------------------------------------------------------ doctests
ONLINE_MODULES = ["dynamics", "observations", "baselines", "methods", "trajectory",
                  "assimilator", "metrics", "planted", "subspaces", "compare", "cli"]


@pytest.mark.parametrize("name", ONLINE_MODULES)
def test_docstring_examples_run(name):
    import doctest
    import importlib

    module = importlib.import_module(f"da_embed.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
    assert sorted(module.__all__) == sorted(set(module.__all__))


# ------------------------------------------------------------ 4D-Var over chunks
@pytest.mark.parametrize("method", ["4dvar", "w4dvar"])
def test_4dvar_runs_over_a_sliding_window_and_logs_the_layout(method, tmp_path):
    model = model_for("llama")
    ids = stream(model, 49)
    placement = Subspace.random(HiddenScale(model), k=3, seed=0)
    path = tmp_path / f"{method}.nc"
    ds = OnlineAssimilator(placement, method, protocol=PROTOCOL, seed=1,
                           model_name="tiny").run(ids, out=path)
    assert ds.sizes == {"time": 6, "state": 3, "obs": 8, "state_full": 32, "state_b": 3}
    assert ds.analysis_covariance.dims == ("state", "state_b")  # the last window's covariance
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name") and "units" in var.attrs, name
    assert ds.window_chunks.values.tolist() == [1, 2, 3, 4, 4, 4]  # W = 4 by default
    assert np.all(ds.cost_end.values <= ds.cost_start.values)
    assert np.all(ds.iterations.values >= 1) and set(ds.converged.values) <= {0, 1}
    assert np.all(np.isfinite(ds.analysis_mean.values))
    assert np.all(ds.analysis_spread.values < ds.forecast_spread.values)
    # the forecast of chunk k + 1 is the analysis of chunk k (random walk)
    np.testing.assert_allclose(ds.forecast_mean.values[1:], ds.analysis_mean.values[:-1])
    a = ds.attrs
    assert (a["method"], a["status"], a["tokens_scored"]) == (method, "complete", 48)
    assert json.loads(a["filter_params"])["window"] == 4
    disk = open_trajectory(path)
    xr.testing.assert_allclose(disk.drop_attrs(), ds.drop_attrs())


def test_4dvar_window_of_one_chunk_is_3dvar():
    """W = 1: each window holds only the new chunk, with background the last analysis: 3D-Var."""
    model = model_for("gpt2")
    ids = stream(model, 41)
    placement = Subspace.random(HiddenScale(model), k=4, seed=2)
    run = lambda m: OnlineAssimilator(placement, m, protocol=PROTOCOL,  # noqa: E731
                                      Q=0.0).run(ids)
    var4 = run(make_method("4dvar", window=1, P0=0.1, gtol=1e-7, maxiter=100))
    var3 = run(make_method("3dvar", P0=0.1, gtol=1e-7, maxiter=100))
    assert var4.window_chunks.values.tolist() == [1] * 5
    # the same minimiser up to the float32 model's noise in the stopping points
    np.testing.assert_allclose(var4.analysis_mean.values, var3.analysis_mean.values, atol=1e-4)


@pytest.mark.parametrize("method", ["4dvar", "w4dvar"])
def test_the_score_of_a_chunk_does_not_depend_on_its_tokens_under_4dvar(method):
    """Prequential honesty of the windowed analysis (the window solved at chunk k comes after
    chunk k is scored)."""
    model = model_for("gpt2")
    ids = stream(model, 57)
    k = 5  # a full window (chunks 2-5) by then
    start = int(PROTOCOL.starts(57)[k])
    other = ids.copy()
    other[start:start + PROTOCOL.chunk] = (ids[start:start + PROTOCOL.chunk] + 7) % 97
    run = lambda x: OnlineAssimilator(Subspace.random(HiddenScale(model), k=4, seed=3),  # noqa
                                      method, protocol=PROTOCOL, seed=5).run(x)
    a, b = run(ids), run(other)
    np.testing.assert_array_equal(a.forecast_mean.values[:k + 1], b.forecast_mean.values[:k + 1])
    np.testing.assert_array_equal(a.nll.values[:k], b.nll.values[:k])
    assert not np.array_equal(a.nll.values[k], b.nll.values[k])
    assert not np.array_equal(a.forecast_mean.values[k + 1], b.forecast_mean.values[k + 1])


def test_planted_shift_is_recovered_by_4dvar():
    """Strong-constraint 4D-Var over windows of 4 chunks, in a subspace holding the planted
    directions, moves to the planted state (corr > 0.9) and closes most of the perplexity gap."""
    seed, n_tokens = 0, 601
    model, protocol, K, ps, basis, frozen, oracle = _planted_setup(seed, n_tokens)
    late = slice(K // 2, K)
    ds = OnlineAssimilator(Subspace(HiddenScale(model), basis), "4dvar", protocol=protocol,
                           P0=0.1, Q=1e-3, seed=seed).run(ps.token_ids)
    est = ds.analysis_mean.values @ basis.T
    corr = np.corrcoef(est[late].mean(0), ps.state)[0, 1]
    nll = ds.nll.values[late].mean()
    gap = (np.mean(frozen[late]) - nll) / (np.mean(frozen[late]) - np.mean(oracle[late]))
    print(f"\n4dvar: corr {corr:.3f}, perplexity {math.exp(nll):.2f} (frozen "
          f"{math.exp(np.mean(frozen[late])):.2f}, truth {math.exp(np.mean(oracle[late])):.2f}), "
          f"gap closed {gap:.2f}")
    assert corr > 0.9, corr
    assert gap > 0.8, gap
    assert math.exp(nll) < math.exp(np.mean(frozen[late]))


def test_4dvar_rejects_settings_it_cannot_run():
    model = model_for("gpt2")
    ids = stream(model, 41)
    with pytest.raises(ValueError, match="needs a model-error covariance: Q must be > 0"):
        OnlineAssimilator(HiddenScale(model), "w4dvar", protocol=PROTOCOL, Q=0.0).run(ids)
    dyn = LearnedDynamics(TransitionNetwork(32, 32))
    with pytest.raises(ValueError, match="LearnedDynamics reads each chunk's summary"):
        OnlineAssimilator(HiddenScale(model), "4dvar", protocol=PROTOCOL, dynamics=dyn).run(ids)
    assert parse_methods("4D-Var,weak-4dvar") == ["4dvar", "w4dvar"]
    assert make_method("4dvar", window=6, P0=0.2).window == 6
