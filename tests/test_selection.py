"""Selection on validation text, then a report on test that takes its choices from a file (issue 17)."""

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from da_embed.compare import compare
from da_embed.protocol import PrequentialConfig
from da_embed.selection import (draw_configs, file_digest, is_test_split, read_report_text,
                                read_selection, read_selection_input, write_selection)
from da_embed.testing import tiny_gpt2

BENCH = Path(__file__).resolve().parent / "benchmarks"


def _words(seed: int, n: int = 3000) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(f"w{i}" for i in rng.integers(0, 5000, n)) + "\n"


@pytest.fixture
def texts(tmp_path):
    valid, test = tmp_path / "valid.txt", tmp_path / "test.txt"
    valid.write_text(_words(1))
    test.write_text(_words(2))
    return valid, test


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- budgets
def test_every_method_draws_the_same_number_of_distinct_configurations_reproducibly():
    grids = {"dyneval": {"lr": [0.01, 0.1, 1.0], "steps": [1, 2], "optimizer": ["adam", "sgd"]},
             "ekf": {"P0": [0.1, 1.0, 3.0], "Q": [0.01, 0.1], "R": [1.0, 2.0, 4.0]}}
    draws = {k: draw_configs(g, 5, seed=3, key=k) for k, g in grids.items()}
    for k, d in draws.items():
        assert len(d) == 5 and len({tuple(c.items()) for c in d}) == 5
        assert all(set(c) == set(grids[k]) and all(c[n] in grids[k][n] for n in c) for c in d)
        assert d == draw_configs(grids[k], 5, seed=3, key=k)
    assert draw_configs(grids["ekf"], 5, seed=4, key="ekf") != draws["ekf"]
    with pytest.raises(ValueError, match="budget 13 exceeds the 12 configurations"):
        draw_configs(grids["dyneval"], 13)
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        draw_configs(grids["dyneval"], 0)


def test_bench_lm_grids_hold_each_methods_natural_knobs_and_the_budget():
    bench = _bench("bench_lm")
    assert {"lr", "steps", "decay", "optimizer"} <= set(bench.GRIDS["dyneval"])
    assert {"P0", "Q", "R"} <= set(bench.GRIDS["ekf"])
    assert {"P0", "Q", "R", "inflation"} <= set(bench.GRIDS["ensemble"])
    for grid in bench.GRIDS.values():
        assert len(draw_configs(grid, bench.DEFAULT_BUDGET)) == bench.DEFAULT_BUDGET


# ----------------------------------------------------------------------------- the guard
def test_the_selection_step_refuses_a_test_text_without_opening_it(tmp_path, texts):
    valid, test = texts
    text, rec = read_selection_input(valid)
    assert text == valid.read_text() and rec["sha256"] == file_digest(valid)
    assert is_test_split(test) and not is_test_split(valid)
    with pytest.raises(ValueError, match="handed a test split"):
        read_selection_input(test)
    ghost = tmp_path / "heldout.txt"  # forbidden by path: refused, and never opened (absent)
    with pytest.raises(ValueError, match="handed a test split"):
        read_selection_input(ghost, forbidden=[ghost])
    link = tmp_path / "valid-link.txt"
    link.symlink_to(test)
    with pytest.raises(ValueError, match="handed a test split"):
        read_selection_input(link, forbidden=[test])


def test_the_benchmarks_selection_steps_raise_if_handed_the_test_text(texts):
    valid, test = texts
    args = SimpleNamespace(quick=False, methods="frozen,ekf", models="stdlib", out="unused")
    with pytest.raises(ValueError, match="handed a test split"):
        _bench("bench_lm").select_step(args, test, forbidden=[test])
    with pytest.raises(ValueError, match="handed a test split"):
        _bench("bench_lm").select_step(args, valid, forbidden=[valid])
    with pytest.raises(ValueError, match="handed a test split"):
        _bench("bench_spinup").select_step(args, test, forbidden=[test])


