"""Figures of LM runs render from a small real comparison and show what they claim (Agg).

One compare run (tiny Llama, 8 chunks of 8 tokens; frozen, EKF, ETKF,
4D-Var) is shared by every test.  Each figure is checked for its content
(labels, title, the data behind its lines/bars/images, against an
independent computation where one exists) and for not being blank; the
stored final covariance is checked against the filter's own state.
"""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from da_embed import plot as lmplot  # noqa: E402
from da_embed.assimilator import OnlineAssimilator, PrequentialConfig  # noqa: E402
from da_embed.cli import main  # noqa: E402
from da_embed.compare import compare  # noqa: E402
from da_embed.placements import HiddenScale  # noqa: E402
from da_embed.testing import random_input_ids, tiny_llama  # noqa: E402
from da_embed.trajectory import open_trajectory  # noqa: E402

PROTOCOL = PrequentialConfig(chunk=8, context=16)
METHODS = ["frozen", "ekf", "etkf", "4dvar"]
ATOL = 1e-12


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def ids(model):
    return random_input_ids(model, batch=1, length=8 * 8 + 1, seed=3)[0]


@pytest.fixture(scope="module")
def run(one_torch_thread, model, ids, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    res = compare(model, ids, methods=",".join(METHODS), protocol=PROTOCOL, members=8,
                  out=out, print_fn=None, n_boot=200, seed=0)
    return res, out


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _not_blank(ax) -> bool:
    fig = ax.figure
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return img.std() > 5  # a blank canvas is uniform


def _title(ax) -> str:
    """The title with its wrapping undone (line breaks depend on the figure width)."""
    return " ".join(ax.get_title().split())


def _png_not_blank(path) -> bool:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)[..., :3]
    return img.std() > 0.02


# ------------------------------------------------------------ stored covariance
@pytest.mark.parametrize("method", ["ekf", "etkf"])
def test_stored_covariance_is_the_filters_final_covariance(one_torch_thread, model, ids,
                                                             tmp_path, method):
    path = tmp_path / f"{method}.nc"
    runner = OnlineAssimilator(HiddenScale(model), method, protocol=PrequentialConfig(8, 16,
                               max_tokens=33), members=8, seed=1)
    ds = runner.run(ids, out=path)
    stored = open_trajectory(path)["analysis_covariance"]
    assert stored.dims == ("state", "state_b") and stored.attrs["units"] == "1"
    state = runner.state_
    if method == "etkf":  # independent: numpy's sample covariance of the analysis members
        own = np.cov(state.members, rowvar=False, ddof=1)
    else:
        own = state.cov
    np.testing.assert_allclose(stored.values, own, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ds["analysis_covariance"].values, own, rtol=0, atol=ATOL)
    # the logged last spread is the square root of its diagonal
    np.testing.assert_allclose(np.sqrt(np.diag(stored.values)), ds["analysis_spread"].values[-1],
                               rtol=1e-10)


def test_covariance_absent_for_point_methods_and_large_states(one_torch_thread, model, ids,
                                                               run, monkeypatch):
    res, _ = run
    assert "analysis_covariance" not in res.datasets["frozen"]
    proto = PrequentialConfig(8, 16, max_tokens=17)
    ds = OnlineAssimilator(HiddenScale(model), "dyneval", protocol=proto).run(ids)
    assert "analysis_covariance" not in ds
    from da_embed import assimilator

    monkeypatch.setattr(assimilator, "_MAX_STORED_COVARIANCE", 31)  # n = 32 is "too large"
    ds = OnlineAssimilator(HiddenScale(model), "ekf", protocol=proto).run(ids)
    assert "analysis_covariance" not in ds
    # 4D-Var stores its Gauss-Newton covariance, consistent with its logged spread
    v4 = res.datasets["4dvar"]
    np.testing.assert_allclose(np.sqrt(np.diag(v4["analysis_covariance"].values)),
                               v4["analysis_spread"].values[-1], rtol=1e-10)


