"""The embedded corpus and the locally trained reference model (tiny configurations)."""

import numpy as np
import pytest
import torch

from da_embed.corpora import read_text, stdlib_corpus, wikitext_path
from da_embed.reference import ReferenceConfig, encode_text, load_reference, train_tokenizer

TINY = ReferenceConfig(vocab_size=320, d_model=16, n_layers=1, n_heads=2, d_ff=32, context=16,
                       batch_size=2, train_tokens=320)
TEXT = "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs.\n" * 40


def test_stdlib_corpus_is_deterministic_and_large():
    import hashlib
    import subprocess
    import sys

    a = stdlib_corpus()
    # Another process that imported other packages first gets the same text.
    code = ("import numpy, xarray, torch, hashlib; from da_embed.corpora import stdlib_corpus; "
            "print(hashlib.sha1(stdlib_corpus().encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha1(a.encode()).hexdigest()
    assert len(a) > 500_000
    assert "Return" in a  # docstrings are present, not only the pydoc topics


def test_tokenizer_round_trips_any_unicode():
    tok = train_tokenizer(TEXT, vocab_size=300)
    for s in ["héllo wörld", "数据同化 ✓", "emoji 🙂 and tabs\t", ""]:
        assert tok.decode(encode_text(tok, s).tolist()) == s


def test_reference_is_cached_and_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("DA_EMBED_CACHE", str(tmp_path / "a"))
    m1, tok1, info1 = load_reference(TINY, text=TEXT, progress=False)
    marker = tmp_path / "a" / info1["path"].split("/")[-1] / "da_embed_reference.json"
    mtime = marker.stat().st_mtime_ns
    m2, _, info2 = load_reference(TINY, text=TEXT, progress=False)
    assert info2["path"] == info1["path"] and marker.stat().st_mtime_ns == mtime  # loaded, not retrained
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(v, w), k
    # Same seed in a fresh cache: bit-identical weights.
    monkeypatch.setenv("DA_EMBED_CACHE", str(tmp_path / "b"))
    m3, _, _ = load_reference(TINY, text=TEXT, progress=False)
    for (k, v), (_, w) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.equal(v, w), k
    # A different text is a different cache entry.
    _, _, info4 = load_reference(TINY, text=TEXT + "more text\n", progress=False)
    assert info4["path"] != info1["path"].replace("/a/", "/b/")
    assert np.isfinite(info1["final_loss"])


def test_missing_cache_without_training_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("DA_EMBED_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no cached reference"):
        load_reference(TINY, text=TEXT, train_if_missing=False)


@pytest.mark.parametrize("field,value", [("vocab_size", 10), ("d_model", 30), ("context", 0),
                                         ("lr", -1.0), ("batch_size", 1.5)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ReferenceConfig(**{field: value})


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="is a directory"):
        read_text(tmp_path)
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(ValueError, match="characters"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe text")
    assert "ok" in read_text(tmp_path / "bad.txt")


def test_wikitext_path_split_validation():
    with pytest.raises(ValueError, match="split"):
        wikitext_path("train")
