"""The demo's run: the reference model, the stream, the comparison, the tables and figures.

:func:`run_demo` gathers its options into a :class:`DemoConfig` and runs the
named stages; :func:`main` is ``python -m da_embed.demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..compare import Comparison, compare
from ..protocol import PrequentialConfig
from .report import segment_rows, segment_table, settings_line, shift_figure
from .stream import DemoStream, check_budget, demo_stream

__all__ = ["DEMO_METHODS", "DEMO_METHOD_OPTIONS", "DemoConfig", "run_demo", "main"]

#: The compared methods: gradient methods on the full state, the EnKF and the
#: UKF in the same 8-dimensional Fisher subspace (17 sigma points).
DEMO_METHODS = ("frozen", "dyneval", "ekf", "4dvar", "enkf@fisher:8", "ukf@fisher:8")
#: 4D-Var gets three Gauss-Newton outer loops per window (operational 4D-Var
#: uses two or three; the default 20 costs ten times the frozen model here).
DEMO_METHOD_OPTIONS = {"4dvar": {"maxiter": 3}}

_DESCRIPTION = ("The main job (``make demo``): online adaptation of the reference model to a "
                "domain shift.")


@dataclass(frozen=True)
class DemoConfig:
    """The options of :func:`run_demo` (everything but the model, the text and the output).

    Parameters
    ----------
    max_tokens, tune_tokens : int
        Length budgets of the reported and the tuning stream.
    protocol : PrequentialConfig
    methods : str or sequence of str
    method_options : dict
    members : int
    seed : int
    progress, figures : bool
        Progress bars; the PNG figures.
    dpi : int

    Examples
    --------
    >>> DemoConfig().protocol.chunk, DemoConfig().method_options
    (32, {'4dvar': {'maxiter': 3}})
    """

    max_tokens: int = 3072
    tune_tokens: int = 1024
    protocol: PrequentialConfig = field(default_factory=PrequentialConfig)
    methods: object = DEMO_METHODS
    method_options: dict | None = None
    members: int = 16
    seed: int = 0
    progress: bool = True
    figures: bool = True
    dpi: int = 150

    def __post_init__(self):
        if self.method_options is None:
            object.__setattr__(self, "method_options", DEMO_METHOD_OPTIONS)


@dataclass(frozen=True)
class _Model:
    """The compared model, its label, and the text it was trained on (None: unknown)."""

    model: object
    tokenizer: object
    name: str
    training_text: str | None
    reference: bool


def run_demo(out, *, model=None, tokenizer=None, max_tokens: int = 3072,
             tune_tokens: int = 1024, protocol: PrequentialConfig | None = None,
             methods=DEMO_METHODS, method_options: dict | None = None, members: int = 16,
             seed: int = 0, training_text: str | None = None, progress: bool = True,
             figures: bool = True, dpi: int = 150, print_fn: Callable[[str], None] | None = print
             ) -> Comparison:
    """The main job: reference model, domain-shift stream, comparison, files and figures.

    Parameters
    ----------
    out : str or PathLike
        Output folder: ``<method>.nc`` (one trajectory per method),
        ``summary.json``/``.csv``/``.nc``, ``segments.csv``, ``demo.json`` and
        the PNG figures.
    model, tokenizer : optional
        A causal LM and its tokenizer; default the reference model
        (:func:`da_embed.reference.load_reference`, trained on first use).
        Give both or neither.
    max_tokens : int, default 3072
        Length budget of the reported stream (about 95 chunks of 32).
    tune_tokens : int, default 1024
        Length of the tuning stream.
    protocol : PrequentialConfig, optional
        Default ``PrequentialConfig()``: chunk 32, context 224, stride 32.
    methods : str or sequence of str, default :data:`DEMO_METHODS`
    method_options : dict, optional
        Default :data:`DEMO_METHOD_OPTIONS`.
    members : int, default 16
        EnKF ensemble size.
    seed : int, default 0
    training_text : str, optional
        The model's training text; docstring paragraphs found in it verbatim
        are dropped.  Default: the standard-library corpus when the
        reference model is used, else None (then the output says the
        docstrings are not checked against the training text).
    progress : bool, default True
        tqdm progress bars (training, tuning, every method).
    figures : bool, default True
        Write the PNG figures (:func:`da_embed.plot.save_figures` and ``shift.png``).
    dpi : int, default 150
        Resolution of the figures.
    print_fn : callable or None, default print
        Receives every printed line (None: silent).

    Returns
    -------
    Comparison
        As :func:`da_embed.compare.compare`; ``settings["demo"]`` holds the
        stream's sources, the per-segment rows and the timings.

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_llama
    >>> tok = train_tokenizer("The message has a header and a body. " * 40, vocab_size=300)
    >>> res = run_demo(tempfile.mkdtemp(), model=tiny_llama(vocab_size=len(tok)),
    ...                tokenizer=tok, max_tokens=41, tune_tokens=40,
    ...                protocol=PrequentialConfig(chunk=8, context=16), methods="frozen,ekf",
    ...                progress=False, figures=False, print_fn=None)
    >>> [r["method"] for r in res.rows], res.settings["demo"]["stream"]["docstrings"]["tokens"]
    (['frozen', 'ekf'], 17)
    """
    if (model is None) != (tokenizer is None):
        raise ValueError("give both model and tokenizer, or neither (the reference model)")
    config = DemoConfig(max_tokens=max_tokens, tune_tokens=tune_tokens,
                        protocol=PrequentialConfig() if protocol is None else protocol,
                        methods=methods, method_options=method_options, members=members,
                        seed=seed, progress=progress, figures=figures, dpi=dpi)
    return _run(Path(out), model, tokenizer, training_text, config, print_fn)


def _run(out: Path, model, tokenizer, training_text, config: DemoConfig,
         print_fn: Callable[[str], None] | None) -> Comparison:
    """The stages of :func:`run_demo`, each timed."""
    say = print_fn if print_fn is not None else (lambda s: None)
    check_budget(config.max_tokens, config.tune_tokens, config.protocol)  # before any model
    timings: dict[str, float] = {}
    with _timed(timings, "model_s"):
        lm = _model(model, tokenizer, training_text, config, say)
    with _timed(timings, "stream_s"):
        stream = demo_stream(lm.tokenizer, max_tokens=config.max_tokens,
                             tune_tokens=config.tune_tokens, protocol=config.protocol,
                             training_text=lm.training_text)
    _say_stream(stream, lm.reference, say)
    with _timed(timings, "compare_s"):
        result = _run_methods(lm, stream, config, out, print_fn)
    rows = segment_rows(result, stream)
    say("\nperplexity by segment (change vs frozen on the same chunks):")
    say(segment_table(rows))
    say(settings_line(result))
    with _timed(timings, "figures_s"):
        written = _figures(result, stream, out, config.dpi) if config.figures else []
    _write_outputs(result, stream, rows, timings, written, out, say)
    return result


@contextlib.contextmanager
def _timed(timings: dict, key: str):
    """Store the seconds the block took in ``timings[key]``."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _model(model, tokenizer, training_text, config: DemoConfig, say) -> _Model:
    """The given model, or the reference model (trained once and cached)."""
    if model is not None:
        return _Model(model, tokenizer, type(model).__name__, training_text, False)
    from ..corpora import stdlib_corpus
    from ..reference import ReferenceConfig, cache_dir, load_reference

    say("reference model: loading it, or training it once if it is not cached (about "
        "2.5 min on 2 cores)")
    corpus = stdlib_corpus()
    key = ReferenceConfig().key(hashlib.sha1(corpus.encode("utf-8")).hexdigest())
    cached = (cache_dir() / key).exists()
    model, tokenizer, info = load_reference(text=corpus, progress=config.progress)
    how = "loaded from the cache" if cached else f"trained in {info['seconds']:.0f} s"
    say(f"reference model: {info['parameters'] / 1e6:.1f}M parameters, {info['tokens']} "
        f"training tokens of the standard-library corpus, {how} ({info['path']})")
    return _Model(model, tokenizer, f"reference ({info.get('path', 'cache')})",
                  corpus if training_text is None else training_text, True)


