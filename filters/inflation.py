"""Covariance inflation, as small objects passed to a filter.

Each object maps (forecast state, raw analysis state) to an inflated analysis
state.  Objects are applied in the order given, after the analysis update
(DAPPER applies its multiplicative ``infl`` the same way, to the analysis
anomalies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_in_range, check_positive
from .states import EnsembleState, GaussianState

__all__ = ["Inflation", "MultiplicativeInflation", "AdditiveInflation", "RTPP", "RTPS",
           "as_inflations"]


class Inflation:
    """Base class: ``apply(forecast, analysis, rng) -> analysis``.

    Subclasses are frozen dataclasses of their hyperparameters; a filter calls
    :meth:`validate` when the run starts and :meth:`apply` after every analysis.

    Examples
    --------
    >>> issubclass(RTPS, Inflation)
    True
    >>> Inflation().params()
    {'name': 'Inflation'}
    """

    def validate(self) -> None:
        """Check the hyperparameters; raises ValueError naming the bad one."""

    def apply(self, forecast, analysis, rng):
        """Inflate the raw ``analysis`` state given the ``forecast`` it came from.

        Parameters
        ----------
        forecast, analysis : EnsembleState or GaussianState
        rng : numpy.random.Generator
            For stochastic inflation (additive).

        Returns
        -------
        EnsembleState or GaussianState
            The inflated analysis (a new object; inputs are not modified).
        """
        raise NotImplementedError

    def params(self) -> dict:
        """Parameters for run metadata."""
        return {"name": type(self).__name__, **self.__dict__}


@dataclass(frozen=True)
class MultiplicativeInflation(Inflation):
    """Multiply analysis anomalies by ``factor`` (covariance by ``factor**2``).

    Parameters
    ----------
    factor : float, default 1.0
        Inflation factor of the anomalies (> 0; 1 means no inflation).

    Examples
    --------
    >>> a = EnsembleState(np.array([[0.0], [2.0]]))
    >>> MultiplicativeInflation(1.5).apply(a, a, None).members.ravel().tolist()
    [-0.5, 2.5]
    """

    factor: float = 1.0

    def validate(self):
        check_positive(self.factor, "inflation factor")

    def apply(self, forecast, analysis, rng):
        if self.factor == 1.0:
            return analysis
        if isinstance(analysis, EnsembleState):
            mu = analysis.mean
            return EnsembleState(mu + self.factor * (analysis.members - mu))
        return GaussianState(analysis.mean, analysis.cov * self.factor**2)


@dataclass(frozen=True)
class AdditiveInflation(Inflation):
    """Add ``variance * I`` to the analysis covariance.

    Ensembles get centred Gaussian perturbations of that variance, so the mean
    is unchanged.

    Parameters
    ----------
    variance : float, default 0.0
        Variance added to every state component (>= 0).

    Examples
    --------
    >>> g = GaussianState(np.zeros(2), np.eye(2))
    >>> AdditiveInflation(0.5).apply(g, g, None).cov.tolist()
    [[1.5, 0.0], [0.0, 1.5]]
    >>> e = EnsembleState(np.array([[0.0], [2.0]]))
    >>> AdditiveInflation(0.25).apply(e, e, np.random.default_rng(0)).mean.round(12).tolist()
    [1.0]
    """

    variance: float = 0.0

    def validate(self):
        check_positive(self.variance, "additive inflation variance", strict=False)

    def apply(self, forecast, analysis, rng):
        if self.variance == 0.0:
            return analysis
        if isinstance(analysis, EnsembleState):
            Z = rng.standard_normal(analysis.members.shape) * np.sqrt(self.variance)
            return EnsembleState(analysis.members + Z - Z.mean(axis=0))
        return GaussianState(analysis.mean, analysis.cov + self.variance * np.eye(analysis.ndim))


@dataclass(frozen=True)
class RTPP(Inflation):
    """Relaxation to prior perturbations (Zhang et al. 2004).

    ``A_a <- (1 - alpha) A_a + alpha A_f``; ensembles only.

    Parameters
    ----------
    alpha : float, default 0.5
        Relaxation weight in [0, 1] (0: no relaxation, 1: keep the forecast anomalies).

    Examples
    --------
    >>> forecast = EnsembleState(np.array([[-2.0], [4.0]]))
    >>> analysis = EnsembleState(np.array([[0.0], [2.0]]))
    >>> RTPP(0.5).apply(forecast, analysis, None).members.ravel().tolist()
    [-1.0, 3.0]
    """

    alpha: float = 0.5

    def validate(self):
        check_in_range(self.alpha, "RTPP alpha", 0.0, 1.0)

    def apply(self, forecast, analysis, rng):
        if not isinstance(analysis, EnsembleState):
            raise ValueError("RTPP needs an ensemble filter (it relaxes members, not a covariance)")
        mu = analysis.mean
        A = (1.0 - self.alpha) * (analysis.members - mu) + self.alpha * forecast.anomalies
        return EnsembleState(mu + A)


@dataclass(frozen=True)
class RTPS(Inflation):
    """Relaxation to prior spread (Whitaker & Hamill 2012).

    Each component's analysis anomalies are scaled by
    ``1 + alpha (sigma_f - sigma_a) / sigma_a``.  For Gaussian states the
    covariance is scaled by the same factors on both sides.

    Parameters
    ----------
    alpha : float, default 0.5
        Relaxation weight in [0, 1] (0: no relaxation, 1: restore the forecast spread).

    Examples
    --------
    >>> forecast = EnsembleState(np.array([[-2.0], [4.0]]))
    >>> analysis = EnsembleState(np.array([[0.0], [2.0]]))
    >>> RTPS(0.5).apply(forecast, analysis, None).members.ravel().tolist()
    [-1.0, 3.0]
    """

    alpha: float = 0.5

    def validate(self):
        check_in_range(self.alpha, "RTPS alpha", 0.0, 1.0)

    def apply(self, forecast, analysis, rng):
        sf, sa = forecast.spread, analysis.spread
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(sa > 0, 1.0 + self.alpha * (sf - sa) / sa, 1.0)
        if isinstance(analysis, EnsembleState):
            mu = analysis.mean
            return EnsembleState(mu + (analysis.members - mu) * fac)
        return GaussianState(analysis.mean, analysis.cov * np.outer(fac, fac))


def as_inflations(inflation) -> tuple[Inflation, ...]:
    """Normalise a filter's ``inflation`` argument to a tuple of objects.

    None means none; a number means :class:`MultiplicativeInflation`; an
    object or a sequence of objects is kept.

    Parameters
    ----------
    inflation : None, float, Inflation or sequence of them
        The filter's ``inflation`` argument.

    Returns
    -------
    tuple of Inflation
        The objects, in the order they are applied.

    Examples
    --------
    >>> as_inflations([1.02, RTPS(0.3)])
    (MultiplicativeInflation(factor=1.02), RTPS(alpha=0.3))
    >>> as_inflations(None)
    ()
    """
    if inflation is None:
        return ()
    if isinstance(inflation, Inflation):
        return (inflation,)
    if isinstance(inflation, (int, float)) and not isinstance(inflation, bool):
        return (MultiplicativeInflation(float(inflation)),)
    if isinstance(inflation, (list, tuple)):
        out = []
        for item in inflation:
            out.extend(as_inflations(item))
        return tuple(out)
    raise ValueError("inflation must be None, a number, an Inflation object or a sequence of them, "
                     f"got {type(inflation).__name__}")
