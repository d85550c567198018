"""The main job (``make demo``): online adaptation of the reference model to a domain shift.

``python -m da_embed.demo --out runs/demo`` does, offline and in about five
minutes on 2 CPU cores the first time (the reference model is trained once
and cached; later runs take about a minute and a half):

1. loads the reference model (:func:`da_embed.reference.load_reference`,
   trained on the standard library's own documentation the first time);
2. builds a *domain-shift stream* (:func:`demo_stream`) from text that every
   Python installation carries: first **held-out standard-library
   docstrings** (the docstrings of submodules' own classes and functions,
   such as :mod:`email.message`; the training corpus reads only top-level
   modules and skips re-exported names, and any paragraph of them found
   verbatim in the training text is dropped as well), then **licence text**,
   prose of another kind (CPython's ``LICENSE.txt``; where a distribution
   does not ship it, the licence files of the package's own dependencies).
   A separate *tuning stream* built the same way from other modules and
   another licence (Apache-2.0, shipped with ``transformers``) supplies the
   Fisher subspace and the dynamic-evaluation learning rate: nothing is
   tuned on the reported stream;
3. compares, under the prequential protocol (chunks of 32 tokens, 224
   tokens of context), the frozen model, dynamic evaluation, the EKF and
   strong-constraint 4D-Var on the full :class:`~da_embed.placements.HiddenScale`
   state (n = d_model) with the EnKF and the UKF in an 8-dimensional Fisher
   subspace of it (the UKF needs ``2k + 1`` sigma points, so a small state)
   via :func:`da_embed.compare.compare`;
4. prints the comparison table and the perplexity of each method on each
   segment of the stream (before and after the shift), and writes every
   trajectory (netCDF), the summaries and the figures (PNG) to one folder.

Usage::

    python -m da_embed.demo --out runs/demo [--max-tokens 3072] [--no-progress]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .protocol import PrequentialConfig
from .compare import Comparison, compare
from .metrics import perplexity

__all__ = ["DEMO_METHODS", "DEMO_METHOD_OPTIONS", "EVAL_MODULES", "TUNE_MODULES", "DemoStream",
           "heldout_docstrings", "licence_text", "demo_stream", "segment_rows",
           "segment_table", "run_demo", "main"]

#: The compared methods: gradient methods on the full state, the EnKF and the
#: UKF in the same 8-dimensional Fisher subspace (17 sigma points).
DEMO_METHODS = ("frozen", "dyneval", "ekf", "4dvar", "enkf@fisher:8", "ukf@fisher:8")
#: 4D-Var gets three Gauss-Newton outer loops per window (operational 4D-Var
#: uses two or three; the default 20 costs ten times the frozen model here).
DEMO_METHOD_OPTIONS = {"4dvar": {"maxiter": 3}}
#: Submodules whose own docstrings make the reported stream's first segment.
EVAL_MODULES = ("email.message", "logging.handlers", "http.client", "xml.etree.ElementTree")
#: Other submodules: the tuning stream's first segment (disjoint from the above).
TUNE_MODULES = ("unittest.case", "http.cookiejar", "urllib.request", "asyncio.events")
#: Distributions whose licence files stand in when CPython's LICENSE.txt is
#: missing (reported stream) and that give the tuning stream its licence.
_EVAL_LICENCE_DISTS = ("numpy", "scipy")
_TUNE_LICENCE_DISTS = ("transformers", "xarray", "torch")


# ------------------------------------------------------------------ texts
def heldout_docstrings(modules=EVAL_MODULES, training_text: str | None = None):
    """Docstrings of submodules' own classes and functions, minus anything seen in training.

    The reference corpus (:func:`da_embed.corpora.stdlib_corpus`) reads the
    docstrings of the standard library's *top-level* modules and skips
    names defined elsewhere, so what a submodule such as ``email.message``
    defines is not in it.  The docstrings are read in a clean, isolated
    interpreter (the same extraction as the corpus), so the text depends
    only on the Python version.

    Parameters
    ----------
    modules : sequence of str
        Dotted module names, in order; a module that cannot be imported is
        skipped (and listed in ``info["missing"]``).
    training_text : str, optional
        The model's training text: paragraphs (blocks separated by a blank
        line) that occur in it verbatim are dropped.

    Returns
    -------
    text : str
    info : dict
        ``modules`` (used), ``missing``, ``paragraphs`` (kept) and
        ``dropped`` (found verbatim in ``training_text``).

    Examples
    --------
    >>> text, info = heldout_docstrings(["json.decoder"])
    >>> "JSONDecoder" in text, info["modules"], info["dropped"]
    (True, ['json.decoder'], 0)
    """
    modules = [str(m) for m in modules]
    texts = _module_texts(modules)
    used = [name for name, text in zip(modules, texts) if text.strip()]
    missing = [name for name, text in zip(modules, texts) if not text.strip()]
    text, kept, dropped = _drop_seen("\n\n".join(t for t in texts if t.strip()), training_text)
    info = {"modules": used, "missing": missing, "paragraphs": kept, "dropped": dropped}
    return text, info


_TEXTS: dict[str, str] = {}  # module -> its docstrings (fixed for a Python version)


def _module_texts(modules) -> list[str]:
    """Docstrings of each module, read in one clean interpreter for all not yet cached."""
    todo = [m for m in dict.fromkeys(modules) if m not in _TEXTS]
    if todo:
        folder = os.path.dirname(os.path.abspath(__file__))
        script = (f"import sys, json; sys.path.insert(0, {folder!r}); import _stdlib_docs as d; "
                  f"sys.stdout.buffer.write(json.dumps([d._module_text(m) for m in {todo!r}])"
                  ".encode('utf-8'))")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run([sys.executable, "-I", "-X", "utf8", "-c", script],
                              capture_output=True, timeout=600, env=env)
        if proc.returncode != 0:
            raise RuntimeError("extracting docstrings failed: "
                               + proc.stderr.decode("utf-8", "replace")[-2000:])
        _TEXTS.update(zip(todo, json.loads(proc.stdout.decode("utf-8"))))
    return [_TEXTS[m] for m in modules]


def _drop_seen(text: str, training_text: str | None) -> tuple[str, int, int]:
    """``text`` minus paragraphs found verbatim in ``training_text``: (text, kept, dropped)."""
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    kept = [p for p in paras if training_text is None or p not in training_text]
    return "\n\n".join(kept) + ("\n" if kept else ""), len(kept), len(paras) - len(kept)


def _cpython_licence_paths() -> list[Path]:
    """Where CPython's LICENSE.txt lives on the usual installations (Debian: its copyright)."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stdlib = Path(sysconfig.get_path("stdlib"))
    return [stdlib / "LICENSE.txt", Path(os.__file__).parent / "LICENSE.txt",
            Path(sys.base_prefix) / "LICENSE.txt",
            Path(sys.base_prefix) / "share" / "doc" / f"python{ver}" / "copyright",
            Path("/usr/share/doc") / f"python{ver}" / "copyright"]


