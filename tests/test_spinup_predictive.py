"""The predictive spin-up objective (da_embed.spinup.predictive) on tiny models.

Kinds of checks: the torch EKF cycle against the EKF of :mod:`filters` on the same
inputs (float64); the gradient through an unrolled window against central finite
differences; the loss falls on a planted stream; bit-for-bit resume; the CLI and
``compare --dynamics``; bad input.
"""

import importlib

import numpy as np
import pytest
import torch

from da_embed.assimilator import PrequentialConfig
from da_embed.cli import main
from da_embed.compare import compare
from da_embed.observations import TokenNLLObservation, predicted_observation, pseudo_observation
from da_embed.placements import EmbeddingScale, HiddenScale
from da_embed.planted import planted_drift
from da_embed.spinup import SpinupConfig, load_spinup, spinup
from da_embed.testing import random_input_ids, tiny_gpt2
from filters import EKF
from filters.covariance import as_covariance
from filters.kalman import kalman_analysis, kalman_predict
from filters.states import GaussianState

sp = importlib.import_module("da_embed.spinup")
pred = importlib.import_module("da_embed.spinup.predictive")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXACT = 1e-10
TINY = dict(chunk=8, context=8, window=3, batch=2, hidden=4, rank=2, objective="predictive")


def _model(seed=0, **kw):
    return tiny_gpt2(seed=seed, initializer_range=1.0, **kw)


@pytest.fixture(scope="module")
def tiny_stream():
    model = _model()
    return model, random_input_ids(model, 1, 161, seed=3)[0].numpy()


def _spd(n, seed, scale=0.1):
    g = np.random.default_rng(seed)
    A = g.standard_normal((n, n))
    return scale * (A @ A.T / n + np.eye(n))


