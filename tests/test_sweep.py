"""``filters.sweep`` on a LocalCluster of 2 worker processes (one thread each).

One cluster for the module.  Checked: a sweep equals the serial loop of the
same cells bitwise (every number but the wall times); a cell whose filter
lacks an axis is NaN with the reason; resume runs only the missing cells; a
worker process killed mid-sweep has its cell retried and the sweep completes
(last, since it kills one of the module's workers).  Short settings keep each
test to a few seconds.
"""

import math
import os
import signal

import numpy as np
import pytest
import xarray as xr

from filters.sweep import (CellStore, format_table, parse_spec, run_cell, run_sweep,
                           seed_table)

distributed = pytest.importorskip("distributed")  # a core dependency: never skipped in CI

SPEC = {"setting": {"name": "sakov2012", "n_obs": 80},
        "grid": {"filter": ["ETKF", "EnKF"], "N": [8], "inflation": [1.02, 1.04],
                 "seed": [0, 1]}}
WALL = ("wall_cell", "wall_per_cycle")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _same(a, b) -> bool:
    """Equal bitwise, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def _serial(spec) -> dict:
    return {c.key: run_cell(c) for c in parse_spec(spec).cells()}


def _check_equal_to_serial(out, spec):
    store = CellStore(out)
    serial = _serial(spec)
    for cell in parse_spec(spec).cells():
        got = store.read(cell)
        want = serial[cell.key]
        for name, value in want.items():
            if name not in WALL:
                assert _same(got[name], value), (cell.coords, name, got[name], value)


def test_sweep_equals_the_serial_loop_bitwise(client, tmp_path):
    report = run_sweep(SPEC, tmp_path, client=client)
    assert report.complete and report.ran == 8 and report.reused == 0
    _check_equal_to_serial(tmp_path, SPEC)
    ds = xr.open_dataset(tmp_path / "results.nc")
    assert ds["rmse_analysis"].dims == ("filter", "N", "inflation", "seed")
    assert ds["filter"].values.tolist() == ["ETKF", "EnKF"]
    assert ds["inflation"].values.tolist() == [1.02, 1.04]
    assert set(ds["status"].values.ravel()) == {"ok"}
    for v in ("rmse_analysis_se", "spread", "wall_per_cycle"):
        assert np.all(np.isfinite(ds[v].values)), v
    # the Dataset holds the cells' numbers, placed by their coordinates
    cell = parse_spec(SPEC).cells()[5]
    assert ds["rmse_analysis"].sel(cell.coords).item() == CellStore(tmp_path).read(cell)[
        "rmse_analysis"]


def test_table_mean_and_standard_error_across_seeds(client, tmp_path):
    report = run_sweep(SPEC, tmp_path, client=client)
    ds = report.results
    t = seed_table(ds)
    x = ds["rmse_analysis"].sel(filter="EnKF", N=8, inflation=1.04).values
    assert t["mean"].sel(filter="EnKF", N=8, inflation=1.04).item() == pytest.approx(x.mean())
    assert t["se"].sel(filter="EnKF", N=8, inflation=1.04).item() == pytest.approx(
        x.std(ddof=1) / np.sqrt(2))
    text = format_table(ds)
    best = t["mean"].sel(filter="ETKF").min().item()
    assert f"ETKF: {best:.4f}" in text.splitlines()[-1]


def test_plot_draws_each_numeric_axis_and_a_heatmap(client, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from da_embed.plot import save_figures

    spec = {"setting": {"name": "sakov2012", "n_obs": 80},
            "grid": {"filter": ["ETKF", "EnKF"], "N": [8, 12], "inflation": [1.02, 1.04],
                     "seed": [0, 1]}}
    run_sweep(spec, tmp_path, client=client)
    names = [p.name for p in save_figures(tmp_path, dpi=40)]
    assert names == ["sweep_N.png", "sweep_inflation.png", "sweep_heatmap_N_inflation.png"]
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)
    from filters.plot import plot_sweep_axis

    ds = xr.open_dataset(tmp_path / "results.nc")
    ax = plot_sweep_axis(ds, "N")
    table = seed_table(ds)
    etkf = ax.lines[0].get_ydata()  # best over inflation at each N, mean over seeds
    assert np.allclose(etkf, table["mean"].sel(filter="ETKF").min("inflation").values)
    with pytest.raises(ValueError, match="numeric grid axis"):
        plot_sweep_axis(ds, "filter")


def test_axis_a_filter_lacks_is_nan_with_the_reason(client, tmp_path):
    spec = {"setting": {"name": "sakov2008", "n_obs": 40},
            "grid": {"filter": ["ETKF", "LETKF"], "N": [8], "radius": [2.0, 4.0]}}
    report = run_sweep(spec, tmp_path, client=client)
    ds = report.results
    assert report.skipped == 2 and report.ran == 2
    etkf = ds.sel(filter="ETKF")
    assert np.all(np.isnan(etkf["rmse_analysis"].values))
    assert set(etkf["status"].values.ravel()) == {"skipped"}
    assert all("ETKF has no parameter 'radius'" == m for m in etkf["message"].values.ravel())
    assert set(ds.sel(filter="LETKF")["status"].values.ravel()) == {"ok"}


def test_resume_runs_only_the_missing_cells(client, tmp_path):
    run_sweep(SPEC, tmp_path, client=client)
    files = sorted((tmp_path / "cells").glob("*.json"))
    kept = {p.name: p.read_bytes() for p in files[3:]}
    for p in files[:3]:
        p.unlink()
    with pytest.raises(ValueError, match="already holds a sweep's cells"):
        run_sweep(SPEC, tmp_path, client=client)
    ran = []
    report = run_sweep(SPEC, tmp_path, client=client, resume=True,
                       on_cell=lambda cell, res: ran.append(cell.key))
    assert report.reused == 5 and report.ran == 3
    assert sorted(ran) == sorted(p.stem for p in files[:3])
    assert {n: (tmp_path / "cells" / n).read_bytes() for n in kept} == kept
    _check_equal_to_serial(tmp_path, SPEC)


def test_the_costliest_cells_start_first(client, tmp_path):
    # Grid order puts the cheap N = 4 cells first; cost (cycles x N) puts N = 48 first.
    spec = {"setting": {"name": "sakov2008", "n_obs": 150},
            "grid": {"filter": ["EnKF"], "N": [4, 48], "inflation": [1.02, 1.04],
                     "seed": [0, 1]}}
    done = []
    report = run_sweep(spec, tmp_path, client=client,
                       on_cell=lambda cell, result: done.append(cell.coords["N"]))
    assert report.complete and len(done) == 8
    assert done[0] == 48 and done[-1] == 4, done
    _check_equal_to_serial(tmp_path, spec)


def test_a_killed_worker_process_has_its_cell_retried(client, tmp_path):
    # Long enough cells (~0.3 s) that the worker killed after the first result is mid-cell.
    spec = {"setting": {"name": "sakov2008", "n_obs": 600},
            "grid": {"filter": ["ETKF"], "N": [12, 16], "inflation": [1.02, 1.04],
                     "seed": [0, 1]}}
    before = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(cell, result):
        if killed:
            return
        busy = [w for w, tasks in client.processing().items() if tasks]
        assert busy, "no worker had a cell in flight to kill"
        os.kill(before[busy[0]], signal.SIGKILL)
        killed.append(before[busy[0]])

    report = run_sweep(spec, tmp_path, client=client, on_cell=kill_a_busy_worker)
    assert killed
    assert report.complete and report.ran == 8
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()  # the nanny started a new one
    assert set(report.results["status"].values.ravel()) == {"ok"}
    _check_equal_to_serial(tmp_path, spec)
