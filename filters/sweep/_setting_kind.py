"""The ``setting`` cell kind: one :func:`filters.assimilate` run of a filter on a setting."""

from __future__ import annotations

import inspect
import math

import numpy as np

from .cells import CellKind, register_cell_kind

#: The axes every setting sweep may have besides filter keywords and setting keywords.
SPECIAL_AXES = ("filter", "seed")
VARIABLES = ("rmse_analysis", "rmse_analysis_se", "spread", "wall_per_cycle")


def _filter_classes() -> dict:
    import filters
    from filters.base import Filter

    return {name: obj for name in filters.__all__
            if isinstance(obj := getattr(filters, name), type) and issubclass(obj, Filter)
            and obj is not Filter}


def _factories() -> dict:
    from filters import settings

    return {name: getattr(settings, name) for name in settings.__all__
            if inspect.isfunction(getattr(settings, name))}


def _keywords(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _validate(fixed: dict, axes: dict) -> dict:
    factories = _factories()
    name = fixed.get("name")
    if not isinstance(name, str):
        raise ValueError(f"[setting] needs name = one of {', '.join(factories)} (a string), "
                         f"got {name!r}")
    if name not in factories:
        raise ValueError(f"[setting] name: unknown setting {name!r} (known: {', '.join(factories)})")
    setting_kw = _keywords(factories[name])
    kwargs = {k: v for k, v in fixed.items() if k != "name"}
    for key in kwargs:
        if key not in setting_kw:
            raise ValueError(f"[setting] {key}: {name} has no parameter {key!r} "
                             f"(it takes: {', '.join(setting_kw)})")
    if "filter" not in axes:
        raise ValueError("[grid] needs a filter axis: a list of filter class names")
    classes = _filter_classes()
    for f in axes["filter"]:
        if f not in classes:
            raise ValueError(f"[grid] filter: unknown filter {f!r} (known: {', '.join(classes)})")
    for s in axes.get("seed", [0]):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"[grid] seed: seeds must be integers >= 0, got {s!r}")
    filter_kw = {k for f in axes["filter"] for k in _keywords(classes[f])}
    for axis in axes:
        if axis in SPECIAL_AXES:
            continue
        if axis in kwargs:
            raise ValueError(f"[grid] {axis}: given both in [setting] and as a grid axis")
        if axis in filter_kw and axis in setting_kw:
            raise ValueError(f"[grid] {axis}: ambiguous, a parameter of both the filters and "
                             f"setting {name}")
        if axis not in filter_kw and axis not in setting_kw:
            raise ValueError(f"[grid] {axis}: no filter of the grid ({', '.join(axes['filter'])}) "
                             f"nor setting {name} has a parameter {axis!r}")
    try:  # the setting's own checks of its values, now rather than in every cell
        factories[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"[setting] {name}: {exc}") from None
    return {"name": name, **kwargs}


def _payload(fixed: dict, coords: dict) -> dict:
    factories, classes = _factories(), _filter_classes()
    name = fixed["name"]
    setting_kw = set(_keywords(factories[name]))
    cls = classes[coords["filter"]]
    accepted = set(_keywords(cls))
    setting = dict(fixed)
    filter_kwargs = {}
    lacking = []
    for axis, value in coords.items():
        if axis in SPECIAL_AXES:
            continue
        if axis in setting_kw:
            setting[axis] = value
        elif axis in accepted:
            filter_kwargs[axis] = value
        else:
            lacking.append(axis)
    payload = {"setting": setting, "filter": coords["filter"], "filter_kwargs": filter_kwargs,
               "seed": coords.get("seed", 0)}
    if lacking:
        payload["skip"] = (f"{coords['filter']} has no parameter "
                           f"{', '.join(repr(a) for a in lacking)}")
    return payload


def run_setting_cell(payload: dict) -> dict:
    """Run one ``setting`` cell: build filter and setting, assimilate, summarise.

    Parameters
    ----------
    payload : dict
        ``setting`` (factory name and keywords), ``filter`` (class name),
        ``filter_kwargs``, ``seed``.

    Returns
    -------
    dict
        ``rmse_analysis`` and ``rmse_analysis_se`` (time average after
        burn-in with its autocorrelation-corrected standard error),
        ``spread`` (time-averaged root mean variance), ``wall_per_cycle``
        (mean seconds of forecast + analysis), ``status`` (ok, diverged,
        error) and ``message``.

    Examples
    --------
    >>> r = run_setting_cell({"setting": {"name": "linear_gaussian", "n_obs": 30},
    ...                       "filter": "KalmanFilter", "filter_kwargs": {}, "seed": 0})
    >>> r["status"], round(r["rmse_analysis"], 3) > 0
    ('ok', True)
    """
    from filters import DivergenceError, assimilate, summarize

    nan = float("nan")
    out = {v: nan for v in VARIABLES}
    try:
        setting_kw = dict(payload["setting"])
        setting = _factories()[setting_kw.pop("name")](**setting_kw)
        flt = _filter_classes()[payload["filter"]](**payload["filter_kwargs"])
        ds = assimilate(flt, setting, seed=int(payload["seed"]))
    except DivergenceError as exc:
        out.update(status="diverged", message=str(exc))
        return out
    except Exception as exc:  # the cell's own failure is a result, not a crash of the sweep
        out.update(status="error", message=f"{type(exc).__name__}: {exc}")
        return out
    stats = summarize(ds)
    out.update(rmse_analysis=stats.get("rmse_analysis_mean", nan),
               rmse_analysis_se=stats.get("rmse_analysis_stderr", nan),
               spread=stats.get("rmv_analysis_mean", nan),
               wall_per_cycle=float(np.mean(ds["wall_time"].values)) if ds.sizes["time"] else nan,
               status="ok", message="")
    if not math.isfinite(out["rmse_analysis"]):
        out["message"] = "no cycle after burn-in (raise n_obs)"
    return out


def _cost(payload: dict) -> float:
    # Cycles x ensemble size: what an ensemble filter's run time grows with.
    n_obs = payload["setting"].get("n_obs", 1)
    size = payload["filter_kwargs"].get("N", 1)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (n_obs, size))
    return float(n_obs) * float(size) if ok else 1.0


SETTING_KIND = register_cell_kind(CellKind(
    name="setting", validate=_validate, payload=_payload, run=run_setting_cell,
    variables=VARIABLES, score="rmse_analysis", group="filter", cost=_cost))
