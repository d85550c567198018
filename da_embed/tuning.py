"""Tuning runs on validation text as cells of :mod:`filters.sweep` (the ``[lm_tune]`` cell kind).

One cell is one tuning configuration of one method: the method's online run
under the prequential protocol on the first ``tune_tokens`` tokens of a
validation text, scored by prequential perplexity.  The cell's run loads the
cached reference model (:func:`da_embed.reference.load_reference`, never
trained here when the caller trained it first) and reads the validation text
itself, through :func:`da_embed.selection.read_selection_input`, so a cell
refuses a test split (by name, or a path listed as ``forbidden``) exactly as
the selection step does.  A worker process keeps the model, its
:class:`~da_embed.trunk_cache.TrunkCache` and the token ids between cells,
so a sweep of one worker does the work of the serial loop.

The language-model benchmark (``tests/benchmarks/bench_lm.py``) builds the
spec: ``[grid]`` has the axes ``row`` (its row labels) and ``draw`` (the
index of a configuration drawn by :func:`da_embed.selection.draw_configs`);
the ``[lm_tune]`` table names the model (``model``, ``reference_config``),
the text (``valid_text``, ``valid_sha256``, ``forbidden``, ``tune_tokens``),
the protocol (``chunk``, ``context``, ``stride``), ``seed``, ``members``,
every drawn configuration (``configs``: row -> list of settings) and the
saved subspace bases (``placements``: row -> ``{file, sha256, origin}``).

Importing this module registers the kind.
"""

from __future__ import annotations

import math
import os
import pathlib

from filters.sweep import CellKind, register_cell_kind

from .trunk_cache import TrunkCache

__all__ = ["REFERENCE_MODELS", "reference_text", "tuning_ids", "split_settings",
           "make_tuning_run", "run_config", "run_tune_cell", "TUNE_VARIABLES", "TUNE_KIND"]

#: The reference models a tuning cell can load: name -> what its training text is.
REFERENCE_MODELS = {"stdlib": "the standard-library corpus",
                    "stdlib+wikivalid": "the standard-library corpus plus WikiText-2 valid.txt"}
#: Numeric results of a tuning cell (variables of ``results.nc``).
TUNE_VARIABLES = ("valid_perplexity", "chunks")
_FIXED = ("model", "reference_config", "valid_text", "valid_sha256", "tune_tokens", "chunk",
          "context", "seed", "members", "configs")
_OPTIONAL = ("forbidden", "stride", "threads", "placements", "model_path")
#: Assimilator keywords; every other setting goes to the method's constructor.
_ASSIM_KEYS = ("P0", "Q", "R")
_DEFAULTS = {"P0": 0.1, "Q": 0.01, "R": 1.0}


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def reference_text(name: str) -> str:
    """The training text of a reference model of :data:`REFERENCE_MODELS`.

    Parameters
    ----------
    name : str
        ``stdlib`` or ``stdlib+wikivalid``.

    Returns
    -------
    str

    Examples
    --------
    >>> reference_text("gpt-2")
    Traceback (most recent call last):
    ...
    ValueError: model: unknown reference model 'gpt-2'; choose from stdlib, stdlib+wikivalid
    """
    if name not in REFERENCE_MODELS:
        raise ValueError(f"model: unknown reference model {name!r}; choose from "
                         f"{', '.join(REFERENCE_MODELS)}")
    from .corpora import read_text, stdlib_corpus, wikitext_path

    text = stdlib_corpus()
    if name == "stdlib+wikivalid":
        text = text + "\n" + read_text(wikitext_path("valid"))
    return text


def tuning_ids(tokenizer, text: str, tune_tokens: int):
    """The first ``tune_tokens + 1`` token ids of a validation text.

    Only the first ``max(20 * tune_tokens, 100000)`` characters are encoded
    when they hold enough tokens (encoding the whole file costs seconds).

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    text : str
    tune_tokens : int

    Returns
    -------
    numpy.ndarray
        int64 ids, at most ``tune_tokens + 1`` of them.

    Examples
    --------
    >>> tuning_ids(None, "", 0)
    Traceback (most recent call last):
    ...
    ValueError: tune_tokens must be a positive integer, got 0
    """
    if isinstance(tune_tokens, bool) or not isinstance(tune_tokens, int) or tune_tokens < 1:
        raise ValueError(f"tune_tokens must be a positive integer, got {tune_tokens!r}")
    from .reference import encode_text

    ids = encode_text(tokenizer, text[:max(20 * tune_tokens, 100_000)])
    if ids.size < tune_tokens + 1:
        ids = encode_text(tokenizer, text)
    return ids[:tune_tokens + 1]


