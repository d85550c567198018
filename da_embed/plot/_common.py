"""What the figures of ``da_embed.plot`` share: method colours, titles, trajectory checks.

Also :func:`synthetic_trajectory`, the small run their examples draw.  The
helpers they share with :mod:`filters.plot` (Axes, heatmaps, run titles) are
in :mod:`filters.plot.helpers`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from filters.plot.helpers import json_attr, run_title

__all__ = ["METHOD_COLORS", "FROZEN_COLOR", "wrap_title", "method_colors", "check_trajectory",
           "state_symbol", "protocol_text", "trajectory_title", "synthetic_trajectory"]

#: Okabe & Ito (2008) colours for methods other than frozen (black), in the order
#: methods appear; black and the palette's yellow (poor on white) come last.
METHOD_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7",
                 "#F0E442")
FROZEN_COLOR = "#000000"


def wrap_title(text: str, width: int = 80) -> str:
    """Wrap each line of a title so it fits the figure's width."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def method_colors(methods) -> dict:
    """Method -> colour: frozen black, the others the palette in order (cycled)."""
    out, i = {}, 0
    for m in methods:
        if m == "frozen":
            out[m] = FROZEN_COLOR
        else:
            out[m] = METHOD_COLORS[i % len(METHOD_COLORS)]
            i += 1
    return out


def check_trajectory(ds, name: str = "ds") -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{name} must be an xarray.Dataset (a da_embed trajectory), got "
                        f"{type(ds).__name__}")
    missing = [v for v in ("analysis_mean", "nll") if v not in ds]
    if missing:
        raise ValueError(f"{name} is not a da_embed trajectory: it has no {missing} "
                         "(open a <method>.nc written by OnlineAssimilator.run or compare)")


def state_symbol(ds) -> str:
    """``z`` for a subspace run (coordinates of s = s_ref + P z), else ``s``."""
    return "z" if "subspace_basis" in ds else "s"


def protocol_text(attrs: dict) -> str:
    parts = []
    for key in ("chunk", "context", "stride"):
        if key in attrs and attrs[key] not in (None, "none"):
            parts.append(f"{key} {attrs[key]}")
    return ", ".join(parts)


def trajectory_title(ds: xr.Dataset) -> str:
    """``"etkf: ETKF(N=16) on HiddenScale (n = 32), TinyLM; chunk 8, context 16"``.

    Parameters
    ----------
    ds : xarray.Dataset
        A trajectory (any Dataset; missing attributes are left out).

    Returns
    -------
    str

    Examples
    --------
    >>> trajectory_title(synthetic_trajectory("etkf"))
    'etkf: ETKF(N=8) on HiddenScale (n = 6), synthetic; chunk 4, context 8, stride 4'
    """
    label = ds.attrs.get("method", "")
    flt = run_title(ds) if "filter" in ds.attrs else label or "run"
    head = flt if not label or label.lower() == flt.lower() else f"{label}: {flt}"
    placement = json_attr(ds, "placement", {}) or {}
    where = placement.get("placement") if isinstance(placement, dict) else None
    if where == "Subspace":
        opts = placement.get("options", {})
        inner = opts.get("placement", {}).get("placement", "?")
        where = f"{inner} in a {opts.get('k', '?')}-dim subspace ({opts.get('origin', '?')})"
    n = ds.attrs.get("state_dim", ds.sizes.get("state"))
    if where:
        head += f" on {where}"
        if n is not None and "subspace" not in where:
            head += f" (n = {n})"
    if ds.attrs.get("model"):
        head += f", {ds.attrs['model']}"
    proto = protocol_text(ds.attrs)
    return head + (f"; {proto}" if proto else "")


def synthetic_trajectory(method: str = "etkf", *, T: int = 16, n: int = 6, L: int = 4,
                         seed: int = 0, covariance: bool = True) -> xr.Dataset:
    """A small synthetic trajectory in the real layout, for examples and quick checks.

    The state follows a seeded random walk with shrinking spreads and the
    per-token NLL a noisy decreasing curve; no model is run.  The layout is
    the one :class:`~da_embed.trajectory.TrajectoryRecorder` writes.

    Parameters
    ----------
    method : str, default "etkf"
        Method label (``"frozen"`` gives a state fixed at 0 with zero spread).
    T, n, L : int
        Chunks, state size, tokens per chunk.
    seed : int, default 0
    covariance : bool, default True
        Store a final ``analysis_covariance`` (not for frozen).

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> ds = synthetic_trajectory("ekf", T=5, n=3)
    >>> ds["analysis_mean"].shape, ds["analysis_covariance"].dims
    ((5, 3), ('state', 'state_b'))
    """
    from ..trajectory import TrajectoryRecorder

    for name, v in (("T", T), ("n", n), ("L", L)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rng = np.random.default_rng(seed)
    frozen = method == "frozen"
    rec = TrajectoryRecorder(n, L)
    scales = np.linspace(1.0, 0.2, n)  # components differ in how much they move
    x = np.zeros(n)
    spread = np.full(n, math.sqrt(0.1))
    for k in range(T):
        mean_f, spread_f = x.copy(), np.sqrt(spread ** 2 + 0.01)
        if not frozen:
            x = x + 0.1 * scales * rng.standard_normal(n)
            spread = spread_f * 0.8
        nll_tok = 4.0 + (0.0 if frozen else -0.02 * k) + 0.3 * rng.standard_normal(L)
        rec.append({"chunk_start": 1 + k * L, "context_tokens": min(8, k * L), "tokens": L,
                    "nll": nll_tok.mean(), "token_nll": nll_tok,
                    "token_id": rng.integers(0, 97, L), "innovation": -np.ones(L),
                    "forecast_mean": mean_f, "forecast_spread": 0 * spread_f if frozen
                    else spread_f, "analysis_mean": x.copy(),
                    "analysis_spread": 0 * spread if frozen else spread.copy(),
                    "wall_time": 0.01, "wall_time_forecast": 0.001, "wall_time_score": 0.005,
                    "wall_time_analysis": 0.004})
    filters_ = {"frozen": ("frozen", {}), "ekf": ("EKF", {}), "etkf": ("ETKF", {"N": 8})}
    fname, params = filters_.get(method, (method.upper(), {}))
    final = None
    if covariance and not frozen:
        A = rng.standard_normal((n, n)) * 0.3
        C = np.diag(spread) @ (np.eye(n) + 0.5 * (A + A.T) / n) @ np.diag(spread)
        final = {"analysis_covariance": 0.5 * (C + C.T)}
    attrs = {"method": method, "filter": fname, "filter_params": json.dumps(params),
             "placement": json.dumps({"placement": "HiddenScale", "state_dim": n}),
             "model": "synthetic", "chunk": L, "context": 2 * L, "stride": L,
             "state_dim": n, "tokens_scored": T * L, "status": "complete"}
    return rec.to_dataset(attrs, final=final)
