"""Generic data assimilation: Kalman, ensemble, unscented and variational filters.

``filters`` knows nothing of language models.  A filter stores its
hyperparameters; :func:`assimilate` cycles it over a :class:`Setting` and
returns an :class:`xarray.Dataset`.

Examples
--------
>>> from filters import ETKF, assimilate
>>> from filters.settings import sakov2008
>>> ds = assimilate(ETKF(N=20, inflation=1.02, rotate=True), sakov2008(n_obs=100), seed=0)
>>> ds.attrs["filter"]
'ETKF'
"""

from .assimilate import DivergenceError, assimilate, summarize
from .base import CovarianceJitterWarning, Filter
from .covariance import Covariance, as_covariance
from .ensemble import DEnKF, EnKF, EnSRF, ETKF, LETKF
from .inflation import RTPP, RTPS, AdditiveInflation, Inflation, MultiplicativeInflation
from .io import open_run, to_netcdf
from .kalman import EKF, DiagonalEKF, KalmanFilter, rts_smoother
from .metrics import crps_ensemble, rank_histogram, rmse, time_average
from .settings import Setting, Simulation, linear_gaussian, sakov2008, sakov2012
from .states import DiagonalGaussianState, EnsembleState, GaussianState
from .unscented import UKF
from .variational import (NonFiniteCostError, StrongConstraint4DVar, Var3D,
                          VariationalConvergenceWarning, WeakConstraint4DVar, climatology,
                          estimate_Q)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("da-embed")
    except Exception:  # pragma: no cover - source tree without install
        return "unknown"


__version__ = _version()

__all__ = [
    # filters
    "Filter", "KalmanFilter", "EKF", "DiagonalEKF", "UKF", "EnKF", "ETKF", "DEnKF", "EnSRF", "LETKF",
    "rts_smoother", "Var3D", "StrongConstraint4DVar", "WeakConstraint4DVar",
    "climatology", "estimate_Q", "NonFiniteCostError", "VariationalConvergenceWarning",
    # inflation
    "Inflation", "MultiplicativeInflation", "AdditiveInflation", "RTPP", "RTPS",
    # states and covariances
    "GaussianState", "EnsembleState", "DiagonalGaussianState", "Covariance", "as_covariance",
    # running, settings, output
    "assimilate", "summarize", "DivergenceError", "Setting", "Simulation",
    "sakov2012", "sakov2008", "linear_gaussian", "to_netcdf", "open_run",
    # metrics
    "rmse", "crps_ensemble", "rank_histogram", "time_average",
    "CovarianceJitterWarning",
]