def split_settings(label: str, settings: dict):
    """A row's settings split into method name, assimilator keywords and method options.

    Parameters
    ----------
    label : str
        The row (``ekf``, ``etkf@fisher:8``, ``ukf@rotary:base``).
    settings : dict
        Knob -> value; P0, Q and R default to 0.1, 0.01 and 1.0 (Q to 0 for
        3D-Var and strong-constraint 4D-Var); ``inflation = 1.0`` means none.

    Returns
    -------
    tuple
        ``(name, assim, opts)``.

    Examples
    --------
    >>> split_settings("etkf@fisher:8", {"P0": 3.0, "inflation": 1.0})
    ('etkf', {'P0': 3.0, 'Q': 0.01, 'R': 1.0}, {'inflation': None})
    """
    name = label.partition("@")[0]
    assim = {k: settings.get(k, _DEFAULTS[k]) for k in _ASSIM_KEYS}
    opts = {k: v for k, v in settings.items() if k not in _ASSIM_KEYS}
    if opts.get("inflation") == 1.0:
        opts["inflation"] = None
    if name in ("4dvar", "w4dvar", "3dvar") and "Q" not in settings:
        assim["Q"] = 0.0 if name != "w4dvar" else _DEFAULTS["Q"]
    return name, assim, opts


def make_tuning_run(placement, label: str, settings: dict, *, protocol, max_tokens, members: int,
                    seed: int, model_name: str, progress_label: str = "", progress: bool = False):
    """The :class:`~da_embed.assimilator.OnlineAssimilator` of one row and configuration.

    Parameters
    ----------
    placement : Placement
        The row's placement (``HiddenScale``, a subspace of it, a rotary one).
    label : str
        The row.
    settings : dict
        Its configuration (see :func:`split_settings`).
    protocol : PrequentialConfig
        Chunk, context and stride (its ``max_tokens`` is replaced).
    max_tokens : int
        Tokens the run reads.
    members : int
        Ensemble members / candidates.
    seed : int
    model_name : str
        Recorded in the run's attributes.
    progress_label : str, optional
    progress : bool, default False

    Returns
    -------
    OnlineAssimilator

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.protocol import PrequentialConfig
    >>> from da_embed.testing import tiny_gpt2
    >>> run = make_tuning_run(HiddenScale(tiny_gpt2()), "ekf", {"P0": 0.3}, members=4, seed=0,
    ...                       protocol=PrequentialConfig(chunk=8, context=8), max_tokens=33,
    ...                       model_name="tiny")
    >>> type(run).__name__
    'OnlineAssimilator'
    """
    from .assimilator import OnlineAssimilator, PrequentialConfig
    from .methods import make_method

    name, assim, opts = split_settings(label, settings)
    method = make_method(name, members=members, P0=assim["P0"], **opts)
    protocol = PrequentialConfig(chunk=protocol.chunk, context=protocol.context,
                                 stride=protocol.stride, max_tokens=max_tokens)
    return OnlineAssimilator(placement, method, protocol=protocol, members=members, seed=seed,
                             model_name=model_name, label=progress_label, progress=progress,
                             **assim)


