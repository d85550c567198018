"""The ``[lm]`` cell kind of :mod:`filters.sweep`: one :func:`da_embed.compare` run per cell.

A cell runs frozen and one method on the test text with its placement,
subspace, P0, Q, R, ensemble size and seed, and keeps what ``compare``
reports against frozen: the change of perplexity with its paired
circular-block-bootstrap interval.  The tuning text (Fisher subspace, dyneval
learning rate) and the test text are separate entries, and the overlap guard
(:func:`da_embed.overlap.check_disjoint`) refuses a tuning text that shares
the scored text's windows unless ``allow_overlap = true``.

Example spec::

    [lm]
    model = "runs/reference/model"     # a save_pretrained folder
    test_text = "data/test.txt"        # the scored stream (or a corpus axis)
    tune_text = "data/valid.txt"       # tuning only, never scored
    chunk = 32
    context = 224

    [grid]
    method = ["ekf", "etkf"]
    placement = ["hidden", "embedding"]
    P0 = [0.05, 0.1]
    seed = [0, 1]

Importing this module registers the kind (``da-embed sweep`` does).
"""

from __future__ import annotations

import os
import pathlib

from filters.sweep import CellKind, register_cell_kind

__all__ = ["LM_AXES", "LM_OPTIONS", "run_lm_cell", "LM_KIND"]

#: Grid axes of an ``[lm]`` sweep -> what they set in :func:`da_embed.compare`.
LM_AXES = ("method", "placement", "subspace", "P0", "Q", "R", "corpus", "members", "seed")
#: Entries of the ``[lm]`` table besides the axes (each may also be fixed there).
LM_OPTIONS = ("model", "test_text", "tune_text", "chunk", "context", "stride", "max_tokens",
              "target", "decrement", "tune_tokens", "n_boot", "allow_overlap")
_PATHS = ("model", "test_text", "tune_text")
VARIABLES = ("change_pct", "ci_low", "ci_high", "perplexity", "frozen_perplexity", "wall_ratio")


def _absolute(entry: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"[lm] {entry}: expected a path (a string), got {value!r}")
    p = pathlib.Path(value).expanduser()
    if not p.exists():
        raise ValueError(f"[lm] {entry}: no such file or folder {value!r}")
    return os.fspath(p.resolve())


def _validate(fixed: dict, axes: dict) -> dict:
    from .methods import METHODS, method_label

    for key in fixed:
        if key not in LM_OPTIONS and key not in LM_AXES:
            raise ValueError(f"[lm] {key}: unknown entry (entries: {', '.join(LM_OPTIONS)}, or a "
                             f"fixed value of an axis: {', '.join(LM_AXES)})")
    for axis in axes:
        if axis not in LM_AXES:
            raise ValueError(f"[grid] {axis}: not an axis of an [lm] sweep (axes: "
                             f"{', '.join(LM_AXES)})")
        if axis in fixed:
            raise ValueError(f"[grid] {axis}: given both in [lm] and as a grid axis")
    if "method" not in axes:
        raise ValueError("[grid] needs a method axis: a list of method names")
    for m in axes["method"]:
        if not isinstance(m, str) or method_label(m.split("@")[0]) not in METHODS:
            raise ValueError(f"[grid] method: unknown method {m!r} (known: {', '.join(METHODS)})")
    if "model" not in fixed:
        raise ValueError("[lm] model: missing (a folder written by save_pretrained)")
    if "corpus" in axes:
        if "test_text" in fixed:
            raise ValueError("[lm] test_text: give the scored text either as test_text or as a "
                             "corpus axis, not both")
        for c in axes["corpus"]:
            _absolute("corpus", c)
    elif "test_text" not in fixed:
        raise ValueError("[lm] test_text: missing (the scored text; or a corpus grid axis)")
    out = dict(fixed)
    for key in _PATHS:
        if key in out:
            out[key] = _absolute(key, out[key])
    if "tune_text" in out and out["tune_text"] == out.get("test_text"):
        raise ValueError("[lm] tune_text: the tuning text is the test text; give separate files")
    return out


def _payload(fixed: dict, coords: dict) -> dict:
    payload = {**fixed, **coords}
    if "corpus" in payload:  # the same key whatever the folder the spec was started from
        payload["test_text"] = os.fspath(pathlib.Path(payload.pop("corpus")).resolve())
    return payload


def run_lm_cell(payload: dict) -> dict:
    """Run one ``[lm]`` cell: frozen and one method through :func:`da_embed.compare`.

    Parameters
    ----------
    payload : dict
        The ``[lm]`` table's entries with the cell's axis values (see
        :data:`LM_AXES`, :data:`LM_OPTIONS`).

    Returns
    -------
    dict
        ``change_pct`` (perplexity change vs frozen, %), ``ci_low`` /
        ``ci_high`` (its paired block-bootstrap interval), ``perplexity``,
        ``frozen_perplexity``, ``wall_ratio`` (time x frozen), ``status``
        (ok or error) and ``message``.

    Examples
    --------
    >>> run_lm_cell({"model": "no-such-folder", "test_text": "x.txt", "method": "ekf"})["status"]
    'error'
    """
    out = {v: float("nan") for v in VARIABLES}
    try:
        out.update(_run(payload))
    except Exception as exc:  # the cell's own failure is a result, not a crash of the sweep
        out.update(status="error", message=f"{type(exc).__name__}: {exc}")
    return out


def _run(p: dict) -> dict:
    import torch

    from .compare import compare, load_model
    from .corpora import read_text
    from .methods import method_label
    from .protocol import PrequentialConfig
    from .reference import encode_text

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per worker process; and the same sums everywhere
    try:
        model, tokenizer = load_model(p["model"])
        protocol = PrequentialConfig(**{k: p[k] for k in ("chunk", "context", "stride",
                                                          "max_tokens") if k in p})
        ids = encode_text(tokenizer, read_text(p["test_text"]))
        tune = encode_text(tokenizer, read_text(p["tune_text"])) if "tune_text" in p else None
        subspace = p.get("subspace")
        options = {k: p[k] for k in ("members", "P0", "Q", "R", "target", "decrement",
                                     "tune_tokens", "n_boot", "seed", "allow_overlap") if k in p}
        res = compare(model, ids, methods=["frozen", p["method"]], placement=p.get("placement",
                      "hidden"), subspace=None if subspace in (None, "none") else subspace,
                      tune_ids=tune, protocol=protocol, print_fn=None, **options)
    finally:
        torch.set_num_threads(threads)
    name = p["method"] if "@" in p["method"] else method_label(p["method"])
    frozen = res.rows[0]
    row = next((r for r in res.rows if r["method"] == name), res.rows[-1])
    ok = row.get("status") in ("complete", "", None)
    return {"change_pct": float(row["change_pct"]), "ci_low": float(row["ci_low"]),
            "ci_high": float(row["ci_high"]), "perplexity": float(row["perplexity"]),
            "frozen_perplexity": float(frozen["perplexity"]),
            "wall_ratio": float(row["wall_ratio"]), "status": "ok" if ok else "diverged",
            "message": "" if ok else str(row.get("status"))}


LM_KIND = register_cell_kind(CellKind(
    name="lm", validate=_validate, payload=_payload, run=run_lm_cell, variables=VARIABLES,
    score="change_pct", group="method"))