def _dist_licence(dist: str) -> tuple[str, str] | None:
    """The top-most licence file of an installed distribution, as (text, path)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in (d.files or [])
             if Path(str(f)).name.upper().startswith(("LICEN", "COPYING"))]
    for f in sorted(files, key=lambda f: (len(Path(str(f)).parts), str(f))):
        path = Path(d.locate_file(f))
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if len(text.strip()) >= 500:
            return text, str(path)
    return None


def licence_text(which: str = "eval") -> tuple[str, str]:
    """Licence prose that every installation of the package carries, and where it came from.

    Parameters
    ----------
    which : {"eval", "tune"}
        ``"eval"``: CPython's own ``LICENSE.txt`` (the history of Python and
        the PSF, BeOpen, CNRI and CWI licences), else the licence files of
        numpy or scipy.  ``"tune"``: the licence of ``transformers``
        (Apache-2.0), else of xarray or torch.  The two never share a source.

    Returns
    -------
    text : str
    source : str
        The file read (or ``"<dist> package description"`` as the last resort).

    Raises
    ------
    ValueError
        If ``which`` is neither ``"eval"`` nor ``"tune"``.

    Examples
    --------
    >>> text, source = licence_text("tune")
    >>> len(text) > 500 and "licen" in text.lower()
    True
    """
    if which not in ("eval", "tune"):
        raise ValueError(f"which must be 'eval' or 'tune', got {which!r}")
    if which == "eval":
        for path in _cpython_licence_paths():
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                if len(text.strip()) >= 500:
                    return text, str(path)
    dists = _EVAL_LICENCE_DISTS if which == "eval" else _TUNE_LICENCE_DISTS
    for dist in dists:
        found = _dist_licence(dist)
        if found is not None:
            return found
    for dist in dists:  # last resort: prose of the package's long description
        try:
            desc = importlib.metadata.metadata(dist).get_payload() or ""
        except importlib.metadata.PackageNotFoundError:
            continue
        if len(desc.strip()) >= 500:
            return desc, f"{dist} package description"
    raise FileNotFoundError(f"no licence text found for the {which} stream (looked for "
                            f"CPython's LICENSE.txt and the licences of {', '.join(dists)})")


# ----------------------------------------------------------------- stream
@dataclass(frozen=True)
class DemoStream:
    """The reported stream and the tuning stream of the demo, with their provenance.

    Parameters
    ----------
    ids : ndarray (T,)
        Reported stream: held-out docstrings, then licence text.
    boundary : int
        Index in ``ids`` of the first licence token; it is the first target
        of a chunk, so every chunk lies in one segment.
    tune_ids : ndarray (T_tune,)
        Tuning stream, built the same way from other sources.
    sources : dict
        Where every segment came from and its token count.

    Examples
    --------
    >>> s = DemoStream(np.zeros(33, dtype=np.int64), 17, np.zeros(18, dtype=np.int64), {})
    >>> s.segment_of([1, 9, 17, 25]).tolist()
    ['docstrings', 'docstrings', 'licence', 'licence']
    """

    ids: np.ndarray = field(repr=False)
    boundary: int
    tune_ids: np.ndarray = field(repr=False)
    sources: dict

    def segment_of(self, chunk_start) -> np.ndarray:
        """Segment name of chunks by their first target index ("docstrings" or "licence")."""
        s = np.asarray(chunk_start)
        return np.where(s >= self.boundary, "licence", "docstrings")


def _two_segments(first, second, n_first: int, n_second: int, what: str):
    if first.size < n_first or second.size < n_second:
        raise ValueError(f"the {what} needs {n_first} + {n_second} tokens but the texts have "
                         f"{first.size} + {second.size}; lower max_tokens / tune_tokens")
    return np.concatenate([first[:n_first], second[:n_second]]).astype(np.int64)


def _check_budget(max_tokens, tune_tokens, protocol: PrequentialConfig) -> tuple[int, int]:
    """Chunks of the reported stream and of its docstring part; errors name the parameter."""
    for name, v in (("max_tokens", max_tokens), ("tune_tokens", tune_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    stride, L = protocol.stride, protocol.chunk
    k = (int(max_tokens) - 1 - L) // stride + 1 if max_tokens > L else 0
    if k < 2:
        raise ValueError(f"max_tokens must give at least 2 chunks (one per segment): "
                         f">= {1 + L + stride} tokens with {protocol}, got {max_tokens}")
    if tune_tokens < 2 * (L + 1):
        raise ValueError(f"tune_tokens must be >= 2 * (chunk + 1) = {2 * (L + 1)}, "
                         f"got {tune_tokens}")
    return k, k // 2


def demo_stream(tokenizer, *, max_tokens: int = 3072, tune_tokens: int = 1024,
                protocol: PrequentialConfig | None = None,
                training_text: str | None = None) -> DemoStream:
    """The demo's domain-shift stream and its tuning stream, both half docstrings, half licence.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The model's tokenizer.
    max_tokens : int, default 3072
        Length budget of the reported stream; it is cut to ``1 + k * stride``
        tokens (k chunks), the first ``k // 2`` chunks docstrings.
    tune_tokens : int, default 1024
        Length of the tuning stream (half each).
    protocol : PrequentialConfig, optional
        Default ``PrequentialConfig()`` (chunk 32, context 224).
    training_text : str, optional
        The model's training text (see :func:`heldout_docstrings`).

    Returns
    -------
    DemoStream

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> tok = train_tokenizer("Return the value of the header. " * 40, vocab_size=300)
    >>> s = demo_stream(tok, max_tokens=100, tune_tokens=40,
    ...                 protocol=PrequentialConfig(chunk=8, context=16))
    >>> s.ids.size, s.boundary, s.tune_ids.size  # 12 chunks of 8 (+ the unscored first token)
    (97, 49, 40)
    """
    from .reference import encode_text

    protocol = PrequentialConfig() if protocol is None else protocol
    k, k_doc = _check_budget(max_tokens, tune_tokens, protocol)
    stride, L = protocol.stride, protocol.chunk
    boundary = 1 + k_doc * stride
    n_licence = (k - k_doc - 1) * stride + L  # the last chunk needs only L targets
    _module_texts(EVAL_MODULES + TUNE_MODULES)  # one interpreter for both streams
    doc, doc_info = heldout_docstrings(EVAL_MODULES, training_text)
    lic, lic_src = licence_text("eval")
    lic, _, lic_dropped = _drop_seen(lic, training_text)
    tdoc, tdoc_info = heldout_docstrings(TUNE_MODULES, training_text)
    tlic, tlic_src = licence_text("tune")
    doc_ids, lic_ids = encode_text(tokenizer, doc), encode_text(tokenizer, lic)
    tdoc_ids, tlic_ids = encode_text(tokenizer, tdoc), encode_text(tokenizer, tlic)
    ids = _two_segments(doc_ids, lic_ids, boundary, n_licence, "reported stream")
    half = int(tune_tokens) // 2
    tune = _two_segments(tdoc_ids, tlic_ids, half, int(tune_tokens) - half, "tuning stream")
    sources = {
        "docstrings": {**doc_info, "tokens": boundary,
                       "held_out": training_text is not None},
        "licence": {"source": lic_src, "tokens": n_licence, "dropped": lic_dropped},
        "tune_docstrings": {**tdoc_info, "tokens": half},
        "tune_licence": {"source": tlic_src, "tokens": int(tune_tokens) - half},
    }
    return DemoStream(ids, boundary, tune, sources)


# --------------------------------------------------------------- segments
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


def _settings_line(result: Comparison) -> str:
    """One line with what the rows ran with (none of it tuned on the reported stream)."""
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


def _shift_figure(comparison: Comparison, stream: DemoStream, path: Path, dpi: int = 150):
    """NLL minus frozen's per chunk with the shift marked (``shift.png``)."""
    from matplotlib.figure import Figure

    from .plot import plot_chunk_nll

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


