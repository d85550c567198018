"""Named twin-experiment settings (DAPPER's, for comparable numbers) and a simulator.

A :class:`Setting` bundles what DAPPER calls a hidden Markov model: the model
and its time step, the observation operator and noise, the prior of the
initial state, and how many observations to make.  :meth:`Setting.simulate`
draws a truth and its observations from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._validation import check_positive
from .covariance import Covariance, as_covariance
from .models import Identity, LinearGaussian, Lorenz63, Lorenz96, Model, ObservationOperator
from .states import GaussianState

__all__ = ["Setting", "Simulation", "sakov2012", "sakov2008", "linear_gaussian"]


@dataclass(frozen=True)
class Simulation:
    """A truth trajectory and its observations at the analysis times.

    Parameters
    ----------
    times : ndarray (T,)
        Model time of each observation.
    truth : ndarray (T, n)
        True state at those times.
    observations : ndarray (T, m)
        ``H(truth) + noise``; NaN marks a missing value.
    initial_truth : ndarray (n,)
        True state at time 0.

    Examples
    --------
    >>> sim = linear_gaussian(n=3, n_obs=5).simulate(seed=0)
    >>> sim.times.tolist(), sim.truth.shape, sim.observations.shape
    ([1.0, 2.0, 3.0, 4.0, 5.0], (5, 3), (5, 3))
    """

    times: np.ndarray
    truth: np.ndarray
    observations: np.ndarray
    initial_truth: np.ndarray


@dataclass(frozen=True)
class Setting:
    """A twin-experiment set-up.

    Parameters
    ----------
    name : str
    model : Model
    obs : ObservationOperator
    R : Covariance, float or array_like
        Observation-error covariance; a scalar, a vector of variances or a
        matrix is turned into a Covariance (checked: symmetric positive
        definite, of the observations' size).
    prior : GaussianState
        Distribution of the initial state (the truth is drawn from it, and the
        filters start from it).
    dt : float
        Model time step.
    steps_per_obs : int
        Model steps between observations (DAPPER's ``dko``).
    n_obs : int
        Number of observations (analysis cycles).
    burn_in : float
        Model time excluded from time averages.
    Q : Covariance, float, array_like or None
        Process-noise covariance per unit time (each step adds ``dt * Q``);
        converted and checked as ``R`` is.
    reference : dict
        Published results for this setting, for the record.

    Examples
    --------
    >>> from filters.models import Identity, LinearGaussian
    >>> setting = Setting(name="scalar AR(1)", model=LinearGaussian(np.array([[0.9]])),
    ...                   obs=Identity(1), R=as_covariance(0.5, 1, "R"),
    ...                   prior=GaussianState.create([0.0], 1.0), dt=1.0, steps_per_obs=1,
    ...                   n_obs=4, Q=as_covariance(0.1, 1, "Q"))
    >>> setting.times.tolist()
    [1.0, 2.0, 3.0, 4.0]
    >>> setting.simulate(seed=0).observations.shape
    (4, 1)
    """

    name: str
    model: Model
    obs: ObservationOperator
    R: Covariance
    prior: GaussianState
    dt: float
    steps_per_obs: int
    n_obs: int
    burn_in: float = 0.0
    Q: Covariance | None = None
    reference: dict = field(default_factory=dict)

    def __post_init__(self):
        # A raw R or Q (e.g. from ``with_(R=matrix)``) is checked here, with its name.
        if not isinstance(self.R, Covariance):
            object.__setattr__(self, "R", as_covariance(self.R, self.obs.nobs, "R"))
        if self.Q is not None and not isinstance(self.Q, Covariance):
            object.__setattr__(self, "Q", as_covariance(self.Q, self.model.ndim, "Q"))
        check_positive(self.dt, "dt")
        check_positive(self.steps_per_obs, "steps_per_obs", integer=True)
        check_positive(self.n_obs, "n_obs", integer=True)
        check_positive(self.burn_in, "burn_in", strict=False)
        if self.prior.ndim != self.model.ndim:
            raise ValueError(f"prior has dimension {self.prior.ndim}, model has {self.model.ndim}")
        if self.obs.ndim != self.model.ndim:
            raise ValueError(f"obs acts on dimension {self.obs.ndim}, model has {self.model.ndim}")
        if self.R.dim != self.obs.nobs:
            raise ValueError(f"R has size {self.R.dim}, obs gives {self.obs.nobs} observations")

    @property
    def dt_obs(self) -> float:
        """Model time between observations."""
        return self.dt * self.steps_per_obs

    @property
    def times(self) -> np.ndarray:
        """Observation times, shape (n_obs,): the first is one interval after 0."""
        return self.dt_obs * np.arange(1, self.n_obs + 1)

    def with_(self, **changes) -> "Setting":
        """A copy with some fields changed (e.g. ``n_obs``)."""
        return replace(self, **changes)

    def simulate(self, seed: int | np.random.Generator = 0) -> Simulation:
        """Draw the initial truth from the prior, integrate it, and observe it.

        Parameters
        ----------
        seed : int or numpy.random.Generator

        Returns
        -------
        Simulation
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = self.prior.sample(rng, 1)[0]
        x0 = x.copy()
        T, n = self.n_obs, self.model.ndim
        truth = np.empty((T, n))
        ys = np.empty((T, self.obs.nobs))
        t = 0.0
        for k in range(T):
            if self.Q is None:
                x = self.model.integrate(x, t, self.dt, self.steps_per_obs)
            else:
                for j in range(self.steps_per_obs):
                    x = self.model.step(x, t + j * self.dt, self.dt) + np.sqrt(self.dt) * self.Q.sample(rng, 1)[0]
            t += self.dt_obs
            truth[k] = x
            ys[k] = self.obs(x) + self.R.sample(rng, 1)[0]
        return Simulation(self.times, truth, ys, x0)

    def describe(self) -> dict:
        """JSON-serialisable description for run metadata."""
        return {"name": self.name, "model": self.model.params(), "obs": self.obs.params(),
                "dt": self.dt, "steps_per_obs": self.steps_per_obs, "n_obs": self.n_obs,
                "burn_in": self.burn_in, "R_diag": self.R.variances.tolist()
                if self.R.dim <= 64 else "omitted", "Q": None if self.Q is None else "given"}


def sakov2012(n_obs: int = 1000) -> Setting:
    """Lorenz-63 as in Sakov et al. (2012), DAPPER's ``mods.Lorenz63.sakov2012``.

    dt 0.01, an observation every 25 steps, R = 2 I, all 3 components observed,
    X0 ~ N([1.509, -1.531, 25.46], 2 I), burn-in 16 time units.

    Parameters
    ----------
    n_obs : int, default 1000
        Number of observations (analysis cycles).

    Returns
    -------
    Setting
        Lorenz-63 with DAPPER's published RMSEs of its filters in ``reference``.

    Examples
    --------
    >>> s = sakov2012(n_obs=10)
    >>> s.dt_obs, s.obs.nobs
    (0.25, 3)
    """
    return Setting(
        name="sakov2012", model=Lorenz63(), obs=Identity(3), R=as_covariance(2.0, 3, "R"),
        prior=GaussianState.create([1.509, -1.531, 25.46], 2.0), dt=0.01, steps_per_obs=25,
        n_obs=n_obs, burn_in=16.0,
        reference={"source": "DAPPER 1.7.1 on its own settings (see tests/test_lorenz_reference.py)",
                   "rmse_a": {"ETKF N=10 infl=1.02 rot": 0.59, "EnKF N=10 infl=1.04": "0.56-0.73",
                              "EnKF N=100 infl=1.01": 0.55}})


def sakov2008(n_obs: int = 1000, n: int = 40) -> Setting:
    """Lorenz-96 as in Sakov & Oke (2008b), DAPPER's ``mods.Lorenz96.sakov2008``.

    n 40, F 8, dt 0.05, an observation every step, R = I, all observed,
    X0 ~ N(e_1, 0.001 I), burn-in 20 time units.

    Parameters
    ----------
    n_obs : int, default 1000
        Number of observations (analysis cycles).
    n : int, default 40
        State dimension (the published numbers are for 40).

    Returns
    -------
    Setting
        Lorenz-96 with DAPPER's published RMSEs of its filters in ``reference``.

    Examples
    --------
    >>> s = sakov2008(n_obs=10)
    >>> s.model.ndim, s.dt_obs
    (40, 0.05)
    """
    x0 = np.zeros(n)
    x0[0] = 1.0
    return Setting(
        name="sakov2008", model=Lorenz96(n=n, forcing=8.0), obs=Identity(n),
        R=as_covariance(1.0, n, "R"), prior=GaussianState.create(x0, 0.001), dt=0.05,
        steps_per_obs=1, n_obs=n_obs, burn_in=20.0,
        reference={"source": "DAPPER 1.7.1 on its own settings (see tests/test_lorenz_reference.py)",
                   "rmse_a": {"ETKF N=28 infl=1.02 rot": 0.18, "EnKF PertObs N=40 infl=1.06": 0.22,
                              "DEnKF N=40 infl=1.01": 0.18, "LETKF N=7 infl=1.04 loc_rad=4": 0.22,
                              "Serial EnSRF N=28 infl=1.02": 0.18, "ExtKF infl=10": 0.24}})


def linear_gaussian(n: int = 4, m: int | None = None, n_obs: int = 100, seed: int = 0,
                    q: float = 0.1, r: float = 0.5) -> Setting:
    """A random stable linear-Gaussian system, where the Kalman filter is exact.

    ``M`` is a random rotation scaled to spectral radius 0.95; ``H`` observes
    the first ``m`` components; ``Q = q I``, ``R = r I``, ``X0 ~ N(0, I)``.

    Parameters
    ----------
    n : int
        State dimension.
    m : int, optional
        Number of observed components (default ``n``).
    n_obs : int
        Number of cycles.
    seed : int
        Seed of the random system (not of the simulation).
    q, r : float
        Process- and observation-noise variances.

    Returns
    -------
    Setting
        The setting (``dt = 1``, one step per observation, no burn-in).

    Examples
    --------
    >>> s = linear_gaussian(n=3, m=2)
    >>> s.obs.nobs, s.Q.variances.tolist()
    (2, [0.1, 0.1, 0.1])
    """
    from .models import Subset

    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = 0.95 * Qm @ np.diag(np.linspace(1.0, 0.7, n))
    m = n if m is None else m
    obs = Identity(n) if m == n else Subset(n, np.arange(m))
    return Setting(name="linear_gaussian", model=LinearGaussian(M), obs=obs,
                   R=as_covariance(r, m, "R"), prior=GaussianState.create(np.zeros(n), 1.0),
                   dt=1.0, steps_per_obs=1, n_obs=n_obs, Q=as_covariance(q, n, "Q"))