def test_subspace_run_ukf_covariance_and_full_state_heatmap(one_torch_thread, model, ids):
    from da_embed.placements import Subspace

    placement = Subspace.random(HiddenScale(model), k=3, seed=0)
    runner = OnlineAssimilator(placement, "ukf", protocol=PrequentialConfig(8, 16,
                               max_tokens=33))
    ds = runner.run(ids)
    np.testing.assert_allclose(ds["analysis_covariance"].values, runner.state_.cov, atol=ATOL)
    ax = lmplot.plot_state_heatmap(ds)
    assert ax.get_ylabel() == "state component of z (index)"  # subspace coordinates
    assert "in a 3-dim subspace (random(seed=0))" in _title(ax)
    ax = lmplot.plot_state_heatmap(ds, full=True)  # s = s_ref + P z, naive per chunk
    P, s_ref = placement.basis.numpy(), placement.reference.numpy()
    full = np.stack([s_ref + P @ z for z in ds["analysis_mean"].values])
    np.testing.assert_allclose(ax.get_images()[0].get_array(), full.T, atol=1e-12)
    assert ax.get_ylabel() == "state component of s (index)"


# ------------------------------------------------------------------- state plots
def test_state_heatmap(run):
    ds = run[0].datasets["etkf"]
    ax = lmplot.plot_state_heatmap(ds)
    assert ax.get_xlabel() == "chunk (index)"
    assert ax.get_ylabel() == "state component of s (index)"
    title = _title(ax)
    assert title.startswith("analysis mean of the scale state etkf: ETKF(N=8) on HiddenScale")
    assert "(n = 32)" in title and "chunk 8, context 16" in title
    (im,) = ax.get_images()
    np.testing.assert_array_equal(im.get_array(), ds["analysis_mean"].values.T)  # (n, T)
    lo, hi = im.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(ds["analysis_mean"].values).max())
    assert im.get_cmap().name == "RdBu_r"
    cbar = ax.figure.axes[1]
    assert cbar.get_ylabel() == "analysis mean log-scale s (dimensionless)"
    assert _not_blank(ax)
    ax = lmplot.plot_state_heatmap(ds, which="forecast")
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), ds["forecast_mean"].values.T)
    with pytest.raises(ValueError, match="which"):
        lmplot.plot_state_heatmap(ds, which="truth")
    with pytest.raises(ValueError, match="subspace"):
        lmplot.plot_state_heatmap(ds, full=True)


def test_state_components_default_is_top_variance(run):
    ds = run[0].datasets["ekf"]
    M, S = ds["analysis_mean"].values, ds["analysis_spread"].values
    naive = sorted(sorted(range(M.shape[1]), key=lambda i: -np.var(M[:, i]))[:4])
    ax = lmplot.plot_state_components(ds)
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == [f"s[{i}]" for i in naive]
    assert len(ax.collections) == 4  # one ±2σ band per component
    for ln, band, i in zip(lines, ax.collections, naive):
        np.testing.assert_array_equal(ln.get_ydata(), M[:, i])
        y = band.get_paths()[0].vertices[:, 1]
        assert y.max() == pytest.approx((M[:, i] + 2 * S[:, i]).max())
        assert y.min() == pytest.approx((M[:, i] - 2 * S[:, i]).min())
    assert ax.get_ylabel() == "analysis mean log-scale s (dimensionless)"
    assert "4 components of largest variance" in _title(ax) and "EKF" in _title(ax)
    assert _not_blank(ax)
    ax = lmplot.plot_state_components(ds, dims=[5, 0], sigmas=1)
    assert [ln.get_label() for ln in ax.get_lines()] == ["s[5]", "s[0]"]
    with pytest.raises(ValueError, match="dims"):
        lmplot.plot_state_components(ds, dims=[32])
    with pytest.raises(TypeError, match="Dataset"):
        lmplot.plot_state_components(ds.to_dataframe())


