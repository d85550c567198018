"""The table of a comparison: its rows, the :class:`Comparison` and the summary files.

:func:`da_embed.compare.compare` runs the methods; this module turns their
trajectories into rows (:func:`comparison_rows`: perplexity, change against
frozen with its bootstrap interval, time and memory), prints them
(:meth:`Comparison.table`) and writes ``summary.json``, ``summary.csv`` and
``summary.nc`` (:func:`write_summary`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ._version import __version__
from .metrics import PairedChange, paired_change, perplexity
from .overlap import MAX_SHARED
from .protocol import PrequentialConfig
from .trajectory import strict_json

__all__ = ["Comparison", "comparison_rows", "domain_perplexities", "read_segments",
           "write_summary"]


def _number(x: float, spec: str) -> str:
    """``format(x, spec)``, or 3 significant digits beyond 1e6 (a diverged run's perplexity
    would otherwise print hundreds of digits and break the table)."""
    x = float(x)
    if math.isfinite(x) and abs(x) >= 1e6:
        return format(x, ("+" if spec.startswith("+") else "") + ".3g")
    return format(x, spec)


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`~da_embed.compare.compare`.

    Parameters
    ----------
    rows : tuple of dict
        One per method: method, perplexity, change_pct, ci_low, ci_high,
        wall_time_s, wall_ratio, peak_extra_mb, adapt_params, chunks, tokens,
        status, windows, converged_windows (windowed methods: 4D-Var windows
        solved and those whose solver reached its tolerance; None otherwise),
        path and file (the trajectory's path and its file name; None without
        ``out``).
    protocol : PrequentialConfig
    settings : dict
        Everything else that defines the run (model, placement, subspace,
        P0, Q, R, target, members, seed, tuned learning rate, ...).
    datasets : dict
        Method -> trajectory (xarray.Dataset).

    Examples
    --------
    >>> from da_embed.compare import compare
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=40)[0]
    >>> res = compare(model, ids, methods="frozen,ekf", protocol=PrequentialConfig(8, 8),
    ...               print_fn=None)
    >>> [row["method"] for row in res.rows], sorted(res.datasets), res.rows[0]["tokens"]
    (['frozen', 'ekf'], ['ekf', 'frozen'], 32)
    >>> res.table().splitlines()[0]
    'da-embed compare: model GPT2LMHeadModel, placement hidden (state n = 32), subspace none'
    """

    rows: tuple
    protocol: PrequentialConfig
    settings: dict
    datasets: dict = field(repr=False)

    def table(self) -> str:
        """The printed table (header lines with the protocol, then one row per method)."""
        s = self.settings
        head = [
            f"da-embed compare: model {s['model']}, placement {s['placement']} "
            f"(state n = {s['state_dim']}), subspace {s['subspace'] or 'none'}",
            f"prequential protocol: {self.protocol}; {s['tokens_scored']} tokens scored in "
            f"{s['chunks']} chunks per method (stream of {s['stream_tokens']} tokens); each chunk "
            "is scored with the state from earlier chunks only, then assimilated",
            f"interval: {int(100 * s['ci_level'])}% circular block bootstrap over chunks of paired "
            f"per-chunk NLL differences (block {s['ci_block']} chunks, {s['n_boot']} resamples); "
            f"memory: {s.get('memory', 'peak extra memory')}",
        ]
        if (s.get("tuning_overlap") or 0) > MAX_SHARED:  # allowed, but never silently
            head.append(f"WARNING: the tuning text shares {100 * s['tuning_overlap']:.1f}% of "
                        "the evaluation text's 16-token windows (allowed by --allow-overlap)")
        for name, frac in (s.get("expert_overlap") or {}).items():
            if frac > MAX_SHARED:
                head.append(f"WARNING: the corpus of expert {name!r} shares {100 * frac:.1f}% of "
                            "the evaluation text's 16-token windows (allowed by --allow-overlap)")
        windowed = any(r.get("windows") for r in self.rows)
        if windowed:  # the column only where a 4D-Var row needs it (the table stays narrow)
            head.append("converged: 4D-Var windows whose solver reached its tolerance (a row "
                        "with fewer is an under-converged solver, not the 4D-Var minimum)")
        cols = ("method", "perplexity", f"vs frozen [{int(100 * s['ci_level'])}% CI]",
                "time x frozen", "peak extra MB", "adapt params") + (
                    ("converged",) if windowed else ())
        body = []
        for r in self.rows:
            if r["method"] == "frozen":
                change = "-"
            elif math.isnan(r["ci_low"]):
                change = f"{_number(r['change_pct'], '+.1f')}%"
            else:
                change = (f"{_number(r['change_pct'], '+.1f')}% [{_number(r['ci_low'], '+.1f')}, "
                          f"{_number(r['ci_high'], '+.1f')}]")
            status = "" if r["status"] == "complete" else f" ({r['status']})"
            body.append((r["method"] + status, _number(r["perplexity"], ".2f"), change,
                         f"{r['wall_ratio']:.2f}", f"{r['peak_extra_mb']:.1f}",
                         f"{r['adapt_params']}") + ((_converged(r),) if windowed else ()))
        widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
        fmt = lambda row: "  ".join(  # noqa: E731
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
        lines = (head + ["", fmt(cols), fmt(tuple("-" * w for w in widths))]
                 + [fmt(b) for b in body])
        domains = list(dict.fromkeys(d for r in self.rows for d in r.get("domains") or {}))
        if domains:  # a multi-domain stream: perplexity of the chunks starting in each domain
            w = max(len(r["method"]) for r in self.rows)
            lines += ["", "perplexity by domain (chunks by their first token): "
                      + ", ".join(domains)]
            lines += [r["method"].ljust(w) + "  " + "  ".join(
                f"{d} {_number(r['domains'].get(d, float('nan')), '.2f')}" for d in domains)
                for r in self.rows]
        return "\n".join(lines)

    def summary(self) -> dict:
        """JSON-serialisable summary (written to ``summary.json``)."""
        return {"package": "da-embed", "version": __version__,
                "protocol": self.protocol.describe(), "settings": self.settings,
                "rows": list(self.rows)}


def _windows(ds) -> dict:
    """Windows solved and converged, for a windowed (4D-Var) trajectory; else None."""
    if "converged" not in ds:
        return {"windows": None, "converged_windows": None}
    conv = np.asarray(ds["converged"].values)
    return {"windows": int(conv.size), "converged_windows": int(np.sum(conv > 0))}


def _converged(row) -> str:
    """The table's converged cell: ``k/W`` windows, or ``-`` for a method without windows."""
    if not row.get("windows"):
        return "-"
    k, w = row["converged_windows"], row["windows"]
    return f"{k}/{w}" + ("" if k == w else " (!)")


def read_segments(segments, n_tokens: int) -> list[dict]:
    """The segments of a multi-domain stream, checked, cut to its first ``n_tokens`` tokens.

    Parameters
    ----------
    segments : iterable of dict
        ``domain``, ``start``, ``stop`` (stream indices, ``start < stop``) per
        segment, as :func:`da_embed.corpora.alternate_segments` returns them.
    n_tokens : int
        Tokens of the stream that the runs read.

    Returns
    -------
    list of dict
        The segments starting before ``n_tokens``, their ``stop`` at most ``n_tokens``.

    Raises
    ------
    ValueError
        For a segment without the three keys or with bad bounds.

    Examples
    --------
    >>> read_segments([{"domain": "a", "start": 0, "stop": 30},
    ...                {"domain": "b", "start": 30, "stop": 60}], 40)
    [{'domain': 'a', 'start': 0, 'stop': 30}, {'domain': 'b', 'start': 30, 'stop': 40}]
    """
    out = []
    try:
        for s in segments:
            d = {"domain": str(s["domain"]), "start": int(s["start"]), "stop": int(s["stop"])}
            if not 0 <= d["start"] < d["stop"]:
                raise ValueError(f"bad bounds {d}")
            out.append(d)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"segments must be a list of dicts with domain, start < stop (stream "
                         f"indices), as alternate_segments returns: {exc}") from None
    return [dict(s, stop=min(s["stop"], n_tokens)) for s in out if s["start"] < n_tokens]