def run_config(placement, cache, label: str, settings: dict, ids, *, protocol, members: int,
               seed: int, model_name: str, progress: bool = False) -> dict:
    """Run one tuning configuration; a failed or diverged one is a result, not an error.

    The serial loop of the benchmark and :func:`run_tune_cell` both call
    this, so a sweep cell and the loop run the same code.

    Parameters
    ----------
    placement : Placement
        The row's placement.
    cache : TrunkCache or None
        Used for every row but rotary ones (their trunk depends on the state).
    label : str
        The row.
    settings : dict
        The configuration.
    ids : numpy.ndarray
        The tuning token ids (all of them are read).
    protocol : PrequentialConfig
    members : int
    seed : int
    model_name : str
    progress : bool, default False

    Returns
    -------
    dict
        ``valid_perplexity`` (inf when the run failed), ``run_status`` (the
        run's status, ``failed: ...`` or ``diverged (...)``) and ``chunks``.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.protocol import PrequentialConfig
    >>> from da_embed.testing import tiny_gpt2
    >>> res = run_config(HiddenScale(tiny_gpt2()), None, "ekf", {"P0": 0.1},
    ...                  np.arange(33) % 50, protocol=PrequentialConfig(chunk=8, context=8),
    ...                  members=4, seed=0, model_name="tiny")
    >>> res["chunks"], res["run_status"]
    (4, 'complete')
    """
    tag = " ".join([f"tuning {label}"] + [  # the serial loop's label: errors name the configuration
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in settings.items() if v is not None])
    try:
        with cache if cache is not None and "@rotary" not in label else _Null():
            ds = make_tuning_run(placement, label, settings, protocol=protocol,
                                 max_tokens=int(ids.size), members=members, seed=seed,
                                 model_name=model_name, progress_label=tag,
                                 progress=progress).run(ids)
        ppl, status = float(ds.attrs["perplexity"]), str(ds.attrs["status"])
        chunks = int(ds.sizes["time"])
    except Exception as exc:  # a diverged or failed configuration is recorded and skipped
        ppl, status, chunks = float("inf"), f"failed: {type(exc).__name__}: {exc}", 0
    if not math.isfinite(ppl):
        status = status if status.startswith("failed") else f"diverged ({status})"
    return {"valid_perplexity": ppl, "run_status": status, "chunks": chunks}


# ----------------------------------------------------------------------------- the cell kind
#: Per worker process: (model, config) -> loaded model, tokenizer, placements, cache, ids.
_WORKER: dict = {}
_TEXTS: dict = {}


def _absolute(entry: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"[lm_tune] {entry}: expected a path (a string), got {value!r}")
    return os.fspath(pathlib.Path(value).expanduser().resolve())


def _validate(fixed: dict, axes: dict) -> dict:
    for key in fixed:
        if key not in _FIXED and key not in _OPTIONAL:
            raise ValueError(f"[lm_tune] {key}: unknown entry (entries: "
                             f"{', '.join(_FIXED + _OPTIONAL)})")
    for key in _FIXED:
        if key not in fixed:
            raise ValueError(f"[lm_tune] {key}: missing")
    if set(axes) != {"row", "draw"}:
        raise ValueError(f"[grid]: an [lm_tune] sweep has the axes row and draw, got "
                         f"{', '.join(axes)}")
    if fixed["model"] not in REFERENCE_MODELS:
        raise ValueError(f"[lm_tune] model: unknown reference model {fixed['model']!r}; choose "
                         f"from {', '.join(REFERENCE_MODELS)}")
    configs = fixed["configs"]
    if not isinstance(configs, dict):
        raise ValueError(f"[lm_tune] configs: expected a table row -> list of settings, got "
                         f"{type(configs).__name__}")
    for row in axes["row"]:
        got = configs.get(row)
        if not isinstance(got, list) or len(got) < len(axes["draw"]):
            raise ValueError(f"[lm_tune] configs: row {row!r} needs {len(axes['draw'])} "
                             f"configurations (one per draw), got {got!r}")
    for d in axes["draw"]:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < len(axes["draw"]):
            raise ValueError(f"[grid] draw: expected the indices 0 .. {len(axes['draw']) - 1}, "
                             f"got {d!r}")
    out = dict(fixed)
    out["valid_text"] = _absolute("valid_text", fixed["valid_text"])
    out["forbidden"] = [_absolute("forbidden", f) for f in fixed.get("forbidden", [])]
    return out


def _payload(fixed: dict, coords: dict) -> dict:
    payload = {k: v for k, v in fixed.items() if k not in ("configs", "placements")}
    row = coords["row"]
    payload.update(row=row, settings=fixed["configs"][row][coords["draw"]],
                   placement=(fixed.get("placements") or {}).get(row))
    return payload


def _worker_state(p: dict) -> dict:
    """This process's model, tokenizer, placements and trunk cache of ``p``'s model."""
    import json

    key = (p["model"], json.dumps(p["reference_config"], sort_keys=True))
    state = _WORKER.get(key)
    if state is None:
        from .compare import make_placement
        from .reference import ReferenceConfig, load_reference

        config = ReferenceConfig(**p["reference_config"])
        model, tok, info = load_reference(config, text=reference_text(p["model"]),
                                          train_if_missing=False, progress=False)
        state = {"model": model, "tok": tok, "path": str(info.get("path")),
                 "hidden": make_placement(model, "hidden"), "placements": {}, "ids": {},
                 "cache": TrunkCache(model)}
        _WORKER.clear()  # one model per worker at a time: a sweep is of one model
        _WORKER[key] = state
    if p.get("model_path") and str(p["model_path"]) != state["path"]:
        raise ValueError(f"model_path: the cached model is {state['path']}, not "
                         f"{p['model_path']}")
    return state


