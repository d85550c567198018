"""The language-model main job (``make demo``, :mod:`da_embed.demo`) on a tiny model.

Runs the same code path as ``python -m da_embed.demo`` (:func:`run_demo`) with
a tiny Llama and a byte-level BPE tokenizer trained on a slice of the
standard-library corpus, and checks what it prints and writes.  Independent
checks: the reported stream decodes back to the texts it claims (docstrings,
then CPython's licence, the shift at a chunk boundary); the per-segment
perplexities equal those recomputed from the per-chunk NLLs in the netCDF
files; the tuning stream shares no source with the reported one; the
docstring part really is absent from the reference model's training corpus.
"""

import json
import math

import numpy as np
import pytest
import xarray as xr

from da_embed.assimilator import PrequentialConfig
from da_embed.corpora import stdlib_corpus
from da_embed.demo import (DEMO_METHODS, EVAL_MODULES, TUNE_MODULES, heldout_docstrings,
                           licence_text, main, run_demo)
from da_embed.reference import train_tokenizer
from da_embed.testing import tiny_llama
from da_embed.trajectory import run_file_stem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROTOCOL = PrequentialConfig(chunk=8, context=16)
MAX_TOKENS = 97  # 12 chunks of 8 after the unscored first token: 6 docstrings, 6 licence
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo on a tiny Llama; (comparison, printed text, folder, tokenizer)."""
    import matplotlib

    matplotlib.use("Agg")
    tokenizer = train_tokenizer(stdlib_corpus(include_docstrings=False)[:10_000], vocab_size=300)
    model = tiny_llama(seed=0, vocab_size=len(tokenizer))
    out = tmp_path_factory.mktemp("demo")
    lines = []
    res = run_demo(out, model=model, tokenizer=tokenizer, max_tokens=MAX_TOKENS,
                   tune_tokens=64, protocol=PROTOCOL, progress=False, dpi=30,
                   print_fn=lines.append)
    return res, "\n".join(lines), out, tokenizer


def test_demo_prints_the_table_with_every_method_and_the_protocol(demo):
    res, text, _, _ = demo
    labels = [m.split("@")[0] for m in DEMO_METHODS]
    assert [r["method"] for r in res.rows] == list(DEMO_METHODS)
    assert {"frozen", "dyneval", "enkf", "ukf", "4dvar"} <= set(labels)
    assert ("prequential protocol: chunk 8, context 16, stride 8; 96 tokens scored in 12 chunks "
            "per method (stream of 97 tokens)") in text
    table = text[text.index("method "):]
    for m in DEMO_METHODS:  # a row in the comparison table and in the per-segment table
        rows = [ln for ln in table.splitlines() if ln.split() and ln.split()[0] == m]
        assert len(rows) == 2, (m, rows)
    assert "docstrings (6 chunks)" in text and "licence (6 chunks)" in text
    assert "held out" not in text and "NOT checked against the model's training text" in text
    for r in res.rows:
        assert r["status"] == "complete" and r["chunks"] == 12 and math.isfinite(r["perplexity"])


def test_demo_writes_trajectories_summaries_and_figures(demo):
    res, text, out, _ = demo
    for m in DEMO_METHODS:
        path = out / (run_file_stem(m) + ".nc")
        with xr.open_dataset(path) as ds:
            assert ds.sizes["time"] == 12 and ds.attrs["method"] == m
            assert {"nll", "token_nll", "analysis_mean"} <= set(ds.data_vars)
    assert sorted(p.name for p in out.glob("*.nc")) == sorted(
        [run_file_stem(m) + ".nc" for m in DEMO_METHODS] + ["summary.nc"])
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["rows"]] == list(DEMO_METHODS)
    assert (out / "summary.csv").read_text().startswith("method,perplexity")
    assert (out / "segments.csv").read_text().startswith("method,ppl_docstrings")
    demo_json = json.loads((out / "demo.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(demo_json["figures"]) == pngs
    assert {"chunk_nll.png", "chunk_nll_vs_frozen.png", "comparison.png", "shift.png",
            "ukf_fisher-8_state_heatmap.png"} <= set(pngs)
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG
    assert f"wrote to {out.resolve()}/" in text


def test_stream_is_docstrings_then_cpython_licence_with_the_shift_at_a_chunk(demo):
    res, _, out, tokenizer = demo
    d = res.settings["demo"]
    boundary = d["boundary"]
    assert boundary == 1 + 6 * PROTOCOL.stride and d["stream_tokens"] == MAX_TOKENS
    with xr.open_dataset(out / "frozen.nc") as ds:
        ids = np.concatenate([[-1], ds["token_id"].values.reshape(-1)])  # targets 1..96
        starts = ds["chunk_start"].values
    assert boundary in starts  # the shift is the first target of a chunk
    docs, _ = heldout_docstrings(EVAL_MODULES)
    lic, source = licence_text("eval")
    assert d["stream"]["licence"]["source"] == source
    words = lambda t: " ".join(t.split())  # noqa: E731  (paragraphs are re-joined)
    first_doc = words(tokenizer.decode(ids[1:boundary].tolist()))
    assert len(first_doc) > 50 and 0 <= words(docs).find(first_doc) < 20  # token 0 is unscored
    assert words(lic).startswith(words(tokenizer.decode(ids[boundary:].tolist())))
    # nothing of the tuning stream comes from the same place
    assert not set(EVAL_MODULES) & set(TUNE_MODULES)
    assert d["stream"]["tune_licence"]["source"] != source


def test_segment_perplexities_match_the_per_chunk_nll_in_the_files(demo):
    res, _, out, _ = demo
    boundary = res.settings["demo"]["boundary"]
    rows = {r["method"]: r for r in res.settings["demo"]["segments"]}
    for m in DEMO_METHODS:
        with xr.open_dataset(out / (run_file_stem(m) + ".nc")) as ds:
            tok_nll = ds["token_nll"].values  # (T, L)
            first = ds["chunk_start"].values < boundary
        for seg, mask in (("docstrings", first), ("licence", ~first)):
            ppl = math.exp(tok_nll[mask].mean())
            assert rows[m][f"ppl_{seg}"] == pytest.approx(ppl, rel=1e-9)
        if m != "frozen":
            for seg in ("docstrings", "licence"):
                expect = 100 * (rows[m][f"ppl_{seg}"] / rows["frozen"][f"ppl_{seg}"] - 1)
                assert rows[m][f"change_{seg}"] == pytest.approx(expect)


def test_docstring_part_is_absent_from_the_reference_training_corpus():
    corpus = stdlib_corpus()
    text, info = heldout_docstrings(EVAL_MODULES, training_text=corpus)
    raw, raw_info = heldout_docstrings(EVAL_MODULES)
    assert info["missing"] == [] and info["modules"] == list(EVAL_MODULES)
    # submodules' own docstrings are new text: almost nothing had to be dropped
    assert info["paragraphs"] + info["dropped"] == raw_info["paragraphs"]
    assert info["dropped"] < 0.1 * raw_info["paragraphs"]
    assert len(text) > 0.9 * len(raw)
    assert not any(p.strip() in corpus for p in text.split("\n\n") if p.strip())


def test_bad_arguments_raise_clear_errors(tmp_path, capsys):
    from da_embed.reference import train_tokenizer as tt

    tok = tt("The header of the message. " * 40, vocab_size=300)
    model = tiny_llama(vocab_size=len(tok))
    with pytest.raises(ValueError, match="max_tokens must give at least 2 chunks"):
        run_demo(tmp_path, model=model, tokenizer=tok, max_tokens=9, protocol=PROTOCOL,
                 progress=False, print_fn=None)
    with pytest.raises(ValueError, match="give both model and tokenizer"):
        run_demo(tmp_path, model=model, progress=False, print_fn=None)
    with pytest.raises(ValueError, match="which must be 'eval' or 'tune'"):
        licence_text("train")
    assert main(["--out", str(tmp_path), "--max-tokens", "10", "--no-progress"]) == 2
    assert "python -m da_embed.demo: error: max_tokens" in capsys.readouterr().err
