"""Plots render from a small run and show what they claim (Agg backend)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from filters import KalmanFilter, ETKF, assimilate  # noqa: E402
from filters.plot import (PALETTE, plot_component, plot_covariance, plot_rank_histogram,  # noqa: E402
                          plot_rmse, plot_spread_skill, run_title)
from filters.settings import linear_gaussian, sakov2012  # noqa: E402


@pytest.fixture(scope="module")
def run():
    return assimilate(ETKF(N=10, inflation=1.02, rotate=True), sakov2012(n_obs=120), seed=0,
                      store_ensemble=True)


def _not_blank(ax):
    fig = ax.figure
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return img.std() > 5  # a blank canvas is uniform


def test_component_plot(run):
    ax = plot_component(run, 1)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["analysis mean", "truth", "observations"]
    assert ax.get_xlabel() == "time (model time units)"
    assert "ETKF(N=10, inflation=1.02, rotate=True) on sakov2012" == ax.get_title()
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), run["truth"].values[:, 1])
    assert ax.get_lines()[0].get_color().lower() == PALETTE["analysis"].lower()
    assert _not_blank(ax)
    plt.close("all")


def test_rmse_plot(run):
    ax = plot_rmse(run)
    assert len(ax.get_lines()) == 4  # rmse, spread, burn-in line, mean line
    assert "RMSE" in ax.get_ylabel() and _not_blank(ax)
    plt.close("all")


def test_covariance_from_ensemble_and_cov(run):
    ax = plot_covariance(run, -1, correlation=True)
    img = ax.get_images()[0].get_array()
    np.testing.assert_allclose(np.diag(img), 1.0)
    ds = assimilate(KalmanFilter(), linear_gaussian(n=5, n_obs=10), seed=0, store_cov=True)
    ax = plot_covariance(ds, 3)
    np.testing.assert_allclose(ax.get_images()[0].get_array(), ds["analysis_cov"].values[3])
    plt.close("all")
    with pytest.raises(ValueError, match="store_cov"):
        plot_covariance(run.drop_vars("analysis_ensemble"))


def test_spread_skill_and_rank_histogram(run):
    ax = plot_spread_skill(run)
    keep = run["time"].values > run.attrs["burn_in"]
    assert len(ax.get_lines()[0].get_xdata()) == keep.sum()
    ax = plot_rank_histogram(run)
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 11 and abs(sum(heights) - 1.0) < 1e-12
    assert _not_blank(ax)
    plt.close("all")


def test_bad_component_and_title_fallback(run):
    with pytest.raises(ValueError, match="component"):
        plot_component(run, 3)
    bare = run.copy()
    bare.attrs = {}
    assert run_title(bare) == "filter()"
