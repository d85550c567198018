"""``da-embed sweep`` from the command line: bad specs, and a SIGKILLed sweep resumed.

A bad spec ends with one line ``da-embed sweep: error: ...`` naming the entry
and exit status 2, before any cluster starts.  The resume test starts the
command in its own process group, SIGKILLs the whole group (the command and
its LocalCluster's worker processes) after a few cells are written, then runs
``--resume`` (in this process): every cell written before the kill is kept byte for byte, the
resume runs exactly the missing cells, and every cell equals the serial loop.
"""

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from da_embed.cli import main
from filters.sweep import CellStore, load_spec, run_cell

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREFIX = "da-embed sweep: error: "
GOOD = """
[setting]
name = "sakov2012"
n_obs = 80

[grid]
filter = ["ETKF", "EnKF"]
N = [8, 16]
seed = [0]
"""

BAD = {
    "unknown filter": (GOOD.replace('"EnKF"', '"EnKFF"'), "[grid] filter: unknown filter 'EnKFF'"),
    "axis of no filter": (GOOD + "radiuss = [1.0, 2.0]\n",
                          "[grid] radiuss: no filter of the grid (ETKF, EnKF) nor setting "
                          "sakov2012 has a parameter 'radiuss'"),
    "empty axis": (GOOD.replace("N = [8, 16]", "N = []"), "[grid] N: the axis is empty"),
    "bad setting name": (GOOD.replace('"sakov2012"', '"sakov2099"'),
                         "[setting] name: unknown setting 'sakov2099'"),
    "bad setting parameter": (GOOD.replace("n_obs = 80", "nobs = 80"),
                              "[setting] nobs: sakov2012 has no parameter 'nobs'"),
    "bad setting value": (GOOD.replace("n_obs = 80", "n_obs = -3"), "[setting] sakov2012: n_obs"),
    "not TOML": ("[setting\nname = sakov2012\n", "not a TOML file"),
    "unknown table": (GOOD + "[settings]\nname = 'x'\n", "unknown table [settings]"),
    "axis not a list": (GOOD.replace("N = [8, 16]", "N = 8"), "[grid] N: expected a list"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_spec_is_one_clear_error_line(case, tmp_path, capsys):
    text, expected = BAD[case]
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    status = main(["sweep", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX) and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_a_missing_spec_file_is_one_clear_error_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PREFIX) and "none.toml" in err[0]


def _command(spec, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return [sys.executable, "-m", "da_embed.cli", "sweep", str(spec), "--out", str(out),
            "--scheduler", "local:2"], env


def test_a_sigkilled_sweep_resumes_with_nothing_lost_or_run_twice(tmp_path, capsys):
    spec = tmp_path / "spec.toml"  # 12 cells of ~0.25 s each: the kill lands mid-sweep
    spec.write_text('[setting]\nname = "sakov2008"\nn_obs = 600\n\n[grid]\n'
                    'filter = ["ETKF", "EnSRF"]\nN = [10, 14, 18]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    cmd, env = _command(spec, out)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cells = out / "cells"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if cells.is_dir() and len(list(cells.glob("*.json"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes at once
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    kept = {p.name: p.read_bytes() for p in cells.glob("*.json")}
    assert 3 <= len(kept) < 12
    assert not (out / "results.nc").exists()

    # the resume in this process (its own LocalCluster of 2 workers): no second interpreter start
    status = main(["sweep", str(spec), "--out", str(out), "--scheduler", "local:2", "--resume"])
    stdout = capsys.readouterr().out
    assert status == 0
    assert f"12 cells: {len(kept)} already in {out}, {12 - len(kept)} run" in stdout
    after = {p.name: p.read_bytes() for p in cells.glob("*.json")}
    assert len(after) == 12
    assert {n: after[n] for n in kept} == kept  # nothing lost, nothing rewritten
    store = CellStore(out)
    for cell in load_spec(spec).cells():
        got, want = store.read(cell), run_cell(cell)
        for name in ("rmse_analysis", "rmse_analysis_se", "spread", "status"):
            a, b = got[name], want[name]
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    assert json.loads((out / "spec.json").read_text())["grid"]["N"] == [10, 14, 18]
