"""What a reader of a comparison's table and files needs (issue 18): a converged column for
4D-Var, memory that does not depend on the order of the methods, shell-safe file names with a
complete method -> file mapping in summary.json and summary.csv."""

import csv
import json
import re

import numpy as np
import pytest

from da_embed.compare import compare
from da_embed.memory import PeakHeap, heap_in_use
from da_embed.protocol import PrequentialConfig
from da_embed.testing import random_input_ids, tiny_gpt2

SAFE = re.compile(r"^[A-Za-z0-9._+-]+\.nc$")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    model = tiny_gpt2()
    ids = random_input_ids(model, batch=1, length=8 * 6 + 1, seed=1)[0].numpy()
    res = compare(model, ids, methods="frozen,etkf@random:4,4dvar", members=4,
                  protocol=PrequentialConfig(chunk=8, context=8), out=out, print_fn=None,
                  n_boot=20, method_options={"4dvar": {"maxiter": 1, "window": 2}})
    return res, out


def test_every_row_names_its_shell_safe_file(result):
    res, out = result
    files = {row["method"]: row["file"] for row in res.rows}
    assert files == {"frozen": "frozen.nc", "etkf@random:4": "etkf_random-4.nc",
                     "4dvar": "4dvar.nc"}
    for row in res.rows:
        assert SAFE.match(row["file"]) and (out / row["file"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert {r["method"]: r["file"] for r in summary["rows"]} == files
    with open(out / "summary.csv", newline="") as f:
        assert {r["method"]: r["file"] for r in csv.DictReader(f)} == files


def test_an_under_converged_4dvar_is_flagged_in_the_table(result):
    res, _ = result
    rows = {row["method"]: row for row in res.rows}
    conv = res.datasets["4dvar"]["converged"].values
    assert rows["4dvar"]["windows"] == conv.size == 6
    assert rows["4dvar"]["converged_windows"] == int(np.sum(conv > 0)) < 6  # maxiter 1
    assert rows["frozen"]["windows"] is None and rows["etkf@random:4"]["windows"] is None
    table = res.table()
    line = next(ln for ln in table.splitlines() if ln.startswith("4dvar"))
    assert line.rstrip().endswith(f"{rows['4dvar']['converged_windows']}/6 (!)")
    assert "converged: 4D-Var windows whose solver reached its tolerance" in table
    assert "peak heap in use" in table


@pytest.mark.skipif(heap_in_use() is None, reason="the C library has no mallinfo2 (not glibc)")
def test_heap_peak_counts_memory_reused_from_an_earlier_block():
    def allocate():  # 2000 x 64 KB: from malloc's arenas, which keep freed memory
        return [np.ones(8192) for _ in range(2000)]

    with PeakHeap() as first:
        blocks = allocate()
        pin = np.ones(8192)  # above the blocks: freeing them cannot shrink the heap
    del blocks
    with PeakHeap() as second:  # reuses what the first block freed
        blocks = allocate()
    size = 2000 * 8192 * 8
    assert first.peak_extra >= 0.95 * size and second.peak_extra >= 0.95 * size
    assert abs(second.peak_extra - first.peak_extra) < 0.05 * size
    del pin
