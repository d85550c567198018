"""``[lm]`` sweeps: compare cells (frozen + one method) on a tiny GPT-2, the same way as filters.

The model is saved with ``save_pretrained`` (the cells load it from its folder,
as on a cluster); the tuning text and the test text are separate files.
"""

import math

import numpy as np
import pytest

import da_embed.sweep  # noqa: F401  (registers the [lm] cell kind)
from da_embed.testing import tiny_gpt2
from filters.sweep import CellStore, parse_spec, run_cell, run_sweep

distributed = pytest.importorskip("distributed")  # a core dependency: never skipped in CI
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEST = "the cat sat on the mat and looked at the dog by the door. " * 6
TUNE = "a bird flew over the house while it rained on the hills all day. " * 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from da_embed.reference import train_tokenizer

    folder = tmp_path_factory.mktemp("lm")
    tokenizer = train_tokenizer(TEST + TUNE, vocab_size=300)
    model = tiny_gpt2(seed=0)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "test.txt").write_text(TEST)
    (folder / "tune.txt").write_text(TUNE)
    return folder


def _spec(files, **grid):
    return {"lm": {"model": str(files / "model"), "test_text": str(files / "test.txt"),
                   "tune_text": str(files / "tune.txt"), "chunk": 8, "context": 16,
                   "members": 4, "n_boot": 200},
            "grid": {"method": ["ekf"], **grid}}


def test_lm_cells_on_a_cluster_equal_the_serial_loop(files, tmp_path):
    spec = _spec(files, P0=[0.05, 0.2], seed=[0])
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    with cluster, distributed.Client(cluster) as client:
        report = run_sweep(spec, tmp_path, client=client)
    ds = report.results
    assert report.complete and report.ran == 2
    assert ds["change_pct"].dims == ("method", "P0", "seed")
    assert set(ds["status"].values.ravel()) == {"ok"}, ds["message"].values
    lo, hi, change = (ds[v].values for v in ("ci_low", "ci_high", "change_pct"))
    assert np.all(lo <= change) and np.all(change <= hi)
    store = CellStore(tmp_path)
    for cell in parse_spec(spec).cells():
        got, want = store.read(cell), run_cell(cell)
        for name in ("change_pct", "ci_low", "ci_high", "perplexity", "frozen_perplexity"):
            assert got[name] == want[name], (cell.coords, name)
    assert ds.attrs["group"] == "method" and ds.attrs["score"] == "change_pct"


def test_the_overlap_guard_applies_to_the_tuning_text(files, tmp_path):
    (tmp_path / "same.txt").write_text(TEST)  # another file, the same text as the test text
    spec = _spec(files, seed=[0])
    spec["lm"]["tune_text"] = str(tmp_path / "same.txt")
    spec["lm"]["subspace"] = "fisher:2"  # a method that tunes on the tuning text
    result = run_cell(parse_spec(spec).cells()[0])
    assert result["status"] == "error" and "overlap" in result["message"].lower()
    assert math.isnan(result["change_pct"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s["grid"].update(method=["nosuch"]), "[grid] method: unknown method 'nosuch'"),
    (lambda s: s["grid"].update(radius=[1.0]), "[grid] radius: not an axis of an [lm] sweep"),
    (lambda s: s["lm"].update(tune_text=s["lm"]["test_text"]), "[lm] tune_text: the tuning text"),
    (lambda s: s["lm"].pop("test_text"), "[lm] test_text: missing"),
    (lambda s: s["lm"].update(model="no/such/folder"), "[lm] model: no such file or folder"),
    (lambda s: s["lm"].update(colour="red"), "[lm] colour: unknown entry"),
])
def test_bad_lm_specs_name_the_entry(files, change, message):
    spec = _spec(files, seed=[0])
    change(spec)
    with pytest.raises(ValueError) as err:
        parse_spec(spec)
    assert message in str(err.value)
