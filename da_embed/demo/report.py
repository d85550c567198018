"""What the demo reports: perplexity by segment, the settings line, the shift figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..compare import Comparison
from ..metrics import perplexity
from .stream import DemoStream

__all__ = ["segment_rows", "segment_table", "settings_line", "shift_figure"]


def segment_rows(comparison: Comparison, stream: DemoStream) -> list[dict]:
    """Prequential perplexity of every method on each segment (docstrings, licence).

    Parameters
    ----------
    comparison : Comparison
        The result of :func:`da_embed.compare.compare` on ``stream.ids``.
    stream : DemoStream

    Returns
    -------
    list of dict
        One per method: method, then ``ppl_<segment>``, ``change_<segment>``
        (percent against frozen on the same chunks) and ``chunks_<segment>``
        for the segments ``docstrings`` and ``licence``.

    Examples
    --------
    >>> import xarray as xr
    >>> from da_embed.protocol import PrequentialConfig
    >>> def run(nll):  # four chunks of 8 tokens; the shift is at token 17
    ...     return xr.Dataset({"chunk_start": ("time", [1, 9, 17, 25]), "nll": ("time", nll),
    ...                        "tokens": ("time", [8, 8, 8, 8])})
    >>> res = Comparison((), PrequentialConfig(8, 16), {},
    ...                  {"frozen": run([1.0, 1.0, 2.0, 2.0]), "ekf": run([1.0, 1.0, 1.5, 1.5])})
    >>> rows = segment_rows(res, DemoStream(np.zeros(33, dtype=np.int64), 17,
    ...                                     np.zeros(18, dtype=np.int64), {}))
    >>> ekf = rows[1]
    >>> ekf["change_docstrings"], round(ekf["ppl_licence"], 3), round(ekf["change_licence"], 1)
    (0.0, 4.482, -39.3)
    """
    rows, frozen = [], None
    for name, ds in comparison.datasets.items():
        seg = stream.segment_of(ds["chunk_start"].values)
        row = {"method": name}
        for s in ("docstrings", "licence"):
            mask = seg == s
            row[f"ppl_{s}"] = (perplexity(ds["nll"].values[mask], ds["tokens"].values[mask])
                               if mask.any() else float("nan"))
            row[f"chunks_{s}"] = int(mask.sum())
        if name == "frozen":
            frozen = row
        rows.append(row)
    for row in rows:
        for s in ("docstrings", "licence"):
            ref = frozen[f"ppl_{s}"] if frozen is not None else float("nan")
            row[f"change_{s}"] = (float("nan") if row["method"] == "frozen" or math.isnan(ref)
                                  else 100.0 * (row[f"ppl_{s}"] / ref - 1.0))
    return rows


def segment_table(rows: list[dict]) -> str:
    """The per-segment perplexities as a text table (change vs frozen in percent).

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`segment_rows` (frozen first).

    Returns
    -------
    str

    Examples
    --------
    >>> print(segment_table([
    ...     {"method": "frozen", "ppl_docstrings": 10.0, "change_docstrings": float("nan"),
    ...      "chunks_docstrings": 2, "ppl_licence": 20.0, "change_licence": float("nan"),
    ...      "chunks_licence": 2},
    ...     {"method": "ekf", "ppl_docstrings": 9.0, "change_docstrings": -10.0,
    ...      "chunks_docstrings": 2, "ppl_licence": 15.0, "change_licence": -25.0,
    ...      "chunks_licence": 2}]))
    method  docstrings (2 chunks)  licence (2 chunks)
    ------  ---------------------  ------------------
    frozen                  10.00               20.00
    ekf             9.00 (-10.0%)      15.00 (-25.0%)
    """
    first = rows[0]
    cols = ("method", f"docstrings ({first['chunks_docstrings']} chunks)",
            f"licence ({first['chunks_licence']} chunks)")
    body = []
    for r in rows:
        cells = [r["method"]]
        for s in ("docstrings", "licence"):
            c = r[f"change_{s}"]
            cells.append(f"{r[f'ppl_{s}']:.2f}" + ("" if math.isnan(c) else f" ({c:+.1f}%)"))
        body.append(tuple(cells))
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]

    def fmt(row):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(cols), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body])


def settings_line(result: Comparison) -> str:
    """One line with what the rows ran with (none of it tuned on the reported stream).

    Parameters
    ----------
    result : Comparison
        The demo's comparison (its settings and per-method datasets).

    Returns
    -------
    str

    Examples
    --------
    >>> st = {"P0": 0.1, "Q": 0.01, "R": 1.0, "target": "decrement", "decrement": 1.0}
    >>> settings_line(Comparison((), None, st, {}))
    'settings: random-walk forecast, P0 0.1, Q 0.01, R 1.0, target decrement 1'
    """
    st = result.settings
    parts = [f"settings: random-walk forecast, P0 {st['P0']:g}, Q {st['Q']}, R {st['R']}, "
             f"target {st['target']} {st['decrement']:g}"]
    tuned = " (tuned on the tuning stream)" if st.get("dyneval_lr_tuning") else ""
    if st.get("dyneval_lr") is not None:
        parts.append(f"dyneval lr {st['dyneval_lr']:g}{tuned}")
    for label, ds in result.datasets.items():
        fp = json.loads(ds.attrs.get("filter_params", "{}"))
        name = label.split("@")[0]
        if name in ("enkf", "etkf", "ensrf", "denkf") and "N" in fp:
            parts.append(f"{label} N = {fp['N']}")
        elif name in ("4dvar", "w4dvar") and "window" in fp:
            iters = ds["iterations"].values if "iterations" in ds else np.zeros(0)
            conv = ds["converged"].values if "converged" in ds else np.zeros(0)
            parts.append(f"{label} window {fp['window']} chunks, at most {fp.get('maxiter')} "
                         f"Gauss-Newton iterations (mean {iters.mean():.1f}; "
                         f"{int(conv.sum())}/{conv.size} windows reached gtol)")
    return "; ".join(parts)


def shift_figure(comparison: Comparison, stream: DemoStream, path: Path, dpi: int = 150):
    """NLL minus frozen's per chunk with the shift marked (``shift.png``).

    Parameters
    ----------
    comparison : Comparison
        The demo's comparison.
    stream : DemoStream
        Its stream (where the shift is).
    path : Path
        The PNG file to write.
    dpi : int, default 150

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> callable(shift_figure)  # drawn by tests/test_lm_demo.py
    True
    """
    from matplotlib.figure import Figure

    from ..plot import plot_chunk_nll

    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = plot_chunk_nll(comparison, fig.add_subplot(), smooth=4, relative=True)
    first = next(iter(comparison.datasets.values()))
    k = int(np.sum(stream.segment_of(first["chunk_start"].values) == "docstrings"))
    ax.axvline(k - 0.5, color="0.4", lw=0.8, ls=":")
    for text, ha in (("docstrings  ", "right"), ("  licence", "left")):  # either side of the shift
        ax.annotate(text, (k - 0.5, 0.96), xycoords=("data", "axes fraction"), ha=ha, va="top",
                    fontsize="small", color="0.3")
    fig.savefig(path, dpi=dpi)
    return path