def test_scale_covariance_and_fallback(run):
    ds = run[0].datasets["etkf"]
    ax = lmplot.plot_scale_covariance(ds)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(),
                                  ds["analysis_covariance"].values)
    assert _title(ax).startswith("analysis covariance after chunk 7 etkf: ETKF(N=8)")
    assert ax.get_xlabel() == ax.get_ylabel() == "state component of s (index)"
    assert _not_blank(ax)
    ax = lmplot.plot_scale_covariance(ds, correlation=True)
    C = ax.get_images()[0].get_array()
    np.testing.assert_allclose(np.diag(C), 1.0)
    s = np.sqrt(np.diag(ds["analysis_covariance"].values))
    np.testing.assert_allclose(C, ds["analysis_covariance"].values / np.outer(s, s), atol=1e-12)
    assert ax.get_images()[0].get_clim() == (-1.0, 1.0)
    # no stored covariance: the diagonal from the spreads, said in the title
    ax = lmplot.plot_scale_covariance(ds.drop_vars("analysis_covariance"))
    np.testing.assert_allclose(ax.get_images()[0].get_array(),
                               np.diag(ds["analysis_spread"].values[-1] ** 2))
    assert "diagonal from spreads only: the run stored no covariance" in _title(ax)
    ax = lmplot.plot_scale_covariance(ds, time=2)
    assert "after chunk 2 (diagonal from spreads only" in _title(ax)
    with pytest.raises(ValueError, match="time"):
        lmplot.plot_scale_covariance(ds, time=8)


# -------------------------------------------------------------- comparison plots
def test_chunk_nll_from_every_input(run):
    res, out = run
    summary_nc = xr.load_dataset(out / "summary.nc")
    ax = lmplot.plot_chunk_nll(summary_nc)
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == METHODS
    for ln, m in zip(lines, METHODS):
        np.testing.assert_array_equal(ln.get_ydata(), res.datasets[m]["nll"].values)
    assert lines[0].get_color() == "#000000"  # frozen is black everywhere
    assert ax.get_xlabel() == "chunk (index)" and ax.get_ylabel() == "mean NLL per token (nat)"
    assert "LlamaForCausalLM" in _title(ax) and "chunk 8, context 16" in _title(ax)
    assert _not_blank(ax)
    # the Comparison and the dict of trajectories give the same lines
    for data in (res, res.datasets):
        ys = [ln.get_ydata() for ln in lmplot.plot_chunk_nll(data).get_lines()]
        np.testing.assert_array_equal(np.stack(ys), summary_nc["nll"].values)
    # relative to frozen, smoothed: a naive trailing mean of the differences
    ax = lmplot.plot_chunk_nll(summary_nc, smooth=3, relative=True)
    d = summary_nc["nll"].values[1] - summary_nc["nll"].values[0]
    naive = [np.mean(d[max(0, t - 2):t + 1]) for t in range(d.size)]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), naive, atol=1e-12)
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), 0.0)
    assert "minus frozen" in ax.get_ylabel() and "running mean over 3 chunks" in _title(ax)
    with pytest.raises(ValueError, match="per-chunk NLL"):
        lmplot.plot_chunk_nll(res.summary())
    with pytest.raises(ValueError, match="smooth"):
        lmplot.plot_chunk_nll(res, smooth=0)
    with pytest.raises(ValueError, match="frozen"):
        lmplot.plot_chunk_nll({"ekf": res.datasets["ekf"]}, relative=True)


def _bars(ax):
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


