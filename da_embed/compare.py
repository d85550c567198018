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
import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .assimilator import OnlineAssimilator
from .comparison import (Comparison, comparison_rows, domain_perplexities, read_segments,
                         write_summary)
from .lm.models import load_model
from .memory import PeakHeap
from .overlap import check_disjoint
from .methods import EXPERT_METHODS, WINDOWED_METHODS, make_method, parse_methods, split_method
from .placements import Placement
from .placements.registry import PLACEMENTS, make_placement
from .protocol import PrequentialConfig
from .subspaces import make_subspace, parse_subspace
from .trajectory import run_file_stem

__all__ = ["compare", "Comparison", "make_placement", "tune_dyneval_lr", "load_model",
           "PLACEMENTS", "DYNEVAL_LR_GRID", "CompareConfig"]

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


@dataclass(frozen=True)
class CompareConfig:
    """The keyword arguments of :func:`compare`, as given (None: the default it stands for).

    Parameters
    ----------
    methods, placement, subspace, tune_ids, protocol, members, P0, Q, R, target, decrement
        As in :func:`compare`.
    dyneval_lr, tune_tokens, method_options, seed, out, model_name, progress, n_boot
        As in :func:`compare`.
    print_fn, experts, segments, dynamics, allow_overlap
        As in :func:`compare`.

    Examples
    --------
    >>> CompareConfig(methods="frozen,ekf").members
    16
    """

    methods: object = "frozen,dyneval,ekf,etkf"
    placement: object = "hidden"
    subspace: str | None = None
    tune_ids: object = None
    protocol: PrequentialConfig | None = None
    members: int = 16
    P0: float = 0.1
    Q: object = 0.01
    R: object = 1.0
    target: str = "decrement"
    decrement: float = 1.0
    dyneval_lr: float | None = None
    tune_tokens: int = 4096
    method_options: dict | None = None
    seed: int = 0
    out: object = None
    model_name: str | None = None
    progress: bool = False
    n_boot: int = 2000
    print_fn: Callable[[str], None] | None = print
    experts: object = None
    segments: list | None = None
    dynamics: object = None
    allow_overlap: bool = False


@dataclass(frozen=True)
class _MethodRun:
    """One method's run: its trajectory, wall time (s), peak extra RSS (bytes), file."""

    dataset: object
    seconds: float
    peak_extra: float
    path: str | None


