"""Ensemble Kalman filters: EnKF, ETKF, DEnKF, serial EnSRF and LETKF.

Each class is a short loop (sampling, forecast, missing observations,
inflation, rotation) around one analysis of ``._equations``.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive
from ..base import Filter, observed_subset
from ..states import EnsembleState, GaussianState
from ._equations import (denkf_analysis, enkf_analysis, ensrf_analysis, etkf_analysis,
                         letkf_analysis, random_rotation, taper_matrix)

__all__ = ["EnKF", "ETKF", "DEnKF", "EnSRF", "LETKF"]


class _EnsembleFilter(Filter):
    """Shared loop pieces: sampling, the forecast, missing obs, inflation, rotation.

    Its constructor serves EnKF, ETKF and DEnKF as it is (their parameters are
    documented in their own class docstrings).
    """

    def __init__(self, *, N: int, inflation=None, rotate: bool = False):
        super().__init__(inflation=inflation)
        self.N = N
        self.rotate = rotate

    def validate(self):
        super().validate()
        if isinstance(self.N, bool) or not isinstance(self.N, (int, np.integer)) or self.N < 2:
            raise ValueError(f"N (ensemble size) must be an integer >= 2, got {self.N!r}")

    def initialize(self, prior: GaussianState, rng):
        return EnsembleState(prior.sample(rng, self.N))

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        E = state.members
        if Q is None:
            return EnsembleState(model.integrate(E, t, dt, nsteps))
        sq = np.sqrt(dt)
        for k in range(nsteps):
            E = model.step(E, t + k * dt, dt) + sq * Q.sample(rng, E.shape[0])
        return EnsembleState(E)

    def analysis(self, state, y, obs, R, rng):
        mask, y_obs, R_obs = observed_subset(y, R)
        if y_obs.size == 0:
            return state
        HE = obs(state.members)
        if mask is not None:
            HE = HE[:, mask]
        Ea = self._update(state.members, HE, y_obs, R_obs, rng, mask=mask, obs=obs)
        out = self._post_analysis(state, EnsembleState(Ea), rng)
        if self.rotate:
            Eo = out.members
            mu = Eo.mean(axis=0)
            out = EnsembleState(mu + random_rotation(Eo.shape[0], rng) @ (Eo - mu))
        return out

    #: The analysis ``(E, HE, y, R) -> Ea`` of a deterministic filter (ETKF, DEnKF); the
    #: others override :meth:`_update`, which also sees the random generator and the mask.
    _analysis = None

    def _update(self, E, HE, y, R, rng, **kw):
        return self._analysis(E, HE, y, R)


class EnKF(_EnsembleFilter):
    """Stochastic EnKF with centred perturbed observations.

    Parameters
    ----------
    N : int
        Ensemble size (>= 2).
    inflation : float, Inflation or sequence, optional
        A number is multiplicative inflation of the analysis anomalies.
    rotate : bool
        Apply a random mean-preserving rotation after the analysis.

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import sakov2012
    >>> ds = assimilate(EnKF(N=10, inflation=1.04), sakov2012(n_obs=100), seed=0)
    >>> ds.sizes["time"]
    100
    """

    name = "EnKF"

    def _update(self, E, HE, y, R, rng, **kw):
        return enkf_analysis(E, HE, y, R, rng)


class ETKF(_EnsembleFilter):
    """Ensemble transform Kalman filter (symmetric square root).

    Parameters
    ----------
    N, inflation
        As in :class:`EnKF`.
    rotate : bool
        Apply a random mean-preserving rotation after the analysis (DAPPER's
        ``rot=True``).

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import sakov2012
    >>> ds = assimilate(ETKF(N=10, inflation=1.02, rotate=True), sakov2012(n_obs=300), seed=0)
    >>> float(ds.attrs["rmse_analysis_mean"]) < 1.0
    True
    """

    name = "ETKF"
    _analysis = staticmethod(etkf_analysis)


class DEnKF(_EnsembleFilter):
    """Deterministic EnKF (Sakov & Oke 2008a).

    Parameters
    ----------
    N, inflation, rotate
        As in :class:`EnKF`.

    Examples
    --------
    >>> from filters import assimilate, summarize
    >>> from filters.settings import sakov2008
    >>> ds = assimilate(DEnKF(N=20, inflation=1.01), sakov2008(n_obs=200), seed=0)
    >>> summarize(ds, burn_in=5.0)["rmse_analysis_mean"] < 0.3
    True
    """

    name = "DEnKF"
    _analysis = staticmethod(denkf_analysis)


class EnSRF(_EnsembleFilter):
    """Serial ensemble square-root filter (Whitaker & Hamill 2002).

    Parameters
    ----------
    N : int
        Ensemble size (>= 2).
    order : {"random", "given"}
        Order in which observations are assimilated: a fresh random permutation
        each cycle (DAPPER's default) or as given.
    inflation, rotate
        As in :class:`EnKF`.

    Examples
    --------
    Either order tracks the Lorenz-96 truth:

    >>> from filters import assimilate, summarize
    >>> from filters.settings import sakov2008
    >>> setting = sakov2008(n_obs=200)
    >>> [summarize(assimilate(EnSRF(N=20, inflation=1.02, order=order), setting, seed=0),
    ...            burn_in=5.0)["rmse_analysis_mean"] < 0.3 for order in ("random", "given")]
    [True, True]
    """

    name = "EnSRF"

    def __init__(self, *, N: int, order: str = "random", inflation=None, rotate: bool = False):
        super().__init__(N=N, inflation=inflation, rotate=rotate)
        self.order = order

    def validate(self):
        super().validate()
        if self.order not in ("random", "given"):
            raise ValueError(f"order must be 'random' or 'given', got {self.order!r}")

    def _update(self, E, HE, y, R, rng, **kw):
        m = y.shape[0]
        order = rng.permutation(m) if self.order == "random" else np.arange(m)
        return ensrf_analysis(E, HE, y, R, order)


class LETKF(_EnsembleFilter):
    """Local ensemble transform Kalman filter (Hunt et al. 2007).

    One ETKF analysis per state component with the observations within reach,
    R-localised by a Gaspari-Cohn taper.  Observation positions come from the
    observation operator (``locations``, or ``site_indices`` into the model's
    ``coordinates``); periodic domains use the model's ``period``.

    Parameters
    ----------
    N : int
        Ensemble size (>= 2).
    radius : float
        Localisation radius (DAPPER's ``loc_rad`` convention, see
        :func:`taper_matrix`).
    inflation, rotate
        As in :class:`EnKF`.

    Examples
    --------
    :func:`~filters.assimilate` calls :meth:`LETKF.prepare`, which tapers each of the
    40 components against each of the 40 observations:

    >>> from filters import assimilate, summarize
    >>> from filters.settings import sakov2008
    >>> letkf = LETKF(N=10, radius=4.0, inflation=1.04)
    >>> ds = assimilate(letkf, sakov2008(n_obs=200), seed=0)
    >>> letkf.taper_.shape, summarize(ds, burn_in=5.0)["rmse_analysis_mean"] < 0.3
    ((40, 40), True)
    """

    name = "LETKF"

    def __init__(self, *, N: int, radius: float, inflation=None, rotate: bool = False):
        super().__init__(N=N, inflation=inflation, rotate=rotate)
        self.radius = radius

    def validate(self):
        super().validate()
        check_positive(self.radius, "radius")

    def prepare(self, model, obs) -> None:
        """Compute the taper matrix ``taper_`` (n, m) for this model and observation operator."""
        if obs.locations is not None:
            ycoords = obs.locations
        elif obs.site_indices is not None:
            ycoords = model.coordinates[obs.site_indices]
        else:
            raise ValueError("the LETKF needs observation positions: give the observation "
                             "operator `locations` or `site_indices`")
        self.taper_ = taper_matrix(model.coordinates, ycoords, self.radius, model.period)

    def _update(self, E, HE, y, R, rng, *, mask=None, obs=None):
        taper = getattr(self, "taper_", None)
        if taper is None or taper.shape != (E.shape[1], obs.nobs):
            raise ValueError("call LETKF.prepare(model, obs) before the analysis "
                             "(filters.assimilate does it for you)")
        if mask is not None:
            taper = taper[:, mask]
        return letkf_analysis(E, HE, y, R, taper)