def _say_stream(stream: DemoStream, reference: bool, say) -> None:
    """Where the reported stream and the tuning stream came from."""
    src = stream.sources
    doc, lic = src["docstrings"], src["licence"]
    corpus_note = ("the standard-library corpus has none of these submodules' own "
                   "docstrings, and " if reference else "")
    held = (f"held out: {corpus_note}{doc['dropped']} paragraphs found verbatim in the training "
            "text were dropped" if doc["held_out"]
            else "NOT checked against the model's training text: it may have seen them")
    say(f"stream: {doc['tokens']} tokens of standard-library docstrings "
        f"({', '.join(doc['modules'])}; {held}), then {lic['tokens']} tokens of licence text "
        f"({lic['source']}); the shift is at token {stream.boundary}")
    say(f"tuning stream (Fisher subspace, dyneval learning rate; never the stream above): "
        f"{src['tune_docstrings']['tokens']} tokens of docstrings "
        f"({', '.join(src['tune_docstrings']['modules'])}) + {src['tune_licence']['tokens']} "
        f"tokens of {src['tune_licence']['source']}")


def _run_methods(lm: _Model, stream: DemoStream, config: DemoConfig, out: Path,
                 print_fn) -> Comparison:
    """Every method on the stream (:func:`da_embed.compare.compare`), on one torch thread."""
    # One torch thread for the online loop: its products are small (one chunk), and on 2
    # cores a second OpenMP thread made the EKF 4x and 4D-Var 8x slower whenever anything
    # else ran (measured: EKF 5.5x frozen with 2 threads vs 1.4x with 1 at load ~2.5).
    import torch
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compare(lm.model, stream.ids, methods=config.methods, placement="hidden",
                       subspace=None, tune_ids=stream.tune_ids, protocol=config.protocol,
                       members=config.members, method_options=config.method_options,
                       tune_tokens=int(stream.tune_ids.size), seed=config.seed, out=out,
                       model_name=lm.name, progress=config.progress, print_fn=print_fn)
    finally:
        torch.set_num_threads(old_threads)