def _perturbed_learned(n, d, seed=1):
    """A _Learned whose networks are not the identity (so every term of F matters)."""
    learned = sp._Learned(n, d, SpinupConfig(hidden=4, rank=2, objective="predictive"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (learned.transition.out.weight, learned.transition.out.bias,
                  learned.adapter.B.weight):
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return learned


# ------------------------------------------------------- the EKF against filters
def test_torch_ekf_equations_equal_filters_kalman():
    n, m = 6, 4
    g = np.random.default_rng(0)
    mean, P, F = g.standard_normal(n), _spd(n, 1), g.standard_normal((n, n))
    q, H, d = 0.01 + g.random(n), g.standard_normal((m, n)), g.standard_normal(m)
    _, Pf = kalman_predict(mean, P, F, np.diag(q))
    t = torch.as_tensor
    np.testing.assert_allclose(pred._ekf_forecast(t(P), t(F), t(q)).numpy(), Pf, atol=EXACT)
    ma, Pa = kalman_analysis(mean, Pf, d, H, as_covariance(0.7, m))
    ta, tP = pred._ekf_analysis(t(mean), t(Pf), t(d), t(H), 0.7)
    np.testing.assert_allclose(ta.numpy(), ma, atol=EXACT)
    np.testing.assert_allclose(tP.numpy(), Pa, atol=EXACT)
    with pytest.raises(FloatingPointError, match="EKF diverged"):  # an exploded state
        pred._ekf_analysis(t(mean), t(Pf) * np.nan, t(d), t(H), 0.7)


def test_one_torch_ekf_cycle_equals_the_ekf_of_filters_on_a_language_model():
    """Forecast with the learned dynamics, then the analysis of a chunk's tokens: the torch
    cycle of the predictive objective is filters.EKF with TokenNLLObservation (float64)."""
    model = _model().double()
    ids = random_input_ids(model, 1, 24, seed=5)[0].numpy()
    n = d = model.config.n_embd
    learned = _perturbed_learned(n, d)
    dyn = learned.dynamics()
    g = np.random.default_rng(2)
    mean, P, h = 0.1 * g.standard_normal(n), _spd(n, 3), g.standard_normal(d)
    q = 0.01 + 0.01 * g.random(n)
    with HiddenScale(model).attached() as placement:
        obs = TokenNLLObservation(placement, ids, 8)
        assert obs.fast_
        dyn.set_summary(h)
        ekf, rng = EKF(), np.random.default_rng(0)
        fc = ekf.forecast(GaussianState(mean, P), dyn, 0.0, 1.0, 1, as_covariance(q, n, "Q"),
                          rng)
        y = pseudo_observation(predicted_observation(ekf, fc, obs), "decrement", 1.0)
        an = ekf.analysis(fc, y, obs, as_covariance(1.0, 8), rng)
        head = model.get_output_embeddings()
        chunks = sp._FastChunks([obs], (head.weight.double(), None), None)
        nll_ref = obs(fc.mean)
    tm, tP, th = torch.as_tensor(mean)[None], torch.as_tensor(P)[None], torch.as_tensor(h)[None]
    with torch.no_grad():
        mf = learned.step(tm, th)
        Pf = pred._ekf_forecast(tP, learned.jacobian(tm, th), torch.exp(learned.log_q) * 0
                                + torch.as_tensor(q))
        tok, G = pred._token_terms(chunks, torch.tensor([0]), mf)
        ma, Pa = pred._ekf_analysis(mf, Pf, torch.full_like(tok, -1.0), G, 1.0)
    np.testing.assert_allclose(mf[0].numpy(), fc.mean, atol=EXACT)
    np.testing.assert_allclose(Pf[0].numpy(), fc.cov, atol=EXACT)
    np.testing.assert_allclose(tok[0].numpy(), nll_ref, atol=EXACT)
    np.testing.assert_allclose(ma[0].numpy(), an.mean, atol=EXACT)
    np.testing.assert_allclose(Pa[0].numpy(), an.cov, atol=EXACT)


# ------------------------------------------------ the gradient of the unrolled window
def test_gradient_through_an_unrolled_window_equals_finite_differences(tiny_stream):
    """One window starts from the prior, the other from a carried analysis; the gradient of
    the prequential NLL in every learned parameter (through forecasts, gains, the token
    Jacobians and the Cholesky solve) against central differences along a random direction."""
    model, ids = tiny_stream
    cfg = SpinupConfig(**TINY)
    placement = HiddenScale(model)
    corpus = sp.chunks._corpus(placement, ids, cfg)
    n, d = placement.state_dim, model.config.n_embd
    learned = _perturbed_learned(n, d)
    with torch.no_grad():
        learned.initial.copy_(0.2 * torch.randn(n, dtype=torch.float64,
                                                generator=torch.Generator().manual_seed(4)))
    params = [p for _, p in learned.trainable(cfg)]
    g = np.random.default_rng(6)
    carried = {"carry": torch.as_tensor(0.1 * g.standard_normal((2, n))),
               "carry_cov": torch.as_tensor(np.stack([_spd(n, 7), _spd(n, 8)])),
               "carry_h": torch.as_tensor(g.standard_normal((2, d)))}
    restart = torch.tensor([True, False])
    with placement.attached():
        cache = sp._ChunkCache(placement, corpus.docs, corpus.doc_of, corpus.starts,
                               cfg.protocol, 100)
        chunks = cache.chunks(np.r_[0:3, 5:8])

        def loss():
            return pred._unroll(chunks, learned, cfg, 2, 3, carried, restart)[0].sum()

        with torch.enable_grad():
            grads = torch.autograd.grad(loss(), params)
        v = [torch.as_tensor(g.standard_normal(tuple(p.shape))) for p in params]
        exact = sum(float((gi * vi).sum()) for gi, vi in zip(grads, v))
        eps, vals = 1e-5, []
        for sign in (1, -1):
            with torch.no_grad():
                for p, vi in zip(params, v):
                    p.add_(sign * eps * vi)
                vals.append(float(loss()))
                for p, vi in zip(params, v):
                    p.sub_(sign * eps * vi)
    fd = (vals[0] - vals[1]) / (2 * eps)
    assert abs(exact) > 1e-3  # the direction is informative
    assert abs(fd - exact) <= 1e-6 * abs(exact), (fd, exact)


# ---------------------------------------------------------------- training
def test_predictive_loss_falls_on_a_planted_stream():
    """Streams that sit at a state off zero: the random walk from s_b = 0 pays for every
    track start; learning s_b, Q (and the networks) lowers the prequential NLL of the same
    windows from the first pass over them to the last."""
    model = _model()
    protocol = PrequentialConfig(chunk=8, context=8)
    placement = HiddenScale(model)
    n = placement.state_dim
    s0 = np.zeros(n)
    s0[:4] = [1.5, -1.5, 1.0, -1.0]
    ps = planted_drift(placement, protocol, 8 * 13, A=np.eye(n), Q=1e-4, initial=s0,
                       streams=4, seed=1)
    cfg = SpinupConfig(chunk=8, context=8, window=4, batch=4, steps=30, lr=0.01,
                       hidden=4, rank=2, objective="predictive", grad_clip=10.0)
    res = spinup(placement, list(ps.token_ids), cfg, progress=False)
    obj = res.history["objective"].values
    per_pass = 3  # 3 windows of 4 chunks per stream, one stream per track
    first, last = obj[:per_pass].mean(), obj[-per_pass:].mean()
    print(f"\nprequential NLL per token: first pass {first:.4f}, last pass {last:.4f}; "
          f"|s_b| = {np.linalg.norm(res.initial_state):.3f}")
    assert last < first - 0.05, (first, last)
    assert np.all(np.isfinite(res.Q)) and np.all(res.Q > 0)


def test_predictive_resume_continues_bit_for_bit(tiny_stream, tmp_path):
    model, ids = tiny_stream
    kw = dict(**TINY, checkpoint_every=3, m_steps=2, grad_clip=0.5, lr=0.05)
    cfg = SpinupConfig(**kw, steps=6)
    straight = spinup(HiddenScale(model), ids, cfg, out=tmp_path / "a", progress=False)
    half = spinup(HiddenScale(model), ids, SpinupConfig(**kw, steps=3), out=tmp_path / "b",
                  progress=False)
    assert half.step == 3
    resumed = spinup(HiddenScale(model), ids, cfg, out=tmp_path / "b", resume=tmp_path / "b",
                     progress=False)
    a, b = straight.dynamics, resumed.dynamics
    for x, y in zip([*a.transition.parameters(), *a.adapter.parameters()],
                    [*b.transition.parameters(), *b.adapter.parameters()]):
        assert torch.equal(x, y)
    assert np.array_equal(straight.Q, resumed.Q)
    assert np.array_equal(straight.initial_state, resumed.initial_state)
    np.testing.assert_array_equal(straight.history["objective"].values,
                                  resumed.history["objective"].values)
    assert not np.array_equal(straight.Q, np.full_like(straight.Q, 0.01))  # it learned
    back = load_spinup(tmp_path / "a")
    assert back.config.objective == "predictive" and np.array_equal(back.Q, straight.Q)
    # An EM checkpoint does not resume a predictive run, nor the other way round.
    with pytest.raises(ValueError, match="objective"):
        spinup(HiddenScale(model), ids, SpinupConfig(**{**kw, "objective": "em"}, steps=6),
               resume=tmp_path / "b", progress=False)


def test_em_identity_omits_the_new_fields_at_their_defaults():
    """Checkpoints of the EM objective written before the new fields existed still match."""
    ident = SpinupConfig().identity()
    assert not {"objective", "grad_clip", "obs_var", "decrement"} & set(ident)
    assert SpinupConfig(objective="predictive").identity()["objective"] == "predictive"


def test_compare_takes_a_predictive_checkpoint_and_prints_the_parameter_count(tiny_stream,
                                                                               tmp_path):
    model, ids = tiny_stream
    spinup(HiddenScale(model), ids, SpinupConfig(**TINY, steps=2), out=tmp_path / "spin",
           progress=False)
    lines = []
    out = compare(model, ids, methods="frozen,ekf", protocol=PrequentialConfig(8, 8),
                  dynamics=tmp_path / "spin", print_fn=lines.append, n_boot=20)
    assert [r["method"] for r in out.rows] == ["frozen", "frozen+learned", "ekf",
                                               "ekf+learned"]
    said = [x for x in lines if x.startswith("learned dynamics")]
    n = d = model.config.n_embd
    count = (n + d) * 4 + 4 + 4 * n + n + d * 2 + 2 * n  # transition + adapter
    assert said == [f"learned dynamics (predictive objective, step 2): {count - d * 2 - 2 * n}"
                    f" transition + {d * 2 + 2 * n} adapter = {count} parameters "
                    f"(state n = {n})"], said


def test_cli_spinup_predictive(tmp_path, capsys):
    from da_embed.reference import train_tokenizer

    text = "The quick brown fox jumps over the lazy dog; the dog sleeps.\n" * 30
    tokenizer = train_tokenizer(text, vocab_size=300)
    model = _model(vocab_size=len(tokenizer))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    common = ["--model", folder, "--corpus", corpus, "--chunk", 8, "--context", 8,
              "--no-progress", "--window", 3, "--batch", 2, "--hidden", 4, "--rank", 2]
    code = main([str(a) for a in ["spinup", *common, "--steps", 2, "--objective", "predictive",
                                  "--grad-clip", 1, "--subspace", "random:3",
                                  "--out", tmp_path / "spin"]])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "spin-up done: 2 steps" in out.out
    assert "learned dynamics (predictive objective)" in out.out
    assert load_spinup(tmp_path / "spin").config.grad_clip == 1.0
    for args, message in [(["--objective", "predictive", "--constraint", "strong"],
                           "needs constraint='weak'"),
                          (["--objective", "predictive", "--grad-clip", 0], "grad_clip must be"),
                          (["--objective", "predictive", "--placement", "embedding"],
                           "needs a HiddenScale state")]:
        code = main([str(a) for a in ["spinup", *common, *args, "--out", tmp_path / "x"]])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bad_predictive_settings_are_refused(tiny_stream):
    model, ids = tiny_stream
    for kw, message in [(dict(objective="fast"), "objective must be one of"),
                        (dict(objective="predictive", constraint="strong"), "constraint='weak'"),
                        (dict(obs_var=0.0), "obs_var must be"),
                        (dict(decrement=-1.0), "decrement must be")]:
        with pytest.raises(ValueError, match=message):
            SpinupConfig(**kw)
    with pytest.raises(ValueError, match="needs a HiddenScale state"):
        spinup(EmbeddingScale(model), ids, SpinupConfig(**TINY, steps=1), progress=False)
