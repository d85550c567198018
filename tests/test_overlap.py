"""Tuning and expert texts that overlap the scored text are refused unless allowed (issue 17)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from da_embed.cli import main
from da_embed.compare import compare
from da_embed.overlap import MAX_SHARED, NGRAM, check_disjoint, shared_fraction
from da_embed.protocol import PrequentialConfig
from da_embed.testing import random_input_ids, tiny_gpt2


def naive_fraction(a, b, n):
    """Share of a's n-windows found among b's, by tuples (the definition)."""
    wa = [tuple(a[i:i + n]) for i in range(len(a) - n + 1)]
    wb = {tuple(b[i:i + n]) for i in range(len(b) - n + 1)}
    return sum(w in wb for w in wa) / len(wa) if wa else 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=0, max_size=60),
       st.lists(st.integers(0, 5), min_size=0, max_size=60), st.integers(1, 6))
def test_shared_fraction_is_the_share_of_windows_found_in_the_other_text(a, b, n):
    assert shared_fraction(a, b, n) == pytest.approx(naive_fraction(a, b, n))


def test_independent_streams_pass_and_a_copied_passage_is_refused():
    rng = np.random.default_rng(0)
    scored = rng.integers(0, 50_000, 4000)
    tuning = rng.integers(0, 50_000, 4000)
    assert check_disjoint(scored, tuning, what="the tuning text") == 0.0
    leaked = np.concatenate([tuning, scored[1000:1200]])  # 5% of the scored text copied
    with pytest.raises(ValueError, match=r"the tuning text shares 4\.6% .* 16-token windows "
                                         r".* pass allow_overlap=True"):
        check_disjoint(scored, leaked, what="the tuning text")
    frac = check_disjoint(scored, leaked, what="the tuning text", allow=True)
    assert frac == pytest.approx((200 - NGRAM + 1) / (4000 - NGRAM + 1)) and frac > MAX_SHARED


def test_compare_refuses_to_tune_on_the_scored_stream_unless_allowed():
    model = tiny_gpt2()
    ids = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=2)[0].numpy()
    kw = dict(methods="frozen,dyneval", protocol=PrequentialConfig(chunk=8, context=8),
              print_fn=None, n_boot=20, tune_tokens=16)
    with pytest.raises(ValueError, match="tuning text .tune_ids. shares 100.0%"):
        compare(model, ids, tune_ids=ids, **kw)
    res = compare(model, ids, tune_ids=ids, allow_overlap=True, **kw)
    assert res.settings["tuning_overlap"] == 1.0 and res.settings["allow_overlap"]
    assert "WARNING: the tuning text shares 100.0%" in res.table()
    other = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=3)[0].numpy()
    res = compare(model, ids, tune_ids=other, **kw)
    assert res.settings["tuning_overlap"] < MAX_SHARED and "WARNING" not in res.table()


def test_cli_says_so_in_one_line_and_runs_with_allow_overlap(tmp_path, capsys):
    from da_embed.reference import train_tokenizer

    text = " ".join(f"word{i % 97} w{i % 13}" for i in range(600)) + "\n"
    tokenizer = train_tokenizer(text, vocab_size=300)
    model = tiny_gpt2(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    args = ["compare", "--model", tmp_path / "m", "--corpus", corpus, "--tune-corpus", corpus,
            "--methods", "frozen,dyneval", "--chunk", 8, "--context", 16, "--max-tokens", 120,
            "--tune-tokens", 32, "--out", tmp_path / "out", "--no-progress"]
    capsys.readouterr()  # what saving the model printed
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--allow-overlap" in err[0], err
    assert main([str(a) for a in args] + ["--allow-overlap"]) == 0
    assert "WARNING: the tuning text shares" in capsys.readouterr().out


# ----------------------------------------------------------------------------- spin-up
def test_spinup_refuses_a_training_text_that_overlaps_the_evaluation_text(tmp_path):
    import json

    from da_embed.spinup import SpinupConfig, spinup

    model = tiny_gpt2()
    ids = random_input_ids(model, batch=1, length=97, seed=4)[0].numpy()
    other = random_input_ids(model, batch=1, length=97, seed=5)[0].numpy()
    cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=1, hidden=4, rank=2)
    with pytest.raises(ValueError, match=r"the training text shares 100\.0% .* allow_overlap"):
        spinup(model, ids, cfg, eval_ids=ids, progress=False)
    res = spinup(model, ids, cfg, eval_ids=ids, allow_overlap=True, out=tmp_path / "a",
                 progress=False)
    rec = json.loads(res.history.attrs["overlap"])
    assert rec["shared_fraction"] == 1.0 and rec["allow_overlap"] and rec["ngram"] == NGRAM
    saved = json.loads(res.checkpoint.with_suffix(".json").read_text())
    assert saved["overlap"]["shared_fraction"] == 1.0
    res = spinup(model, ids, cfg, eval_ids=other, progress=False)
    assert json.loads(res.history.attrs["overlap"])["shared_fraction"] < MAX_SHARED


def test_cli_spinup_says_so_in_one_line_and_runs_with_allow_overlap(tmp_path, capsys):
    from da_embed.reference import train_tokenizer

    text = " ".join(f"word{i % 97} w{i % 13}" for i in range(600)) + "\n"
    tokenizer = train_tokenizer(text, vocab_size=300)
    model = tiny_gpt2(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    args = ["spinup", "--model", tmp_path / "m", "--corpus", corpus, "--eval-corpus", corpus,
            "--chunk", 8, "--context", 8, "--window", 3, "--batch", 2, "--steps", 1,
            "--hidden", 4, "--rank", 2, "--out", tmp_path / "out", "--no-progress"]
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--allow-overlap" in err[0], err
    assert main([str(a) for a in args] + ["--allow-overlap"]) == 0
    assert "--allow-overlap given" in capsys.readouterr().out


# ----------------------------------------------------------------------------- Transformer^2
def test_compare_refuses_experts_trained_on_the_scored_text_python_api_too(tmp_path):
    from da_embed.transformer2 import load_experts, train_experts

    model = tiny_gpt2()
    ids = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=2)[0].numpy()
    other = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=3)[0].numpy()
    experts = train_experts(model, {"seen": ids, "other": other}, placement="hidden", steps=1,
                            batch=1, seq_len=8, progress=False)
    kw = dict(methods="frozen,t2", placement="hidden", protocol=PrequentialConfig(8, 8),
              print_fn=None, n_boot=20)
    with pytest.raises(ValueError, match="the corpus of expert 'seen' shares 100.0%"):
        compare(model, ids, experts=experts, **kw)
    back = load_experts(experts.save(tmp_path / "experts"))  # the windows travel with the file
    with pytest.raises(ValueError, match="the corpus of expert 'seen' shares 100.0%"):
        compare(model, ids, experts=back, **kw)
    res = compare(model, ids, experts=back, allow_overlap=True, **kw)
    assert res.settings["expert_overlap"]["seen"] == 1.0
    assert "WARNING: the corpus of expert 'seen' shares 100.0%" in res.table()
    fresh = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=9)[0].numpy()
    res = compare(model, fresh, experts=back, **kw)
    assert max(res.settings["expert_overlap"].values()) < MAX_SHARED