def domain_perplexities(ds, segments) -> dict:
    """Perplexity of the chunks whose first target token lies in each domain's segments.

    Parameters
    ----------
    ds : xarray.Dataset or None
        A trajectory (``chunk_start``, ``nll``, ``tokens`` per chunk).
    segments : list of dict
        ``domain``, ``start``, ``stop`` (stream indices) per segment.

    Returns
    -------
    dict
        Domain -> perplexity, for the domains where some chunk starts (empty
        for no trajectory or no chunk).

    Examples
    --------
    >>> ds = xr.Dataset({"chunk_start": ("time", [1, 9]), "nll": ("time", [0.0, 1.0]),
    ...                  "tokens": ("time", [8, 8])})
    >>> segs = [{"domain": "a", "start": 0, "stop": 5}, {"domain": "b", "start": 5, "stop": 20}]
    >>> {d: round(p, 4) for d, p in domain_perplexities(ds, segs).items()}
    {'a': 1.0, 'b': 2.7183}
    """
    if ds is None or ds.sizes.get("time", 0) == 0:
        return {}
    starts = ds["chunk_start"].values
    domain = np.full(starts.shape, "", dtype=object)
    for s in segments:
        domain[(starts >= int(s["start"])) & (starts < int(s["stop"]))] = str(s["domain"])
    nll, tokens = ds["nll"].values, ds["tokens"].values
    return {d: perplexity(nll[domain == d], tokens[domain == d])
            for d in dict.fromkeys(str(s["domain"]) for s in segments) if np.any(domain == d)}