def _figures(result: Comparison, stream: DemoStream, out: Path, dpi: int) -> list[Path]:
    """The figures of :func:`da_embed.plot.save_figures` and ``shift.png``."""
    from ..plot import save_figures

    written = [Path(p) for p in save_figures(out, dpi=dpi)]
    written.append(shift_figure(result, stream, out / "shift.png", dpi=dpi))
    return written


def _write_outputs(result: Comparison, stream: DemoStream, rows, timings, written, out: Path,
                   say) -> None:
    """``demo.json`` and ``segments.csv``; ``result.settings["demo"]``; the closing line."""
    demo = {"stream": stream.sources, "boundary": stream.boundary,
            "stream_tokens": int(stream.ids.size), "tune_tokens": int(stream.tune_ids.size),
            "segments": rows, "timings": timings, "figures": [p.name for p in written]}
    result.settings["demo"] = demo
    with open(out / "demo.json", "w") as f:
        json.dump(demo, f, indent=2, default=str)
    with open(out / "segments.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    nc = sorted(p.name for p in out.glob("*.nc"))
    say(f"\nwrote to {out.resolve()}/: {len(nc)} netCDF files ({', '.join(nc)}), "
        f"summary.json, summary.csv, segments.csv, demo.json, {len(written)} PNG figures")


def main(argv=None) -> int:
    """Command-line entry point (``python -m da_embed.demo``); returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        ``--out DIR``, ``--max-tokens N``, ``--tune-tokens N``, ``--seed S``,
        ``--no-progress`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for bad input (one line on stderr, no traceback).

    Examples
    --------
    >>> main(["--max-tokens", "10", "--no-progress"])  # checked before any model is loaded
    2
    """
    p = argparse.ArgumentParser(prog="python -m da_embed.demo",
                                description=_DESCRIPTION)
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--max-tokens", type=int, default=3072,
                   help="length budget of the reported stream (half docstrings, half licence)")
    p.add_argument("--tune-tokens", type=int, default=1024, help="length of the tuning stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    t0 = time.perf_counter()
    try:
        res = run_demo(args.out, max_tokens=args.max_tokens, tune_tokens=args.tune_tokens,
                       seed=args.seed, progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"python -m da_embed.demo: error: {exc}", file=sys.stderr)
        return 2
    t = res.settings["demo"]["timings"]
    print(f"time: {time.perf_counter() - t0:.0f} s in all (reference model {t['model_s']:.0f} s, "
          f"stream {t['stream_s']:.0f} s, comparison {t['compare_s']:.0f} s, figures "
          f"{t['figures_s']:.0f} s)")
    return 0
