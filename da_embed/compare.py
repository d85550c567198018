"""The comparison a researcher runs: several methods, one token stream, one table.

:func:`compare` runs every method (frozen first, always) on the same stream
under the same :class:`~da_embed.assimilator.PrequentialConfig`, writes one
netCDF trajectory per method and a summary, and prints a table:

* prequential perplexity;
* change against frozen in percent, with a 95 % circular block-bootstrap
  interval over chunks of the paired per-chunk NLL differences
  (:func:`da_embed.metrics.paired_change`);
* wall time as a ratio to frozen's, measured in the same run;
* peak extra memory: the peak resident set size (RSS) of the process during
  the method's run minus the RSS at its start, sampled every 5 ms by a
  thread (it counts torch and numpy allocations; memory the allocator kept
  from an earlier method and reuses is not counted again);
* adaptation parameters: the numbers the method adapts (the state size n,
  plus the dynamics' parameters; 0 for frozen).

The chunk, context, stride and token counts are printed with every table.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import xarray as xr

from ._version import __version__
from .assimilator import OnlineAssimilator
from .lm.models import load_model
from .memory import PeakRSS
from .methods import EXPERT_METHODS, WINDOWED_METHODS, make_method, parse_methods, split_method
from .metrics import PairedChange, paired_change, perplexity
from .placements import Placement
from .placements.registry import PLACEMENTS, make_placement
from .protocol import PrequentialConfig
from .subspaces import make_subspace, parse_subspace
from .trajectory import strict_json

__all__ = ["compare", "Comparison", "make_placement", "tune_dyneval_lr", "load_model",
           "PLACEMENTS", "DYNEVAL_LR_GRID"]

#: Learning rates tried by :func:`tune_dyneval_lr`.
DYNEVAL_LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)


def tune_dyneval_lr(placement: Placement, tune_ids, protocol: PrequentialConfig, *,
                    grid=DYNEVAL_LR_GRID, max_tokens: int = 4096, seed: int = 0,
                    progress: bool = False):
    """The dynamic-evaluation learning rate with the best prequential NLL on tuning text.

    Parameters
    ----------
    placement : Placement
    tune_ids : array_like of int
        Tuning stream (validation text, never the evaluation stream).
    protocol : PrequentialConfig
        The evaluation protocol (its ``max_tokens`` is replaced by ``max_tokens``).
    grid : sequence of float
        Learning rates tried.
    max_tokens : int, default 4096
        Tokens of the tuning stream used.
    seed : int, default 0
    progress : bool, default False
        A progress bar per learning rate.

    Returns
    -------
    best : float
    results : dict
        Learning rate -> prequential perplexity on the tuning text.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=40)[0].numpy()
    >>> best, results = tune_dyneval_lr(HiddenScale(model), ids, PrequentialConfig(8, 8),
    ...                                 grid=(0.01, 0.1), max_tokens=32)
    >>> best in results, sorted(results)
    (True, [0.01, 0.1])
    """
    tune = PrequentialConfig(chunk=protocol.chunk, context=protocol.context,
                             stride=protocol.stride, max_tokens=max_tokens)
    results = {}
    for lr in grid:
        ds = OnlineAssimilator(placement, make_method("dyneval", lr=float(lr)), protocol=tune,
                               seed=seed, label=f"tuning dyneval lr={lr:g}",
                               progress=progress).run(tune_ids)
        results[float(lr)] = float(ds.attrs["perplexity"])
    best = min(results, key=results.get)
    return best, results


def _number(x: float, spec: str) -> str:
    """``format(x, spec)``, or 3 significant digits beyond 1e6 (a diverged run's perplexity
    would otherwise print hundreds of digits and break the table)."""
    x = float(x)
    if math.isfinite(x) and abs(x) >= 1e6:
        return format(x, ("+" if spec.startswith("+") else "") + ".3g")
    return format(x, spec)


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`.

    Parameters
    ----------
    rows : tuple of dict
        One per method: method, perplexity, change_pct, ci_low, ci_high,
        wall_time_s, wall_ratio, peak_extra_mb, adapt_params, chunks, tokens,
        status, path.
    protocol : PrequentialConfig
    settings : dict
        Everything else that defines the run (model, placement, subspace,
        P0, Q, R, target, members, seed, tuned learning rate, ...).
    datasets : dict
        Method -> trajectory (xarray.Dataset).

    Examples
    --------
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
            "memory: peak RSS above the method's start",
        ]
        cols = ("method", "perplexity", f"vs frozen [{int(100 * s['ci_level'])}% CI]",
                "time x frozen", "peak extra MB", "adapt params")
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
                         f"{r['adapt_params']}"))
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


def compare(model, token_ids, *, methods="frozen,dyneval,ekf,etkf", placement="hidden",
            subspace=None, tune_ids=None, protocol: PrequentialConfig | None = None,
            members: int = 16, P0: float = 0.1, Q=0.01, R=1.0, target: str = "decrement",
            decrement: float = 1.0, dyneval_lr: float | None = None, tune_tokens: int = 4096,
            method_options: dict | None = None, seed: int = 0, out=None,
            model_name: str | None = None, progress: bool = False, n_boot: int = 2000,
            print_fn: Callable[[str], None] | None = print, experts=None,
            segments=None, dynamics=None) -> Comparison:
    """Run several methods on one token stream and tabulate them against frozen.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A Hugging Face causal LM (eval mode).
    token_ids : array_like of int
        The evaluation stream.
    methods : str or sequence of str
        Names of :data:`da_embed.methods.METHODS`; ``frozen`` is added first
        if missing (every change is measured against it).  ``name@spec``
        runs a method in its own subspace (``etkf@fisher:8``), overriding
        ``subspace``.
    placement : str or Placement
        ``hidden``, ``embedding``, ``svf[:targets]``, ``rotary[:mode]`` or a
        placement object on ``model``.
    subspace : str, optional
        ``random:k`` or ``fisher:k`` (Fisher directions from ``tune_ids``) for
        every method but frozen (and those with their own ``@spec``).
    tune_ids : array_like of int, optional
        Tuning stream (validation text): Fisher subspace and the dyneval
        learning rate.
    protocol : PrequentialConfig, optional
    members : int, default 16
        Ensemble size (and candidates of ``verify``).
    P0, Q, R, target, decrement
        As in :class:`~da_embed.assimilator.OnlineAssimilator`.
    dyneval_lr : float, optional
        Learning rate of ``dyneval``; tuned on ``tune_ids`` over
        :data:`DYNEVAL_LR_GRID` when None and tuning text is given, else 0.1.
    tune_tokens : int, default 4096
        Tokens of the tuning stream used for tuning and for the subspace.
    method_options : dict, optional
        Method -> keyword arguments of its class (e.g. ``{"etkf": {"inflation": 1.05}}``).
    seed : int, default 0
    out : str or PathLike, optional
        Folder for ``<method>.nc``, ``summary.json`` and ``summary.csv``.
    model_name : str, optional
        Stored in the outputs.
    progress : bool, default False
        tqdm progress bars.
    n_boot : int, default 2000
        Bootstrap resamples.
    print_fn : callable or None, default print
        Receives the table (None: print nothing).
    experts : da_embed.transformer2.Experts, optional
        The expert states of ``t2`` and ``t2-cem`` (which run in the
        placement's full state, never in ``subspace``).
    segments : list of dict, optional
        The domains of a multi-domain stream (``domain``, ``start``, ``stop``
        per segment, as :func:`da_embed.corpora.alternate_segments` returns
        them): stored in every output's attributes, and each row gets the
        perplexity of the chunks starting in each domain (``domains``).
    dynamics : str, PathLike or SpinupResult, optional
        Learned dynamics and Q (a :func:`da_embed.spinup.spinup` checkpoint or
        result, learned on this placement): every method whose state is the
        placement's (not windowed, not t2) also runs with them as its forecast
        step and prior mean s_b, in a row ``NAME+learned`` next to its
        random-walk row (``frozen+learned``: the learned dynamics alone, no
        data assimilated).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=81)[0]
    >>> res = compare(model, ids, methods="frozen,ekf", protocol=PrequentialConfig(8, 16),
    ...               print_fn=None)
    >>> [r["method"] for r in res.rows], res.rows[1]["chunks"]
    (['frozen', 'ekf'], 10)
    """
    protocol = PrequentialConfig() if protocol is None else protocol
    labels = [m for m in parse_methods(methods) if m != "frozen"]
    labels = ["frozen"] + labels
    options = {k.lower(): dict(v) for k, v in (method_options or {}).items()}
    if experts is not None:
        for label in labels:
            if split_method(label)[0] in EXPERT_METHODS:
                options.setdefault(split_method(label)[0], {}).setdefault("experts", experts)
    if segments is not None:  # the segments of the part of the stream the runs read
        used = len(np.asarray(token_ids)) if protocol.max_tokens is None else min(
            len(np.asarray(token_ids)), protocol.max_tokens)
        segments = [dict(s, stop=min(s["stop"], used)) for s in _check_segments(segments)
                    if s["start"] < used]
    seg_attrs = None if segments is None else {"segments": json.dumps(segments)}
    for label in labels:  # every method is checked before any work
        name, _ = split_method(label)
        make_method(name, members=members, P0=P0, **options.get(name, {}))
    base = make_placement(model, placement)
    placements = {}  # subspace spec -> placement (a Fisher basis is computed once)
    learned = None
    if dynamics is not None:
        from .spinup import LEARNED_SUFFIX, SpinupResult, check_learned_placement, load_spinup

        learned = dynamics if isinstance(dynamics, SpinupResult) else load_spinup(dynamics)

    def base_label(label):
        return label[:-len(LEARNED_SUFFIX)] if learned is not None \
            and label.endswith(LEARNED_SUFFIX) else label

    def placement_for(label):
        name, own = split_method(base_label(label))
        spec = (None if name == "frozen" or name in EXPERT_METHODS
                else (own if own is not None else subspace))
        key = parse_subspace(spec)
        if key not in placements:
            placements[key] = make_subspace(base, spec, tune_ids=tune_ids, protocol=protocol,
                                            seed=seed, max_tokens=tune_tokens,
                                            progress=progress)
        return placements[key]

    mname = model_name or type(model).__name__

    def runner_for(label):
        name, _ = split_method(base_label(label))
        flt = make_method(name, members=members, P0=P0, **options.get(name, {}))
        dyn, q = None, Q
        if label != base_label(label):  # a fresh copy: the dynamics keep the last summary
            dyn, q = copy.deepcopy(learned.dynamics), np.asarray(learned.Q, dtype=float)
        return OnlineAssimilator(placement_for(label), flt, protocol=protocol, P0=P0, Q=q, R=R,
                                 target=target, decrement=decrement, seed=seed,
                                 model_name=mname, label=label, progress=progress,
                                 attrs=seg_attrs, dynamics=dyn)

    if learned is not None:  # NAME+learned after each method whose state the dynamics fit
        def fits(lab):
            try:
                check_learned_placement(learned, placement_for(lab))
            except ValueError:
                return False
            return split_method(lab)[0] not in WINDOWED_METHODS + EXPERT_METHODS

        if not any(fits(lab) for lab in labels):
            check_learned_placement(learned, placement_for(labels[-1]))  # says what differs
        labels = [x for lab in labels for x in ([lab, lab + LEARNED_SUFFIX] if fits(lab)
                                                else [lab])]

    for label in labels:  # subspaces and settings are built and checked before any run
        runner = runner_for(label)
        runner._build()
        if hasattr(runner.method, "check_placement"):  # t2: experts of this placement
            runner.method.check_placement(runner.placement)
    runner_for("frozen")._check_stream(token_ids, protocol)
    tuned = None
    dyn_labels = [lab for lab in labels if split_method(lab)[0] == "dyneval"]
    if dyn_labels and "lr" not in options.get("dyneval", {}):
        if dyneval_lr is not None:
            lr = float(dyneval_lr)
        elif tune_ids is not None:
            lr, tuned = tune_dyneval_lr(placement_for(dyn_labels[0]), tune_ids, protocol,
                                        max_tokens=tune_tokens, seed=seed, progress=progress)
        else:
            lr = 0.1
        options.setdefault("dyneval", {})["lr"] = lr
    if out is not None:
        os.makedirs(out, exist_ok=True)
    datasets, timing, memory, paths = {}, {}, {}, {}
    for label in labels:
        runner = runner_for(label)  # after tuning: dyneval gets the tuned learning rate
        path = (None if out is None
                else os.path.join(os.fspath(out), label.replace(":", "-") + ".nc"))
        tic = time.perf_counter()
        with PeakRSS() as mem:
            try:
                runner.run(token_ids, out=path)
            finally:
                datasets[label] = getattr(runner, "dataset_", None)
        timing[label] = time.perf_counter() - tic
        memory[label] = mem.peak_extra
        paths[label] = path
    rows, change = _rows(labels, datasets, timing, memory, paths, n_boot, seed)
    if segments is not None:
        for row in rows:
            row["domains"] = _domain_perplexities(datasets[row["method"]], segments)
    fro = datasets["frozen"]
    settings = {
        "model": mname, "placement": type(base).__name__ if not isinstance(placement, str)
        else str(placement), "placement_describe": base.describe(),
        "state_dim": int(base.state_dim), "subspace": subspace,
        "subspaces": {lab: getattr(placement_for(lab), "origin", None) for lab in labels},
        "methods": labels, "members": members, "P0": P0,
        "Q": Q if np.isscalar(Q) else "array", "R": R if np.isscalar(R) else "array",
        "target": target, "decrement": decrement,
        "dyneval_lr": options.get("dyneval", {}).get("lr"), "dyneval_lr_tuning": tuned,
        "method_options": options, "seed": seed, "stream_tokens": int(fro.attrs["stream_tokens"]),
        "experts": None if experts is None else experts.params(),
        "segments": segments,
        "dynamics": None if learned is None else str(learned.checkpoint or "in memory"),
        "chunks": int(fro.sizes["time"]), "tokens_scored": int(fro["tokens"].sum()),
        "ci_level": 0.95, "ci_block": change.block, "n_boot": n_boot,
        "memory": "peak RSS during the method's run minus RSS at its start (5 ms sampling)",
    }
    result = Comparison(tuple(rows), protocol, settings, datasets)
    if out is not None:
        _write_summary(result, out)
    if print_fn is not None:
        print_fn(result.table())
    return result


def _check_segments(segments) -> list[dict]:
    """Segments as plain dicts (domain, start, stop), checked."""
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
    return out


def _domain_perplexities(ds, segments) -> dict:
    """Perplexity of the chunks whose first target token lies in each domain's segments."""
    if ds is None or ds.sizes.get("time", 0) == 0:
        return {}
    starts = ds["chunk_start"].values
    domain = np.full(starts.shape, "", dtype=object)
    for s in segments:
        domain[(starts >= int(s["start"])) & (starts < int(s["stop"]))] = str(s["domain"])
    nll, tokens = ds["nll"].values, ds["tokens"].values
    return {d: perplexity(nll[domain == d], tokens[domain == d])
            for d in dict.fromkeys(str(s["domain"]) for s in segments) if np.any(domain == d)}


def _rows(names, datasets, timing, memory, paths, n_boot, seed):
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
            "status": str(ds.attrs.get("status", "")), "path": paths[name],
        })
    return rows, change


def _write_summary(result: Comparison, out) -> None:
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