# --------------------------------------------------------------------- run
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
    say = print_fn if print_fn is not None else (lambda s: None)
    if (model is None) != (tokenizer is None):
        raise ValueError("give both model and tokenizer, or neither (the reference model)")
    protocol = PrequentialConfig() if protocol is None else protocol
    _check_budget(max_tokens, tune_tokens, protocol)  # before a model is trained or loaded
    options = DEMO_METHOD_OPTIONS if method_options is None else method_options
    out = Path(out)
    timings = {}
    t0 = time.perf_counter()
    reference = model is None
    if reference:
        from .corpora import stdlib_corpus
        from .reference import ReferenceConfig, cache_dir, load_reference

        say("reference model: loading it, or training it once if it is not cached (about "
            "2.5 min on 2 cores)")
        corpus = stdlib_corpus()
        key = ReferenceConfig().key(hashlib.sha1(corpus.encode("utf-8")).hexdigest())
        cached = (cache_dir() / key).exists()
        model, tokenizer, info = load_reference(text=corpus, progress=progress)
        training_text = corpus if training_text is None else training_text
        model_name = f"reference ({info.get('path', 'cache')})"
        how = "loaded from the cache" if cached else f"trained in {info['seconds']:.0f} s"
        say(f"reference model: {info['parameters'] / 1e6:.1f}M parameters, {info['tokens']} "
            f"training tokens of the standard-library corpus, {how} ({info['path']})")
    else:
        model_name = type(model).__name__
    timings["model_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stream = demo_stream(tokenizer, max_tokens=max_tokens, tune_tokens=tune_tokens,
                         protocol=protocol, training_text=training_text)
    timings["stream_s"] = time.perf_counter() - t1
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

    t2 = time.perf_counter()
    # One torch thread for the online loop: its products are small (one chunk), and on 2
    # cores a second OpenMP thread made the EKF 4x and 4D-Var 8x slower whenever anything
    # else ran (measured: EKF 5.5x frozen with 2 threads vs 1.4x with 1 at load ~2.5).
    import torch
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = compare(model, stream.ids, methods=methods, placement="hidden", subspace=None,
                         tune_ids=stream.tune_ids, protocol=protocol, members=members,
                         method_options=options, tune_tokens=int(stream.tune_ids.size),
                         seed=seed, out=out, model_name=model_name, progress=progress,
                         print_fn=print_fn)
    finally:
        torch.set_num_threads(old_threads)
    timings["compare_s"] = time.perf_counter() - t2
    rows = segment_rows(result, stream)
    say("\nperplexity by segment (change vs frozen on the same chunks):")
    say(segment_table(rows))
    say(_settings_line(result))

    t3 = time.perf_counter()
    written = []
    if figures:
        from .plot import save_figures

        written = [Path(p) for p in save_figures(out, dpi=dpi)]
        written.append(_shift_figure(result, stream, out / "shift.png", dpi=dpi))
    timings["figures_s"] = time.perf_counter() - t3
    demo = {"stream": src, "boundary": stream.boundary, "stream_tokens": int(stream.ids.size),
            "tune_tokens": int(stream.tune_ids.size), "segments": rows, "timings": timings,
            "figures": [p.name for p in written]}
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
    return result


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
                                description=__doc__.split("\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