def _valid_text(p: dict) -> str:
    """The cell's validation text, read through the selection step's guard (before any model)."""
    from .selection import read_selection_input

    key = (p["valid_text"], p["valid_sha256"], tuple(p.get("forbidden", ())))
    if key not in _TEXTS:
        text, rec = read_selection_input(p["valid_text"], role="valid",
                                         forbidden=p.get("forbidden", ()))
        if rec["sha256"] != p["valid_sha256"]:
            raise ValueError(f"valid_text: {p['valid_text']} changed since the spec was made")
        _TEXTS.clear()
        _TEXTS[key] = text
    return _TEXTS[key]


def _cell_ids(state: dict, p: dict, text: str):
    key = (p["valid_text"], p["valid_sha256"], p["tune_tokens"])
    if key not in state["ids"]:
        state["ids"][key] = tuning_ids(state["tok"], text, int(p["tune_tokens"]))
    return state["ids"][key]


def _cell_placement(state: dict, p: dict):
    from .compare import make_placement

    spec = p["row"].partition("@")[2]
    if not spec:
        return state["hidden"]
    if spec not in state["placements"]:
        if spec.startswith("rotary"):
            state["placements"][spec] = make_placement(state["model"], spec)
        else:
            rec = p.get("placement")
            if not rec:
                raise ValueError(f"placements: row {p['row']!r} needs its saved basis")
            state["placements"][spec] = _load_basis(state["hidden"], rec)
    return state["placements"][spec]


def _load_basis(hidden, rec: dict):
    import numpy as np

    from .placements import Subspace
    from .selection import file_digest

    if file_digest(rec["file"]) != rec["sha256"]:
        raise ValueError(f"placements: the basis {rec['file']} changed since the spec was made")
    with np.load(rec["file"]) as z:
        return Subspace(hidden, z["basis"], z["reference"], origin=rec["origin"])


def run_tune_cell(payload: dict) -> dict:
    """Run one ``[lm_tune]`` cell: one configuration of one row on the validation text.

    Parameters
    ----------
    payload : dict
        The ``[lm_tune]`` table's entries (less ``configs`` and
        ``placements``) with the cell's ``row``, ``settings`` and
        ``placement`` (the saved basis of a subspace row, or None).

    Returns
    -------
    dict
        ``valid_perplexity`` (prequential, inf when the run failed),
        ``chunks``, ``run_status`` (the run's own status string), ``status``
        (ok, diverged or error) and ``message``.

    Examples
    --------
    >>> run_tune_cell({"model": "gpt-2", "row": "ekf"})["status"]
    'error'
    """
    try:
        import torch

        from .protocol import PrequentialConfig

        threads = torch.get_num_threads()
        torch.set_num_threads(int(payload.get("threads", 1)))  # the serial loop's thread count
        try:
            text = _valid_text(payload)  # a test split is refused before a model is loaded
            state = _worker_state(payload)
            ids = _cell_ids(state, payload, text)
            placement = _cell_placement(state, payload)
            protocol = PrequentialConfig(chunk=payload["chunk"], context=payload["context"],
                                         stride=payload.get("stride"))
            res = run_config(placement, state["cache"], payload["row"], payload["settings"], ids,
                             protocol=protocol, members=int(payload["members"]),
                             seed=int(payload["seed"]),
                             model_name=f"reference:{payload['model']}")
        finally:
            torch.set_num_threads(threads)
    except Exception as exc:  # the cell's own failure is a result, not a crash of the sweep
        msg = f"{type(exc).__name__}: {exc}"
        return {"valid_perplexity": float("nan"), "chunks": float("nan"),
                "run_status": f"failed: {msg}", "status": "error", "message": msg}
    ok = math.isfinite(res["valid_perplexity"])
    failed = (res["run_status"].startswith("failed")
              and "AssimilationDiverged" not in res["run_status"])
    res.update(status="ok" if ok else ("error" if failed else "diverged"),
               message="" if ok else res["run_status"])
    return res


TUNE_KIND = register_cell_kind(CellKind(
    name="lm_tune", validate=_validate, payload=_payload, run=run_tune_cell,
    variables=TUNE_VARIABLES, score="valid_perplexity", group="row"))
