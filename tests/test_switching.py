"""Context-conditioned switching on a planted two-domain stream (da_embed.switching, issue 15).

The model of :func:`~da_embed.switching.two_domain_gpt2` makes the chunk summary h carry
the domain by construction; the streams switch between two known domain states at random
chunks.  The learned dynamics are trained with the predictive objective on training
streams, the random walk gets the same objective with only s_b and Q learned (its best
Q); both run the same EKF (:class:`~da_embed.assimilator.OnlineAssimilator`) on held-out
streams with new switch times.  Checks: (i) the learned filter's analysis is within
``REACHED`` of the new domain's state 2 chunks after a switch, the random walk's is not
within 6; (ii) the held-out NLL of the learned filter is lower than the random walk's by
more than the width of its paired 95 % block-bootstrap interval.  A control with summaries
that do not carry the domain shows that the jump comes from h.
"""

import importlib

import numpy as np
import pytest
import torch

from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
from da_embed.metrics import paired_change
from da_embed.placements import HiddenScale, Subspace
from da_embed.spinup import SpinupConfig, spinup
from da_embed.switching import (PlantedSwitch, distance_after_switch, domain_basis,
                                planted_switch, two_domain_gpt2)

sp_chunks = importlib.import_module("da_embed.spinup.chunks")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATES = np.array([[1.0, 0.0], [0.0, 1.0]])  # the domain states z_A, z_B (|z_A - z_B| = 1.41)
REACHED = 0.4 * float(np.linalg.norm(STATES[0] - STATES[1]))  # "at the new state": 0.57
PROTOCOL = PrequentialConfig(chunk=8, context=8)
CHUNKS = 48


def _setup(model):
    return Subspace(HiddenScale(model), domain_basis(model))


def _train(sub, train: PlantedSwitch, steps: int, learn=("initial", "q", "transition",
                                                         "adapter")):
    cfg = SpinupConfig(chunk=8, context=8, window=12, batch=train.token_ids.shape[0],
                       steps=steps, lr=0.03, hidden=8, rank=2, objective="predictive",
                       grad_clip=10.0, learn=learn)
    return spinup(sub, list(train.token_ids), cfg, progress=False)


def _evaluate(sub, res, test: PlantedSwitch):
    """Analysis means (S, K, n) and per-chunk mean NLLs (S, K) of the EKF with res's
    dynamics, Q and s_b (P0 = background_var, as compare --dynamics)."""
    A, N = [], []
    for ids in test.token_ids:
        ds = OnlineAssimilator(sub, "ekf", protocol=PROTOCOL, dynamics=res.dynamics,
                               P0=res.config.background_var, Q=res.Q).run(ids)
        A.append(ds["analysis_mean"].values)
        N.append(ds["nll"].values)
    return np.array(A), np.array(N)


def _study(model, steps: int, test_streams: int, seed: int = 0):
    sub = _setup(model)
    train = planted_switch(sub, PROTOCOL, 8 * CHUNKS + 1, STATES, streams=12, seed=1 + seed)
    test = planted_switch(sub, PROTOCOL, 8 * CHUNKS + 1, STATES, streams=test_streams,
                          seed=100 + seed)
    learned = _train(sub, train, steps)
    walk = _train(sub, train, steps, learn=("initial", "q"))
    (Al, Nl), (Ar, Nr) = _evaluate(sub, learned, test), _evaluate(sub, walk, test)
    dl, dr = distance_after_switch(Al, test, 6), distance_after_switch(Ar, test, 6)
    pc = paired_change(Nl.ravel(), Nr.ravel())
    print(f"\n{dl.shape[0]} held-out switches; mean distance to the new state at lags 1..6:"
          f"\n  learned     {np.round(dl.mean(0), 3)}\n  random walk {np.round(dr.mean(0), 3)}"
          f"\nNLL learned {Nl.mean():.4f}, random walk {Nr.mean():.4f}: {pc.change:+.2f}% "
          f"[{pc.low:+.2f}, {pc.high:+.2f}]; Q learned {learned.Q.round(4)}, "
          f"random walk {walk.Q.round(4)}")
    return dl, dr, pc


def _check(dl, dr, pc):
    assert dl.shape[0] >= 10  # enough held-out switches
    assert dl.mean(0)[1] <= REACHED, dl.mean(0)  # learned: there within 2 chunks
    assert np.all(dr.mean(0)[:4] > REACHED), dr.mean(0)  # random walk: not within 4
    assert pc.high < 0 and -pc.change > pc.high - pc.low, pc