def test_the_selection_file_refuses_test_inputs_and_unnamed_headlines(tmp_path, texts):
    valid, test = texts
    _, rec = read_selection_input(valid)
    kw = dict(step="t", methods=[{"row": "ekf", "settings": {}}], budget={"configs": 1})
    with pytest.raises(ValueError, match="is a test text"):
        write_selection(tmp_path / "s.json", headline={"methods": ["ekf"]},
                        inputs=[dict(rec, path=str(test))], **kw)
    with pytest.raises(ValueError, match=r"headline names \['etkf'\]"):
        write_selection(tmp_path / "s.json", headline={"methods": ["etkf"]}, inputs=[rec], **kw)
    (tmp_path / "bad.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(ValueError, match="not a selection file"):
        read_selection(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="run the selection step first"):
        read_selection(tmp_path / "none.json")


def test_the_report_step_refuses_a_test_text_the_selection_saw(tmp_path, texts):
    valid, test = texts
    _, rec = read_selection_input(valid)
    path = write_selection(tmp_path / "s.json", step="t", methods=[], headline={},
                           budget={}, inputs=[rec])
    sel = read_selection(path)
    assert read_report_text(test, sel) == test.read_text()
    same = tmp_path / "copy.txt"
    same.write_text(valid.read_text())
    with pytest.raises(ValueError, match="is the selection's valid text"):
        read_report_text(same, sel)
    words = valid.read_text().split()
    part = tmp_path / "part.txt"  # a twentieth of the valid text inside new text
    part.write_text(_words(3) + " ".join(words[:150]) + "\n")
    with pytest.raises(ValueError, match=r"shares .*% of its 16-word windows"):
        read_report_text(part, sel)
    valid.write_text(_words(4))
    with pytest.raises(ValueError, match="changed since the selection"):
        read_report_text(test, sel)


# ----------------------------------------------------------------------------- end to end
def _ids(text: str, vocab: int) -> np.ndarray:
    return np.array([int(w[1:]) % vocab for w in text.split()], dtype=np.int64)


def test_select_on_valid_then_report_on_test_with_a_tiny_model(tmp_path, texts):
    """The report reproduces the selected settings from the file and sees test only then."""
    valid, test = texts
    model = tiny_gpt2()
    vocab = model.config.vocab_size
    protocol = PrequentialConfig(chunk=8, context=8)
    kw = dict(protocol=protocol, print_fn=None, n_boot=20)

    def select(valid_path):
        text, rec = read_selection_input(valid_path, forbidden=[test])
        ids = _ids(text, vocab)[:8 * 5 + 1]
        scores = {}
        for cfg in draw_configs({"P0": [0.01, 0.1, 1.0], "R": [0.5, 2.0]}, 2, key="ekf"):
            res = compare(model, ids, methods="ekf", P0=cfg["P0"], R=cfg["R"], **kw)
            scores[tuple(cfg.items())] = res.rows[0]["perplexity"]
        best = dict(min(scores, key=scores.get))
        return write_selection(tmp_path / "selection.json", step="tiny",
                               methods=[{"row": "ekf", "settings": best}],
                               headline={"methods": ["ekf"]},
                               budget={"configs_per_method": 2, "tokens": int(ids.size)},
                               inputs=[rec], forbidden=[test])

    sel = read_selection(select(valid))
    assert sel["inputs"][0]["sha256"] == file_digest(valid)
    assert all(Path(r["path"]) != test.resolve() for r in sel["inputs"])
    settings = sel["methods"][0]["settings"]
    ids = _ids(read_report_text(test, sel), vocab)[:8 * 5 + 1]
    res = compare(model, ids, methods="ekf", P0=settings["P0"], R=settings["R"], **kw)
    assert np.isfinite(res.rows[0]["perplexity"])
    with pytest.raises(ValueError, match="handed a test split"):
        select(test)


def test_bench_switch_warms_each_comparison_up_untimed_on_two_chunks(monkeypatch, capsys):
    import da_embed.compare  # noqa: F401  (the module; the package exports its function)
    from da_embed.protocol import PrequentialConfig

    compare_mod = sys.modules["da_embed.compare"]

    calls = []
    monkeypatch.setattr(compare_mod, "compare",
                        lambda model, ids, **kw: calls.append((len(ids), kw)) or "done")
    protocol = PrequentialConfig(chunk=8, context=16, max_tokens=200)
    _bench("bench_switch").warm_up_compare("frozen,ekf", "model", np.arange(500), protocol,
                                           {"methods": "frozen,ekf", "P0": 0.1})
    (n, kw), = calls
    assert n == 16 + 2 * 8 + 1  # context and two chunks, not the report stream
    assert kw["protocol"].max_tokens is None and kw["protocol"].chunk == 8
    assert kw["print_fn"] is None and kw["methods"] == "frozen,ekf" and kw["P0"] == 0.1
    out = capsys.readouterr().out
    assert "warm-up frozen,ekf" in out and "untimed" in out