def comparison_rows(names, datasets, timing, memory, paths, n_boot, seed):
    """One row per method, measured against frozen (``datasets["frozen"]``).

    Parameters
    ----------
    names : sequence of str
        Method labels, in table order.
    datasets, timing, memory, paths : dict
        Label -> trajectory, wall time (s), peak extra memory (bytes), output path.
    n_boot : int
        Bootstrap resamples of the interval (:func:`da_embed.metrics.paired_change`).
    seed : int

    Returns
    -------
    rows : list of dict
        As in :class:`Comparison`.
    change : PairedChange
        The last method's change against frozen (its ``block`` is reported).

    Examples
    --------
    >>> def run(nll):  # a trajectory as far as the rows read it
    ...     return xr.Dataset({"nll": ("time", nll), "tokens": ("time", [8] * len(nll))},
    ...                       attrs={"adaptation_parameters": 0, "status": "complete"})
    >>> datasets = {"frozen": run([2.0, 2.0, 2.0]), "ekf": run([1.9, 2.0, 1.8])}
    >>> rows, change = comparison_rows(["frozen", "ekf"], datasets, {"frozen": 1.0, "ekf": 2.0},
    ...                                {"frozen": 0, "ekf": 2**20}, {"frozen": None, "ekf": None},
    ...                                n_boot=20, seed=0)
    >>> [(r["method"], round(r["change_pct"], 2), r["wall_ratio"], r["peak_extra_mb"])
    ...  for r in rows]
    [('frozen', 0.0, 1.0, 0.0), ('ekf', -9.52, 2.0, 1.0)]
    """
    fro = datasets["frozen"]
    base_t = timing["frozen"]
    rows, change = [], PairedChange(0.0, float("nan"), float("nan"), 0.95, 0)
    for name in names:
        ds = datasets[name]
        K = min(ds.sizes["time"], fro.sizes["time"])
        nll = ds["nll"].values
        if name == "frozen":
            pc = PairedChange(0.0, float("nan"), float("nan"), 0.95, 0)
        else:
            pc = paired_change(nll[:K], fro["nll"].values[:K], n_boot=n_boot, seed=seed)
            change = pc
        rows.append({
            "method": name, "perplexity": perplexity(nll, ds["tokens"].values),
            "change_pct": pc.change, "ci_low": pc.low, "ci_high": pc.high,
            "wall_time_s": timing[name], "wall_ratio": timing[name] / base_t if base_t else
            float("nan"), "peak_extra_mb": memory[name] / 2**20,
            "adapt_params": int(ds.attrs["adaptation_parameters"]),
            "chunks": int(ds.sizes["time"]), "tokens": int(ds["tokens"].sum()),
            "status": str(ds.attrs.get("status", "")), **_windows(ds),
            "path": paths[name],
            "file": None if paths[name] is None else os.path.basename(os.fspath(paths[name])),
        })
    return rows, change


def write_summary(result: Comparison, out) -> None:
    """Write ``summary.json``, ``summary.csv`` and ``summary.nc`` of ``result`` in ``out``.

    Parameters
    ----------
    result : Comparison
    out : str or PathLike
        An existing folder.

    Examples
    --------
    >>> import os, tempfile
    >>> nll = xr.Dataset({"nll": ("time", [2.0, 1.5])})
    >>> res = Comparison(({"method": "frozen", "perplexity": 5.8},), PrequentialConfig(8, 8),
    ...                  {}, {"frozen": nll})
    >>> with tempfile.TemporaryDirectory() as out:
    ...     write_summary(res, out)
    ...     sorted(os.listdir(out))
    ['summary.csv', 'summary.json', 'summary.nc']
    """
    out = os.fspath(out)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(strict_json(result.summary()), f, indent=2, default=str, allow_nan=False)
    keys = list(result.rows[0])
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(result.rows)
    # The per-chunk NLL of every method side by side, CF-style.
    K = min(ds.sizes["time"] for ds in result.datasets.values())
    names = list(result.datasets)
    nll = np.stack([result.datasets[m]["nll"].values[:K] for m in names])  # (methods, T)
    summary = xr.Dataset(
        {"nll": (("method", "time"), nll, {"long_name": "prequential mean NLL per chunk",
                                           "units": "nat"})},
        coords={"method": ("method", names, {"long_name": "method", "units": "1"}),
                "time": ("time", np.arange(K), {"long_name": "chunk index", "units": "1",
                                                "axis": "T"})},
        attrs={"Conventions": "CF-1.8", "title": "da-embed compare summary",
               "summary": json.dumps(strict_json(result.summary()), default=str,
                                     allow_nan=False)})
    summary.to_netcdf(os.path.join(out, "summary.nc"), engine="netcdf4")