# ------------------------------------------------------------------- the model
def test_chunk_summaries_carry_the_domain():
    """The premise: tokens differ by domain and the summary h the dynamics see tells the
    domains apart (a sign rule on h_0 - h_1); in tiny random GPT-2s it barely does."""
    model = two_domain_gpt2()
    sub = _setup(model)
    ps = planted_switch(sub, PROTOCOL, 8 * 40 + 1, STATES, streams=2, seed=3)
    ds = OnlineAssimilator(sub, "frozen", protocol=PROTOCOL).run(ps.token_ids[0])
    assert ds.sizes["time"] == 40
    from da_embed.observations import TokenNLLObservation

    correct = []
    with sub.attached():
        for j in range(2):
            for k, start in enumerate(PROTOCOL.starts(ps.token_ids.shape[1])):
                a = max(0, start - PROTOCOL.context)
                op = TokenNLLObservation(sub, ps.token_ids[j, a:start + 8], 8)
                op(np.zeros(2))
                h = op.summary_
                correct.append((h[0] - h[1] < 0) == bool(ps.domains[j, k]))
    assert np.mean(correct) >= 0.95, np.mean(correct)
    ids, dom = ps.token_ids[:, 1:], np.repeat(ps.domains, 8, axis=1)
    assert (ids[dom == 0] < 8).mean() > 0.6 and ((ids >= 8) & (ids < 16))[dom == 1].mean() > 0.6


def test_bad_input_is_refused():
    model = two_domain_gpt2()
    sub = _setup(model)
    with pytest.raises(ValueError, match="width must be"):
        two_domain_gpt2(width=4)
    with pytest.raises(ValueError, match="states must be"):
        planted_switch(sub, PROTOCOL, 81, [[1.0, 0.0]])
    with pytest.raises(ValueError, match="segment must"):
        planted_switch(sub, PROTOCOL, 81, STATES, segment=(3, 2))
    with pytest.raises(ValueError, match="streams must"):
        planted_switch(sub, PROTOCOL, 81, STATES, streams=0)
    ps = planted_switch(sub, PROTOCOL, 81, STATES, seed=0)
    with pytest.raises(ValueError, match="analysis must have the shape"):
        distance_after_switch(np.zeros((1, 3, 2)), ps)
    with pytest.raises(ValueError, match="max_lag"):
        distance_after_switch(ps.truth(), ps, max_lag=0)


# --------------------------------------------------------------- the switching test
def test_learned_dynamics_jump_to_the_new_domain_and_beat_the_random_walk():
    """Fast variant: 12 training streams, 200 steps, 6 held-out streams."""
    _check(*_study(two_domain_gpt2(), steps=200, test_streams=8))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_switching_on_more_held_out_streams(seed):
    """Larger variant: 400 steps, 16 held-out streams, other training and test seeds."""
    _check(*_study(two_domain_gpt2(), steps=400, test_streams=16, seed=seed))


@pytest.mark.slow
def test_the_summaries_make_the_jump_faster(monkeypatch):
    """Control on the same streams: dynamics trained and run with every summary set to 0
    (they see the state only) against those that see h.  Without h the dynamics can still
    learn the two domain states as attractors (the analysis, once the new chunk's tokens
    have moved it past the middle, is pulled to the other one), but they are further from
    the new state 2 and 3 chunks after a switch and their held-out NLL is higher."""
    model = two_domain_gpt2()
    sub = _setup(model)
    train = planted_switch(sub, PROTOCOL, 8 * CHUNKS + 1, STATES, streams=12, seed=1)
    test = planted_switch(sub, PROTOCOL, 8 * CHUNKS + 1, STATES, streams=8, seed=100)
    seeing = _train(sub, train, 200)
    init = sp_chunks._FastChunks.__init__

    def blind_init(self, *args):
        init(self, *args)
        self.summaries = torch.zeros_like(self.summaries)

    monkeypatch.setattr(sp_chunks._FastChunks, "__init__", blind_init)
    blind = _train(sub, train, 200)
    blind.dynamics.set_summary = lambda h: None  # its summary stays the zero vector
    (As, Ns), (Ab, Nb) = _evaluate(sub, seeing, test), _evaluate(sub, blind, test)
    ds, db = distance_after_switch(As, test, 6), distance_after_switch(Ab, test, 6)
    pc = paired_change(Ns.ravel(), Nb.ravel())
    print(f"\nmean distance at lags 1..6: with h {np.round(ds.mean(0), 3)}, without "
          f"{np.round(db.mean(0), 3)}; NLL with h against without: {pc.change:+.2f}% "
          f"[{pc.low:+.2f}, {pc.high:+.2f}]")
    assert np.all(ds.mean(0)[1:3] < db.mean(0)[1:3]), (ds.mean(0), db.mean(0))
    assert pc.high < 0, pc
