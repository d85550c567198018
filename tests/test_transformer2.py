"""Transformer^2 baseline: SVF experts per domain, two-pass selection / CEM mixing.

Two synthetic domains with disjoint vocabularies and their own sparse Markov
chains (A: tokens 0-47, B: tokens 48-95) on a tiny Llama with SVF on its MLP
matrices.  The tests prove that an expert learns its own domain (and not the
other), that pass 1 picks the right expert on every segment of an alternating
stream whose context is unambiguous, that CEM finds a known one-hot optimum,
that pass 1 never reads the chunk it adapts to, and that experts survive a
save/load round trip; bad input raises a ValueError naming the problem.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from da_embed import OnlineAssimilator, PrequentialConfig
from da_embed.cli import main
from da_embed.compare import compare, make_placement
from da_embed.corpora import alternate_segments
from da_embed.methods import make_method, parse_methods
from da_embed.placements import HiddenScale
from da_embed.testing import tiny_gpt2, tiny_llama
from da_embed.trajectory import open_trajectory
from da_embed.transformer2 import (Experts, TwoPass, cem_weights, context_nll, load_experts,
                                   train_experts)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Larger weights than the default 0.02 give the tiny model sharp enough logits for SVF to act.
INIT = 0.2
#: Protocol of the stream tests: pass 1 reads at most context + chunk = 24 tokens.
PROTOCOL = PrequentialConfig(chunk=8, context=16)
SEGMENT = 96
#: SVF on every linear layer (MLP and attention: n = 384): the clean-context selection
#: margins are >= 0.37 nats/token here, against >= -0.17 with the MLP matrices alone.
SPEC = "svf:all"


def markov_domain(seed: int, lo: int, hi: int, n: int, k: int = 3) -> np.ndarray:
    """n tokens of a sparse Markov chain on [lo, hi): each token has k successors."""
    rng = np.random.default_rng(seed)
    V = hi - lo
    succ = rng.integers(0, V, (V, k))
    out = [int(rng.integers(V))]
    for _ in range(n - 1):
        out.append(int(succ[out[-1], rng.integers(k)]))
    return lo + np.array(out, dtype=np.int64)


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(initializer_range=INIT)
    A, B = markov_domain(1, 0, 48, 3000), markov_domain(2, 48, 96, 3000)
    experts = train_experts(model, {"A": A[:2000], "B": B[:2000]}, placement=SPEC, steps=60,
                            lr=0.1, batch=4, seq_len=32, progress=False)
    return model, {"A": A[2000:], "B": B[2000:]}, experts


def held_out_nll(placement, states, ids, length=24):
    windows = [ids[i:i + length] for i in range(0, ids.size - length, length)]
    return np.mean([context_nll(placement, states, w) for w in windows], axis=0)


def test_context_nll_of_the_base_model_is_the_models_own_loss():
    model = tiny_gpt2(initializer_range=INIT)
    ids = torch.arange(3, 40)
    with HiddenScale(model).attached() as placement:
        nll = context_nll(placement, np.zeros((2, 32)), ids.numpy())
    with torch.no_grad():
        loss = float(model(ids[None], labels=ids[None]).loss)  # HF's own shifted cross-entropy
    np.testing.assert_allclose(nll, [loss, loss], rtol=1e-5)


def test_an_expert_learns_its_domain_and_not_the_other(setup):
    model, test, experts = setup
    placement = make_placement(model, SPEC)
    assert experts.states.shape == (2, placement.state_dim)
    X = np.vstack([np.zeros(experts.state_dim), experts.states])  # base, A, B
    with placement.attached():
        on_a = held_out_nll(placement, X, test["A"])
        on_b = held_out_nll(placement, X, test["B"])
    # Held-out text: each expert gains > 0.3 nats/token on its own domain ...
    assert on_a[1] < on_a[0] - 0.3 and on_b[2] < on_b[0] - 0.3, (on_a, on_b)
    # ... and nothing on the other one (a shared, domain-blind gain would show here).
    assert on_b[1] > on_b[0] - 0.05 and on_a[2] > on_a[0] - 0.05, (on_a, on_b)
    for name in ("A", "B"):
        assert experts.training["loss_last"][name] < experts.training["loss_first"][name] - 0.3


def stream_of(test):
    return alternate_segments({"A": test["A"][:3 * SEGMENT], "B": test["B"][:3 * SEGMENT]},
                              SEGMENT)


def domain_of(position, segments):
    return next(s["domain"] for s in segments if s["start"] <= position < s["stop"])


def test_select_picks_the_right_expert_on_every_segment(setup):
    model, test, experts = setup
    ids, segments = stream_of(test)
    run = OnlineAssimilator(make_placement(model, SPEC), TwoPass(experts), protocol=PROTOCOL)
    ds = run.run(ids)
    starts = ds["chunk_start"].values
    L, C = PROTOCOL.chunk, PROTOCOL.context
    clean = 0
    for k, entry in enumerate(run.filter_.history_[:-1]):
        # Entry k chose the state of chunk k + 1 from stream tokens [a, starts[k] + L).
        first, last = max(0, starts[k] - C), starts[k + 1] + L - 1
        doms = {domain_of(first, segments), domain_of(last, segments)}
        chosen = experts.names[int(np.argmax(entry["weights"]))]
        if len(doms) == 1:  # context and chunk in one domain: the choice is unambiguous
            clean += 1
            assert chosen == doms.pop(), f"chunk {k + 1}: chose {chosen}"
        # Pass 2 scores chunk k + 1 with exactly the chosen expert.
        np.testing.assert_array_equal(ds["forecast_mean"].values[k + 1],
                                      experts.states[int(np.argmax(entry["weights"]))])
    assert clean >= 40
    frozen = OnlineAssimilator(make_placement(model, SPEC), "frozen", protocol=PROTOCOL).run(ids)
    assert ds.attrs["perplexity"] < 0.8 * frozen.attrs["perplexity"]


def test_cem_recovers_a_one_hot_optimum():
    target = np.array([0.0, 0.0, 1.0, 0.0])

    def objective(W):
        return ((W - target) ** 2).sum(1)

    res = cem_weights(objective, 4, population=32, iterations=6, rng=3)
    assert np.abs(res.weights - target).max() < 0.1, res.weights
    assert res.value == pytest.approx(objective(res.weights[None])[0])
    assert res.evaluations == 6 * 32
    again = cem_weights(objective, 4, population=32, iterations=6, rng=3)
    np.testing.assert_array_equal(res.weights, again.weights)  # seeded
    other = cem_weights(objective, 4, population=32, iterations=6, rng=4)
    assert not np.array_equal(res.weights, other.weights)
    seeded = cem_weights(objective, 4, iterations=1, initial_candidates=np.eye(4), rng=0)
    np.testing.assert_array_equal(seeded.weights, target)  # initial candidates are evaluated


def test_cem_mixing_on_the_model_prefers_the_contexts_domain(setup):
    model, test, experts = setup
    placement = make_placement(model, SPEC)
    ctx = test["A"][:24]
    with placement.attached():
        w_sel, sel = TwoPass(experts).choose(placement, ctx)
        w_cem, cem = TwoPass(experts, mode="cem").choose(placement, ctx, rng=0)
        direct = context_nll(placement, (w_cem @ experts.states)[None], ctx)[0]
    assert w_sel.tolist() == [1.0, 0.0]
    assert w_cem[0] > 0.5 and w_cem[0] > w_cem[1] + 0.5, w_cem
    assert cem["context_nll"] <= sel["context_nll"] + 1e-9  # CEM's first draws include select's
    assert direct == pytest.approx(cem["context_nll"], rel=1e-9)


def test_pass_one_never_reads_the_chunk_it_adapts_to(setup):
    model, test, experts = setup
    ids, _ = stream_of(test)
    j = 20  # a chunk inside an A segment
    starts = PROTOCOL.starts(ids.size)
    changed = ids.copy()
    changed[starts[j]:starts[j] + PROTOCOL.chunk] = test["B"][500:500 + PROTOCOL.chunk]

    short = PrequentialConfig(PROTOCOL.chunk, PROTOCOL.context,
                              max_tokens=int(starts[j + 2]))  # chunks 0 .. j + 1

    def run(stream):
        runner = OnlineAssimilator(make_placement(model, SPEC), TwoPass(experts, mode="cem"),
                                   protocol=short, seed=5)
        return runner.run(stream), runner.filter_.history_

    ds0, h0 = run(ids)
    ds1, h1 = run(changed)
    for k in range(j):  # every choice up to the one used for chunk j is the same
        np.testing.assert_array_equal(h0[k]["weights"], h1[k]["weights"])
    np.testing.assert_array_equal(ds0["forecast_mean"].values[:j + 1],
                                  ds1["forecast_mean"].values[:j + 1])
    # The test has power: chunk j itself, and the choice made after reading it, do change.
    assert ds0["nll"].values[j] != ds1["nll"].values[j]
    assert h0[j]["context_nll"] != h1[j]["context_nll"]


def test_save_load_round_trip(setup, tmp_path):
    model, test, experts = setup
    path = experts.save(tmp_path / "sub" / "experts")
    assert path.name == "experts.json" and (tmp_path / "sub" / "experts.npz").exists()
    for p in (path, tmp_path / "sub" / "experts.npz", tmp_path / "sub" / "experts"):
        back = load_experts(p)
        assert back.names == experts.names and back.model_sha256 == experts.model_sha256
        np.testing.assert_array_equal(back.states, experts.states)  # bit for bit
        assert back.placement == experts.placement and back.placement_spec == SPEC
        assert {k: v for k, v in back.training.items() if k != "path"} == experts.training
    placement = make_placement(model, SPEC)
    back.check_placement(placement)
    with placement.attached():
        w0, _ = TwoPass(experts).choose(placement, test["B"][:24])
        w1, _ = TwoPass(back).choose(placement, test["B"][:24])
    assert w0.tolist() == w1.tolist() == [0.0, 1.0]
    assert json.loads(path.read_text())["format"] == "da-embed-experts-1"


def test_bad_input_raises_clear_value_errors(setup, tmp_path):
    model, test, experts = setup
    with pytest.raises(ValueError, match="no expert vectors"):
        Experts((), np.zeros((0, 4)), {})
    with pytest.raises(ValueError, match="names must be 2 unique non-empty strings"):
        Experts(("a", "a"), np.zeros((2, 4)), {})
    with pytest.raises(ValueError, match="corpora must be a non-empty dict"):
        train_experts(model, {}, progress=False)
    with pytest.raises(ValueError, match=r"corpora\['A'\] has 10 tokens; at least seq_len"):
        train_experts(model, {"A": test["A"][:10]}, seq_len=32, progress=False)
    with pytest.raises(ValueError, match="model's vocabulary"):
        train_experts(model, {"A": np.full(50, 500)}, seq_len=8, progress=False)
    with pytest.raises(ValueError, match="t2 needs experts"):
        make_method("t2").validate()
    with pytest.raises(ValueError, match="mode must be 'select' or 'cem'"):
        TwoPass(experts, mode="vote").validate()
    with pytest.raises(ValueError, match="elite .9. must not exceed population .8."):
        TwoPass(experts, mode="cem", population=8, elite=9).validate()
    # Mismatched placement size: experts of svf (n = 192) on a HiddenScale run (n = 32).
    with pytest.raises(ValueError, match="state size n = 384 .* has n = 32"):
        OnlineAssimilator(HiddenScale(model), TwoPass(experts), protocol=PROTOCOL).run(
            test["A"][:100])
    with pytest.raises(ValueError, match="state size n = 384"):
        experts.check_placement(make_placement(model, "svf:mlp"))
    with pytest.raises(ValueError, match="trained on another model"):
        experts.check_placement(make_placement(tiny_llama(seed=1, initializer_range=INIT), SPEC))
    with pytest.raises(ValueError, match="full state"):
        parse_methods("frozen,t2@fisher:4")
    with pytest.raises(ValueError, match="t2 needs experts"):  # before any method runs
        compare(model, test["A"][:100], methods="frozen,t2", placement=SPEC,
                protocol=PROTOCOL, print_fn=None)
    with pytest.raises(FileNotFoundError, match="no experts file"):
        load_experts(tmp_path / "missing")
    with pytest.raises(ValueError, match="segment_tokens must be an integer >= 1"):
        alternate_segments({"A": test["A"]}, 0)
    with pytest.raises(ValueError, match=r"streams\['B'\] has 5 tokens, fewer than one segment"):
        alternate_segments({"A": test["A"], "B": test["B"][:5]}, 8)


def test_alternate_segments_layout():
    a, b, c = np.arange(0, 10), np.arange(100, 107), np.arange(200, 230)
    ids, segments = alternate_segments({"a": a, "b": b, "c": c}, 3)
    # Rounds a b c, a b c; the third round stops at b (only 1 token left), after a's segment.
    assert ids.tolist() == [0, 1, 2, 100, 101, 102, 200, 201, 202, 3, 4, 5, 103, 104, 105,
                            203, 204, 205, 6, 7, 8]
    assert [s["domain"] for s in segments] == ["a", "b", "c"] * 2 + ["a"]
    for s in segments:
        assert s["stop"] - s["start"] == 3
        source = {"a": a, "b": b, "c": c}[s["domain"]]
        assert np.isin(ids[s["start"]:s["stop"]], source).all()


def test_compare_on_a_multi_domain_stream(setup, tmp_path):
    model, test, experts = setup
    ids, segments = stream_of(test)
    res = compare(model, ids, methods="frozen,t2", placement=SPEC, experts=experts,
                  segments=segments, protocol=PROTOCOL, out=tmp_path, print_fn=None,
                  n_boot=200)
    rows = {r["method"]: r for r in res.rows}
    assert rows["t2"]["perplexity"] < rows["frozen"]["perplexity"]
    assert rows["t2"]["adapt_params"] == 2 * experts.state_dim
    for r in rows.values():
        assert set(r["domains"]) == {"A", "B"}
    assert rows["t2"]["domains"]["A"] < rows["frozen"]["domains"]["A"]
    assert rows["t2"]["domains"]["B"] < rows["frozen"]["domains"]["B"]
    assert "perplexity by domain" in res.table()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["segments"] == segments
    assert summary["settings"]["experts"]["names"] == ["A", "B"]
    assert json.loads(open_trajectory(tmp_path / "t2.nc").attrs["segments"]) == segments


# ----------------------------------------------------------------------- CLI
CODE = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n    y: int = 0\n"
PROSE = "The river runs past the old mill, and the village sleeps under the hill.\n"


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    from da_embed.reference import train_tokenizer

    folder = tmp_path_factory.mktemp("t2cli")
    tokenizer = train_tokenizer((CODE + PROSE) * 20, vocab_size=300)
    model = tiny_llama(vocab_size=len(tokenizer), initializer_range=INIT)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    for name, text in (("code", CODE), ("prose", PROSE)):
        (folder / f"{name}.txt").write_text(text * 12, encoding="utf-8")
    return folder


def cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_trains_experts_and_runs_t2_on_a_multi_domain_stream(cli_files, tmp_path, capsys):
    f = cli_files
    common = ["compare", "--model", f / "model", "--corpus", f"code={f / 'code.txt'}",
              "--corpus", f / "prose.txt", "--segment-tokens", 64, "--chunk", 8, "--context",
              16, "--max-tokens", 200, "--no-progress"]
    out = tmp_path / "out"
    train = ["--methods", "frozen,t2,t2-cem", "--expert-corpus", f"code={f / 'code.txt'}",
             "--expert-corpus", f"prose={f / 'prose.txt'}", "--expert-steps", 5, "--out", out]
    # The expert corpora are the evaluated texts themselves: refused in one line ...
    code, _, stderr = cli(common + train, capsys)
    assert code == 2 and "--expert-corpus 'code' shares" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "--allow-overlap" in stderr
    # ... and run when the overlap is allowed (this test is about the pipeline).
    code, stdout, stderr = cli(common + train + ["--allow-overlap"], capsys)
    assert code == 0, stderr
    assert "multi-domain stream: code" in stdout and "prose" in stdout
    assert "perplexity by domain" in stdout and "\nt2-cem" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["placement"] == "svf"  # t2 methods default to SVF
    segments = summary["settings"]["segments"]  # those of the 200 tokens read
    assert [(s["domain"], s["start"], s["stop"]) for s in segments] == [
        ("code", 0, 64), ("prose", 64, 128), ("code", 128, 192), ("prose", 192, 200)]
    experts = load_experts(out / "experts.json")
    assert experts.names == ("code", "prose") and experts.training["steps"] == 5
    # The saved experts run again (the placement comes from them); they remember what they
    # were trained on (their windows), so the same overlap is refused again unless allowed.
    again = common + ["--methods", "frozen,t2", "--experts", out / "experts.json", "--out",
                      tmp_path / "again"]
    code, _, stderr = cli(again, capsys)
    assert code == 2 and "the corpus of expert 'code' shares" in stderr, stderr
    code, stdout, stderr = cli(again + ["--allow-overlap"], capsys)
    assert code == 0, stderr
    # Pass-1 options reach the methods (and are recorded in the trajectories).
    code, stdout, stderr = cli(common + ["--methods", "frozen,t2,t2-cem", "--experts",
                                         out / "experts.json", "--t2-context", 12,
                                         "--t2-population", 6, "--out", tmp_path / "opts",
                                         "--allow-overlap"],
                               capsys)
    assert code == 0, stderr
    params = {m: json.loads(open_trajectory(tmp_path / "opts" / f"{m}.nc").attrs["filter_params"])
              for m in ("t2", "t2-cem")}
    assert params["t2"]["context_tokens"] == 12 and params["t2-cem"]["context_tokens"] == 12
    assert params["t2-cem"]["population"] == 6 and params["t2-cem"]["elite"] == 6
    assert params["t2"]["population"] == 32  # select mode: population unused, default kept


@pytest.mark.parametrize("extra,message", [
    (["--methods", "frozen,t2"], "needs expert states: --experts PATH"),
    (["--methods", "frozen,ekf", "--experts", "X"], "are used only by the t2 and t2-cem"),
    (["--methods", "frozen,t2", "--experts", "X", "--expert-corpus", "a=b"], "not both"),
    (["--methods", "frozen,t2", "--experts", "MISSING"], "no experts file"),
    (["--methods", "frozen,t2", "--experts", "SAVED", "--placement", "hidden"],
     "experts have state size n = 192"),
    (["--methods", "frozen,t2", "--expert-corpus", "code="], "the path is empty"),
    (["--methods", "frozen,t2", "--experts", "SAVED", "--t2-context", "1"],
     "--t2-context must be >= 2"),
    (["--methods", "frozen,t2-cem", "--experts", "SAVED", "--t2-population", "1"],
     "--t2-population must be >= 2"),
])
def test_cli_t2_bad_input_is_one_clear_line(cli_files, tmp_path, capsys, extra, message):
    saved = tmp_path / "saved"
    pl = make_placement(tiny_llama(vocab_size=300, initializer_range=INIT), "svf")
    Experts(("a",), np.zeros((1, pl.state_dim)), pl.describe()).save(saved)
    extra = [str(saved) if a == "SAVED" else str(tmp_path / a) if a == "MISSING" else a
             for a in extra]
    code, _, stderr = cli(["compare", "--model", cli_files / "model", "--corpus",
                           cli_files / "code.txt", "--chunk", 8, "--context", 16,
                           "--no-progress", "--out", tmp_path / "out", *extra], capsys)
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert message in stderr, stderr