def test_comparison_bars_and_scatter(run):
    res, out = run
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"][1:]
    ax = lmplot.plot_comparison(summary)
    bars = _bars(ax)
    assert [p.get_height() for p in bars.patches] == [r["change_pct"] for r in rows]
    assert [t.get_text() for t in ax.get_xticklabels()] == METHODS[1:]
    segs = bars.errorbar.lines[2][0].get_segments()
    for seg, r in zip(segs, rows):  # the error bars span the 95% CI
        assert seg[:, 1].min() == pytest.approx(r["ci_low"])
        assert seg[:, 1].max() == pytest.approx(r["ci_high"])
    assert [t.get_text() for t in ax.texts] == [f"{r['wall_ratio']:.3g}× time" for r in rows]
    assert ax.get_ylabel() == "perplexity change vs frozen (%)"
    assert "95% block-bootstrap CI" in _title(ax)
    assert f"frozen perplexity {summary['rows'][0]['perplexity']:.4g}" in _title(ax)
    assert _not_blank(ax)
    for other in (res, xr.load_dataset(out / "summary.nc")):  # same bars from other inputs
        heights = [p.get_height() for p in _bars(lmplot.plot_comparison(other)).patches]
        assert heights == [r["change_pct"] for r in rows]
    ax = lmplot.plot_comparison(summary, kind="scatter")
    xs = [c.lines[0].get_xdata()[0] for c in ax.containers]
    assert xs == [r["wall_ratio"] for r in rows] and ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="only frozen"):
        lmplot.plot_comparison({"rows": summary["rows"][:1]})
    with pytest.raises(TypeError, match="summary"):
        lmplot.plot_comparison([1, 2])
    with pytest.raises(ValueError, match="kind"):
        lmplot.plot_comparison(summary, kind="pie")


# ----------------------------------------------------------------------- the CLI
def _cli(capsys, *argv):
    code = main(["plot", *map(str, argv)])
    cap = capsys.readouterr()
    return code, cap.out.split(), cap.err


def test_cli_compare_folder(run, tmp_path, capsys):
    _, out = run
    code, printed, _ = _cli(capsys, out, "--out", tmp_path / "figs", "--dpi", "40")
    assert code == 0
    expected = ["chunk_nll", "chunk_nll_vs_frozen", "comparison"]
    for m in METHODS[1:]:  # frozen's state never moves: no state figures
        expected += [f"{m}_state_heatmap", f"{m}_state_components", f"{m}_covariance"]
    assert printed == [str(tmp_path / "figs" / f"{e}.png") for e in expected]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(
        f"{e}.png" for e in expected)
    assert all(_png_not_blank(p) for p in printed)


def test_cli_trajectory_and_filters_run(run, tmp_path, capsys):
    from filters import ETKF, assimilate
    from filters.io import to_netcdf
    from filters.settings import sakov2012

    _, out = run
    code, printed, _ = _cli(capsys, out / "ekf.nc", "--out", tmp_path, "--dpi", "40")
    assert code == 0
    assert [p.rsplit("/", 1)[1] for p in printed] == [
        "ekf_nll.png", "ekf_state_heatmap.png", "ekf_state_components.png",
        "ekf_covariance.png"]
    fds = assimilate(ETKF(N=6, inflation=1.02), sakov2012(n_obs=30), seed=0,
                     store_ensemble=True)
    path = to_netcdf(fds, tmp_path / "run" / "etkf_l96.nc")
    code, printed, _ = _cli(capsys, path, "--dpi", "40")  # default: next to the input
    assert code == 0
    assert printed == [str(tmp_path / "run" / f"etkf_l96_{k}.png") for k in (
        "component0", "rmse", "spread_skill", "rank_histogram", "covariance")]
    assert all(_png_not_blank(p) for p in printed)


def test_cli_bad_paths(tmp_path, capsys):
    code, printed, err = _cli(capsys, tmp_path / "missing.nc")
    assert code == 2 and not printed
    assert err.startswith("da-embed plot: error: no file or folder at") and "missing.nc" in err
    xr.Dataset({"x": ("t", [1.0])}).to_netcdf(tmp_path / "other.nc")
    code, _, err = _cli(capsys, tmp_path / "other.nc")
    assert code == 2 and "neither a da_embed trajectory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, tmp_path / "empty")
    assert code == 2 and "not a compare output folder" in err
    (tmp_path / "text.nc").write_text("not netCDF")
    code, _, err = _cli(capsys, tmp_path / "text.nc")
    assert code == 2 and "could not read" in err and "Traceback" not in err