class _Plan:
    """What every run of one comparison shares: labels, options, placements, learned dynamics.

    Built (and every method checked) before any work: the stages of
    :func:`compare` are its methods, in order :meth:`add_learned_rows`,
    :meth:`check`, :meth:`tune`, :meth:`run_all`, :meth:`settings`.
    """

    def __init__(self, model, token_ids, cfg: CompareConfig) -> None:
        self.cfg = cfg
        self.protocol = PrequentialConfig() if cfg.protocol is None else cfg.protocol
        self.labels = ["frozen"] + [m for m in parse_methods(cfg.methods) if m != "frozen"]
        self.options = {k.lower(): dict(v) for k, v in (cfg.method_options or {}).items()}
        if cfg.experts is not None:
            for label in self.labels:
                if split_method(label)[0] in EXPERT_METHODS:
                    self.options.setdefault(split_method(label)[0], {}).setdefault(
                        "experts", cfg.experts)
        self.segments = None
        if cfg.segments is not None:  # the segments of the part of the stream the runs read
            n = len(np.asarray(token_ids))
            self.segments = read_segments(cfg.segments, n if self.protocol.max_tokens is None
                                          else min(n, self.protocol.max_tokens))
        self.seg_attrs = (None if self.segments is None
                          else {"segments": json.dumps(self.segments)})
        for label in self.labels:  # every method is checked before any work
            self._method(split_method(label)[0])
        self.base = make_placement(model, cfg.placement)
        self.placements = {}  # subspace spec -> placement (a Fisher basis is computed once)
        self.learned = None
        if cfg.dynamics is not None:
            from .spinup import SpinupResult, load_spinup

            self.learned = (cfg.dynamics if isinstance(cfg.dynamics, SpinupResult)
                            else load_spinup(cfg.dynamics))
        self.model_name = cfg.model_name or type(model).__name__

    def _method(self, name: str):
        cfg = self.cfg
        return make_method(name, members=cfg.members, P0=cfg.P0, **self.options.get(name, {}))

    def base_label(self, label: str) -> str:
        """``label`` without the learned-dynamics suffix."""
        from .spinup import LEARNED_SUFFIX

        return label[:-len(LEARNED_SUFFIX)] if self.learned is not None \
            and label.endswith(LEARNED_SUFFIX) else label

    def placement_for(self, label: str):
        """The placement of a method: the base, or its subspace (built once per spec)."""
        name, own = split_method(self.base_label(label))
        spec = (None if name == "frozen" or name in EXPERT_METHODS
                else (own if own is not None else self.cfg.subspace))
        key = parse_subspace(spec)
        if key not in self.placements:
            cfg = self.cfg
            self.placements[key] = make_subspace(self.base, spec, tune_ids=cfg.tune_ids,
                                                 protocol=self.protocol, seed=cfg.seed,
                                                 max_tokens=cfg.tune_tokens,
                                                 progress=cfg.progress)
        return self.placements[key]

    def runner_for(self, label: str) -> OnlineAssimilator:
        """A fresh assimilator of one row (with the options as they are now)."""
        cfg = self.cfg
        flt = self._method(split_method(self.base_label(label))[0])
        dyn, q = None, cfg.Q
        if label != self.base_label(label):  # a fresh copy: the dynamics keep the last summary
            dyn = copy.deepcopy(self.learned.dynamics)
            q = np.asarray(self.learned.Q, dtype=float)
        return OnlineAssimilator(self.placement_for(label), flt, protocol=self.protocol,
                                 P0=cfg.P0, Q=q, R=cfg.R, target=cfg.target,
                                 decrement=cfg.decrement, seed=cfg.seed,
                                 model_name=self.model_name, label=label,
                                 progress=cfg.progress, attrs=self.seg_attrs, dynamics=dyn)

    def add_learned_rows(self) -> None:
        """NAME+learned after each method whose state the learned dynamics fit."""
        if self.learned is None:
            return
        from .spinup import LEARNED_SUFFIX, check_learned_placement

        def fits(lab):
            try:
                check_learned_placement(self.learned, self.placement_for(lab))
            except ValueError:
                return False
            return split_method(lab)[0] not in WINDOWED_METHODS + EXPERT_METHODS

        if not any(fits(lab) for lab in self.labels):  # says what differs
            check_learned_placement(self.learned, self.placement_for(self.labels[-1]))
        self.labels = [x for lab in self.labels
                       for x in ([lab, lab + LEARNED_SUFFIX] if fits(lab) else [lab])]
        if self.cfg.print_fn is not None:  # the learned model's size, next to the table
            dyn, res = self.learned.dynamics.params(), self.learned
            objective = getattr(res.config, "objective", "em")
            self.cfg.print_fn(
                f"learned dynamics ({objective} objective, step {res.step}): "
                f"{dyn['transition_parameters']} transition + {dyn['adapter_parameters']} "
                f"adapter = {res.dynamics.num_parameters} parameters (state n = "
                f"{res.dynamics.ndim})")

    def check(self, token_ids) -> None:
        """Build and check every row's settings and subspace, and the stream, before any run."""
        for label in self.labels:
            runner = self.runner_for(label)
            runner._build()
            if hasattr(runner.method, "check_placement"):  # t2: experts of this placement
                runner.method.check_placement(runner.placement)
        self.runner_for("frozen")._check_stream(token_ids, self.protocol)
        self.tuning_overlap = None
        if self.cfg.tune_ids is not None:  # tuning on the scored text would leak it
            scored = np.asarray(token_ids).ravel()[:self.protocol.max_tokens]
            self.tuning_overlap = check_disjoint(
                scored, self.cfg.tune_ids, what="the tuning text (tune_ids)",
                allow=self.cfg.allow_overlap, option="allow_overlap=True (--allow-overlap)")
        self.expert_overlap = None
        windows = getattr(self.cfg.experts, "windows", None)
        if windows:  # an expert trained on the scored text would leak it
            scored = np.asarray(token_ids).ravel()[:self.protocol.max_tokens]
            self.expert_overlap = {
                name: check_disjoint(scored, w, what=f"the corpus of expert {name!r}",
                                     allow=self.cfg.allow_overlap, windows=True,
                                     option="allow_overlap=True (--allow-overlap)")
                for name, w in windows.items()}

    def tune(self):
        """Set dyneval's learning rate (given, tuned on tuning text, or 0.1); the tuning results."""
        cfg, tuned = self.cfg, None
        dyn_labels = [lab for lab in self.labels if split_method(lab)[0] == "dyneval"]
        if dyn_labels and "lr" not in self.options.get("dyneval", {}):
            if cfg.dyneval_lr is not None:
                lr = float(cfg.dyneval_lr)
            elif cfg.tune_ids is not None:
                lr, tuned = tune_dyneval_lr(self.placement_for(dyn_labels[0]), cfg.tune_ids,
                                            self.protocol, max_tokens=cfg.tune_tokens,
                                            seed=cfg.seed, progress=cfg.progress)
            else:
                lr = 0.1
            self.options.setdefault("dyneval", {})["lr"] = lr
        return tuned

    def run_all(self, token_ids) -> dict:
        """Every row's run, in order (after :meth:`tune`); label -> :class:`_MethodRun`."""
        if self.cfg.out is not None:
            os.makedirs(self.cfg.out, exist_ok=True)
        return {label: self.run(label, token_ids) for label in self.labels}

    def run(self, label: str, token_ids) -> _MethodRun:
        """Run one row (after tuning: dyneval gets the tuned rate), timed and its heap watched."""
        runner = self.runner_for(label)
        out = self.cfg.out
        path = (None if out is None
                else os.path.join(os.fspath(out), run_file_stem(label) + ".nc"))
        tic = time.perf_counter()
        with PeakHeap() as mem:
            runner.run(token_ids, out=path)
        return _MethodRun(runner.dataset_, time.perf_counter() - tic, mem.peak_extra, path)

    def settings(self, fro, tuned, change) -> dict:
        """Everything but the rows that defines the run (``fro``: frozen's trajectory)."""
        cfg, base, labels = self.cfg, self.base, self.labels
        Q, R = cfg.Q, cfg.R
        return {
            "model": self.model_name,
            "placement": type(base).__name__ if not isinstance(cfg.placement, str)
            else str(cfg.placement), "placement_describe": base.describe(),
            "state_dim": int(base.state_dim), "subspace": cfg.subspace,
            "subspaces": {lab: getattr(self.placement_for(lab), "origin", None)
                          for lab in labels},
            "methods": labels, "members": cfg.members, "P0": cfg.P0,
            "Q": Q if np.isscalar(Q) else "array", "R": R if np.isscalar(R) else "array",
            "target": cfg.target, "decrement": cfg.decrement,
            "dyneval_lr": self.options.get("dyneval", {}).get("lr"), "dyneval_lr_tuning": tuned,
            "method_options": self.options, "seed": cfg.seed,
            "stream_tokens": int(fro.attrs["stream_tokens"]),
            "experts": None if cfg.experts is None else cfg.experts.params(),
            "segments": self.segments,
            "dynamics": (None if self.learned is None
                         else str(self.learned.checkpoint or "in memory")),
            "chunks": int(fro.sizes["time"]), "tokens_scored": int(fro["tokens"].sum()),
            "ci_level": 0.95, "ci_block": change.block, "n_boot": cfg.n_boot,
            "tuning_overlap": self.tuning_overlap, "allow_overlap": cfg.allow_overlap,
            "expert_overlap": getattr(self, "expert_overlap", None),
            "memory": f"{PeakHeap.measure} (malloc'd bytes: numpy arrays, torch CPU tensors; "
                      "5 ms sampling), the same whatever ran before",
        }


