"""Tuning through the sweep engine (issue 17): the ``[lm_tune]`` cells of ``da_embed.tuning``."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from da_embed.reference import ReferenceConfig
from da_embed.selection import file_digest
from da_embed.tuning import run_tune_cell
from filters.sweep import parse_spec

BENCH = Path(__file__).resolve().parent / "benchmarks"
TINY = ReferenceConfig(vocab_size=320, d_model=16, n_layers=1, n_heads=2, d_ff=32, context=16,
                       batch_size=2, train_tokens=320)


def _words(seed: int, n: int = 2000) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(f"w{i}" for i in rng.integers(0, 500, n)) + "\n"


@pytest.fixture
def texts(tmp_path):
    valid, test = tmp_path / "valid.txt", tmp_path / "test.txt"
    valid.write_text(_words(1))
    test.write_text(_words(2))
    return valid, test


def _bench_lm():
    spec = importlib.util.spec_from_file_location("_bench_bench_lm", BENCH / "bench_lm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _selection(out: Path) -> tuple:
    sel = json.loads((out / "selection.json").read_text())
    sel.pop("created")
    text = json.dumps(sel, sort_keys=True).replace(str(out), "OUT")
    return json.loads(text), (out / "tuning.jsonl").read_text()


def test_the_sweep_tuned_selection_equals_the_serial_loop(tmp_path, texts, monkeypatch):
    valid, test = texts
    monkeypatch.setenv("DA_EMBED_CACHE", str(tmp_path / "cache"))  # the workers inherit it
    bench = _bench_lm()
    monkeypatch.setattr(sys.modules["_lm_select"], "reference_config", lambda quick: TINY)
    got = {}
    for scheduler in ("serial", "local:1"):
        out = tmp_path / scheduler.replace(":", "")
        args = bench.build_parser().parse_args([
            "--methods", "frozen,dyneval,ekf,etkf@fisher:2", "--models", "stdlib",
            "--budget", "2", "--tune-tokens", "49", "--chunk", "8", "--context", "8",
            "--scheduler", scheduler, "--no-progress", "--out", str(out)])
        bench.select_step(args, valid, forbidden=[test])
        got[scheduler] = _selection(out)
    assert got["serial"] == got["local:1"]  # settings, valid perplexities, headline, bases
    rows = [json.loads(line) for line in got["serial"][1].splitlines()]
    assert len(rows) == 3 * 2 and all(np.isfinite(r["valid_perplexity"]) for r in rows)
    cells = list((tmp_path / "local1" / "tuning" / "stdlib" / "cells").glob("*.json"))
    assert len(cells) == 6 and (tmp_path / "local1" / "tuning" / "stdlib" / "results.nc").is_file()
    assert not (tmp_path / "serial" / "tuning").exists()


def test_a_tuning_cell_refuses_test_text_before_loading_a_model(tmp_path, texts):
    valid, test = texts
    base = {"model": "stdlib", "reference_config": {"vocab_size": 320}, "tune_tokens": 49,
            "chunk": 8, "context": 8, "seed": 0, "members": 4, "row": "ekf", "settings": {}}
    res = run_tune_cell(dict(base, valid_text=str(test), valid_sha256=file_digest(test)))
    assert res["status"] == "error" and "handed a test split" in res["message"]
    ghost = tmp_path / "held-out.txt"  # forbidden by path: refused without being opened
    res = run_tune_cell(dict(base, valid_text=str(ghost), valid_sha256="0",
                             forbidden=[str(ghost)]))
    assert res["status"] == "error" and "handed a test split" in res["message"]
    res = run_tune_cell(dict(base, valid_text=str(valid), valid_sha256="0" * 64))
    assert res["status"] == "error" and "changed since the spec was made" in res["message"]


def test_an_lm_tune_spec_names_its_bad_entry(texts):
    valid, _ = texts
    fixed = {"model": "stdlib", "reference_config": {}, "valid_text": str(valid),
             "valid_sha256": "x", "tune_tokens": 49, "chunk": 8, "context": 8, "seed": 0,
             "members": 4, "configs": {"ekf": [{"P0": 0.1}, {"P0": 1.0}]}}
    grid = {"row": ["ekf"], "draw": [0, 1]}
    spec = parse_spec({"lm_tune": fixed, "grid": grid})
    assert [c.payload["settings"] for c in spec.cells()] == [{"P0": 0.1}, {"P0": 1.0}]
    with pytest.raises(ValueError, match=r"\[lm_tune\] chunk: missing"):
        parse_spec({"lm_tune": {k: v for k, v in fixed.items() if k != "chunk"}, "grid": grid})
    with pytest.raises(ValueError, match=r"\[lm_tune\] configs: row 'ekf' needs 3"):
        parse_spec({"lm_tune": fixed, "grid": {"row": ["ekf"], "draw": [0, 1, 2]}})
    with pytest.raises(ValueError, match=r"\[lm_tune\] model: unknown reference model"):
        parse_spec({"lm_tune": dict(fixed, model="gpt-2"), "grid": grid})
    with pytest.raises(ValueError, match=r"the axes row and draw"):
        parse_spec({"lm_tune": fixed, "grid": {"row": ["ekf"]}})