def compare(model, token_ids, *, methods="frozen,dyneval,ekf,etkf", placement="hidden",
            subspace=None, tune_ids=None, protocol: PrequentialConfig | None = None,
            members: int = 16, P0: float = 0.1, Q=0.01, R=1.0, target: str = "decrement",
            decrement: float = 1.0, dyneval_lr: float | None = None, tune_tokens: int = 4096,
            method_options: dict | None = None, seed: int = 0, out=None,
            model_name: str | None = None, progress: bool = False, n_boot: int = 2000,
            print_fn: Callable[[str], None] | None = print, experts=None,
            segments=None, dynamics=None, allow_overlap: bool = False) -> Comparison:
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
    allow_overlap : bool, default False
        Run although ``tune_ids``, or the training corpus of an expert in
        ``experts`` (its :attr:`~da_embed.transformer2.Experts.windows`),
        shares more than 1% of the evaluation stream's 16-token windows
        (:func:`da_embed.overlap.check_disjoint` refuses otherwise); the
        settings (``tuning_overlap``, ``expert_overlap``) and the table
        record it.

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
    options = dict(locals())  # the keyword arguments, as given
    cfg = CompareConfig(**{k: v for k, v in options.items() if k not in ("model", "token_ids")})
    plan = _Plan(model, token_ids, cfg)  # methods, options, segments, placement: checked
    plan.add_learned_rows()
    plan.check(token_ids)  # subspaces and settings are built and checked before any run
    tuned = plan.tune()
    result = _tabulate(plan, plan.run_all(token_ids), tuned)
    _report(result, cfg)
    return result


def _tabulate(plan: _Plan, runs: dict, tuned) -> Comparison:
    """The rows (each against frozen) and settings of the finished runs."""
    datasets = {label: r.dataset for label, r in runs.items()}
    rows, change = comparison_rows(plan.labels, datasets,
                                   {label: r.seconds for label, r in runs.items()},
                                   {label: r.peak_extra for label, r in runs.items()},
                                   {label: r.path for label, r in runs.items()},
                                   plan.cfg.n_boot, plan.cfg.seed)
    if plan.segments is not None:
        for row in rows:
            row["domains"] = domain_perplexities(datasets[row["method"]], plan.segments)
    settings = plan.settings(datasets["frozen"], tuned, change)
    return Comparison(tuple(rows), plan.protocol, settings, datasets)


def _report(result: Comparison, cfg: CompareConfig) -> None:
    """Write the summary files (with ``out``) and print the table (with ``print_fn``)."""
    if cfg.out is not None:
        write_summary(result, cfg.out)
    if cfg.print_fn is not None:
        cfg.print_fn(result.table())
