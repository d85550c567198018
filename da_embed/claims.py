"""The seeds' claims table, measured: ``da-embed claims``.

Seed ``000`` (adaptive embedding scaling) claims, for generation with its
verification update against the base model: "+12.7% coherence score",
"maintains 98% of base model's lexical diversity", "1.03x slower",
"110MB additional memory" and "~0.1M parameters".  :func:`reproduce_claims`
measures the same columns on a fixed prompt set for base generation, the
seeds' verification rule, the EnKF and the UKF (and optionally the ETKF), all
on one model in one run, and prints them beside the claims, whatever they
turn out to be.

Protocol (printed with the table):

* prompts: the first sentence of each of the first P paragraphs of
  WikiText-2 ``test.txt`` (:func:`wikitext_prompts`; detokenised);
* each method generates ``max_new_tokens`` tokens per prompt with the same
  seed per prompt (``seed + i``), so base and method share the output
  stream's random numbers and differ only through the state
  (:func:`da_embed.generate.generate`); methods run interleaved prompt by
  prompt so that load from other processes hits all of them alike;
* coherence (Su et al. 2022, or the labelled judge fallback), diversity and
  speed from :mod:`da_embed.textmetrics`; changes against base with 95 %
  percentile-bootstrap intervals over prompts (paired);
* extra memory: the largest peak RSS increase of one generation call;
* parameters: the numbers that adapt the model (the state; no learned
  dynamics here, so the seeds' transition network and adapter are absent).

A run of 50 prompts takes tens of minutes, so each finished generation is
appended to ``OUT/generations.jsonl`` at once (``out=``); Ctrl-C on
``da-embed claims`` keeps those and writes the table of the prompts every
method completed (exit status 130).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from .generate import generate, make_verifier
from .trajectory import strict_json
from .textmetrics import (PeakMemory, coherence, diversity, load_sentence_encoder,
                          sentence_encoder_available)

__all__ = ["SEED_CLAIMS", "CLAIM_METHODS", "wikitext_prompts", "detokenize_wikitext",
           "reproduce_claims", "ClaimsTable", "write_claims"]

#: The seed's numbers (``000_*.txt``, "Performance Metrics" and the comparison table).
SEED_CLAIMS = {"coherence_change_pct": 12.7, "diversity_kept_pct": 98.0, "slowdown": 1.03,
               "extra_memory_mb": 110.0, "parameters": 100_000}

#: Method name -> keyword arguments of :func:`~da_embed.generate.generate`.
CLAIM_METHODS = {
    "base": {"filter": "none"},
    "verification": {"filter": "verification"},
    "enkf": {"filter": "enkf"},
    "etkf": {"filter": "etkf"},
    "ukf": {"filter": "ukf"},
}

_DEFAULT_METHODS = ("base", "verification", "enkf", "ukf")


# -------------------------------------------------------------------- prompts
_DETOK = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" ; ", "; "),
          (" : ", ": "), (" 's ", "'s "), (" n't", "n't"), ("( ", "("), (" )", ")")]


def detokenize_wikitext(text: str) -> str:
    """Undo WikiText's tokenisation spaces (``@-@``, spaces before punctuation).

    Parameters
    ----------
    text : str
        A line of WikiText.

    Returns
    -------
    str

    Examples
    --------
    >>> detokenize_wikitext("a well @-@ known actor , born in 1 @,@ 000 .")
    'a well-known actor, born in 1,000.'
    """
    out = " " + text.strip() + " "
    for a, b in _DETOK:
        out = out.replace(a, b)
    out = re.sub(r" ([.!?])(?= |$)", r"\1", out)
    return out.strip()


def wikitext_prompts(path, n: int = 50) -> list[str]:
    """First sentences of the first ``n`` paragraphs of a WikiText file.

    A paragraph is a non-empty line that is not a heading (``" = ... = "``);
    its first sentence ends at the first ``" . "`` (WikiText's spaced full
    stop), or is the whole line.

    Parameters
    ----------
    path : str or PathLike
        E.g. :func:`da_embed.corpora.wikitext_path` ``("test")``.
    n : int, default 50

    Returns
    -------
    list of str
        Detokenised (:func:`detokenize_wikitext`).

    Raises
    ------
    ValueError
        If the file has fewer than ``n`` paragraphs.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.txt")
    >>> _ = open(path, "w").write(" = Title = \\n\\n A cat , sat . Then it left .\\n")
    >>> wikitext_prompts(path, 1)
    ['A cat, sat.']
    """
    from .corpora import read_text

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of prompts) must be an integer >= 1, got {n!r}")
    prompts = []
    for line in read_text(path).splitlines():
        s = line.strip()
        if not s or (s.startswith("=") and s.endswith("=")):
            continue
        head, sep, _ = s.partition(" . ")
        prompts.append(detokenize_wikitext(head + (" ." if sep else "")))
        if len(prompts) == n:
            return prompts
    raise ValueError(f"{os.fspath(path)!r} has {len(prompts)} paragraphs, fewer than the "
                     f"{n} prompts asked for")


# --------------------------------------------------------------------- table
@dataclass
class ClaimsTable:
    """The measured claims table.

    Parameters
    ----------
    rows : list of dict
        One per method: ``method``, ``coherence``, ``coherence_change_pct`` (+
        ``_low``/``_high``), ``diversity``, ``diversity_kept_pct`` (+ bounds),
        ``tokens_per_second``, ``slowdown``, ``extra_memory_mb``,
        ``parameters``, ``verifier_failures``.
    settings : dict
        The protocol; ``interrupted`` (e.g. "after 3 of 50 prompts") marks
        the table of an interrupted run.
    coherence_label : str
        What "coherence" measured.
    generations : list of dict
        Every finished generation (method, prompt index, prompt, text,
        seconds, verifier failures); after an interruption also those of
        the prompt that not every method finished.

    Examples
    --------
    >>> t = ClaimsTable([], {}, "coherence: ...")
    >>> t.summary()["seed_claims"]["slowdown"]
    1.03
    """

    rows: list[dict]
    settings: dict
    coherence_label: str
    generations: list[dict] = field(default_factory=list)

    def table(self) -> str:
        """The table as text, with the seed's claims in the last row."""
        head = (f"{'method':<14}{'coherence':>10}{'change %':>9}{'[95% CI]':>17}"
                f"{'diversity':>10}{'kept %':>8}{'[95% CI]':>17}{'tok/s':>8}{'slowdown':>9}"
                f"{'extra MB':>9}{'params':>8}")
        lines = [head, "-" * len(head)]

        def ci(lo, hi):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                return ""
            return f"[{lo:+.1f}, {hi:+.1f}]"

        for r in self.rows:
            lines.append(
                f"{r['method']:<14}{r['coherence']:>10.4f}{r['coherence_change_pct']:>+9.1f}"
                f"{ci(r['coherence_change_low'], r['coherence_change_high']):>17}"
                f"{r['diversity']:>10.4f}{r['diversity_kept_pct']:>8.1f}"
                f"{ci(r['diversity_kept_low'], r['diversity_kept_high']):>17}"
                f"{r['tokens_per_second']:>8.1f}{r['slowdown']:>8.2f}x"
                f"{r['extra_memory_mb']:>9.1f}{r['parameters']:>8d}")
        c = SEED_CLAIMS
        lines.append(f"{'seed claims':<14}{'':>10}{c['coherence_change_pct']:>+9.1f}{'':>17}"
                     f"{'':>10}{c['diversity_kept_pct']:>8.1f}{'':>17}{'':>8}"
                     f"{c['slowdown']:>8.2f}x{c['extra_memory_mb']:>9.1f}{'~0.1M':>8}")
        s = self.settings
        decoding = ("greedy decoding" if s.get("generate_options", {}).get("sample") is False
                    else f"sampling top_p={s['top_p']} temperature={s['temperature']}")
        lines += ["", f"{self.coherence_label}",
                  "diversity: prod_{n=2..4} (1 - rep-n) over whitespace tokens, pooled over "
                  "prompts (Su et al. 2022); kept % = 100 diversity / base diversity",
                  f"prompts: {s['prompts']} ({s['prompt_source']}); {s['max_new_tokens']} new "
                  f"tokens each; candidates K={s['candidates']} every L={s['every']} tokens; "
                  f"members {s['members']}; ukf subspace {s['ukf_subspace']}; verifier "
                  f"{s['verifier']}; {decoding}; seed {s['seed']}; model {s['model']}",
                  "slowdown: base tokens/s over the method's, same run, methods interleaved "
                  "per prompt; extra MB: largest peak-RSS increase of one generation; params: "
                  "numbers adapting the model (the state; no learned dynamics)"]
        if s.get("interrupted"):  # a partial table must not pass for a full run
            lines.append(f"interrupted {s['interrupted']}: the table covers the prompts "
                         "completed by every method")
        return "\n".join(lines)

    def summary(self) -> dict:
        """JSON-serialisable content (rows, settings, claims, coherence label)."""
        return {"rows": self.rows, "settings": self.settings, "seed_claims": SEED_CLAIMS,
                "coherence_label": self.coherence_label}


def _bootstrap(stat, n: int, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(idx)`` over resampled prompt indices."""
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def reproduce_claims(model, tokenizer, prompts, *, methods=_DEFAULT_METHODS, members: int = 8,
                     candidates: int = 1, every: int = 8, max_new_tokens: int = 64,
                     verifier="self", judge_model=None, ukf_subspace: str | None = "random:4",
                     top_p: float = 0.95, temperature: float = 1.0, seed: int = 0,
                     encoder="auto", model_name: str = "", prompt_source: str = "",
                     progress: bool = True, out=None, **generate_options) -> ClaimsTable:
    """Measure the seeds' claims table on ``prompts``.

    Methods run interleaved, prompt by prompt.  With ``out``, every finished
    generation (one prompt, one method) is appended to
    ``out/generations.jsonl`` at once, one JSON line with the fields of
    :attr:`ClaimsTable.generations`, so an interrupted run keeps all it
    finished; the file is emptied when the run starts and holds each
    generation exactly once.  A ``KeyboardInterrupt`` during generation is
    re-raised as a ``KeyboardInterrupt`` that carries the prompts completed so
    far (``da-embed claims`` writes their table).

    Parameters
    ----------
    model, tokenizer
        The generator (e.g. :func:`da_embed.reference.load_reference`).
    prompts : sequence of str
    methods : sequence of str, default ("base", "verification", "enkf", "ukf")
        Names of :data:`CLAIM_METHODS`; "base" is always run (first).
    members, candidates, every, max_new_tokens, verifier, judge_model, top_p, temperature
        As in :func:`~da_embed.generate.generate`.
    ukf_subspace : str, optional, default "random:4"
        The UKF's subspace (2k + 1 sigma points).
    seed : int, default 0
        Prompt i uses ``seed + i`` for every method.
    encoder : "auto", None or encoder
        Coherence encoder (:func:`~da_embed.textmetrics.coherence`); without
        one, the fallback judge is the generator's own frozen base model.
    model_name, prompt_source : str
        Labels for the table.
    progress : bool, default True
        Show a tqdm bar over the generations (prompts x methods).
    out : str or PathLike, optional
        Folder (created if needed) whose ``generations.jsonl`` receives each
        generation as soon as it is finished; None writes nothing (use
        :func:`write_claims` afterwards).
    **generate_options
        Further keyword arguments of ``generate`` (e.g. ``P0``, ``Q``).

    Returns
    -------
    ClaimsTable

    Examples
    --------
    >>> import os, tempfile
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> model = tiny_gpt2(vocab_size=len(tok))
    >>> out = tempfile.mkdtemp()
    >>> t = reproduce_claims(model, tok, ["the cat", "a mat"], methods=["base", "enkf"],
    ...                      members=2, every=4, max_new_tokens=8, encoder=None,
    ...                      progress=False, out=out)
    >>> [r["method"] for r in t.rows], t.rows[0]["coherence_change_pct"]
    (['base', 'enkf'], 0.0)
    >>> len(open(os.path.join(out, "generations.jsonl")).readlines())  # 2 prompts x 2 methods
    4
    """
    from tqdm.auto import tqdm

    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts must not be empty")
    names = ["base"] + [m for m in dict.fromkeys(methods) if m != "base"]
    unknown = [m for m in names if m not in CLAIM_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(CLAIM_METHODS)}")
    # Resolve the verifier once (a judge given by path is loaded once, not per call).
    verifier = make_verifier(verifier, model, judge_model=judge_model)
    common = dict(candidates=candidates, every=every, max_new_tokens=max_new_tokens,
                  verifier=verifier, members=members, top_p=top_p,
                  temperature=temperature, progress=False, **generate_options)
    settings = {"prompts": len(prompts), "prompt_source": prompt_source or "given",
                "methods": names, "members": members, "candidates": candidates,
                "every": every, "max_new_tokens": max_new_tokens,
                "verifier": getattr(verifier, "name", type(verifier).__name__),
                "ukf_subspace": ukf_subspace, "top_p": top_p, "temperature": temperature,
                "seed": seed, "model": model_name or type(model).__name__,
                "generate_options": {k: v for k, v in generate_options.items()}}
    runs: list[_Run] = []
    log = None
    if out is not None:
        os.makedirs(out, exist_ok=True)
        log = open(os.path.join(out, "generations.jsonl"), "w", encoding="utf-8")
    bar = tqdm(total=len(prompts) * len(names), desc="claims", disable=not progress,
               unit="generation")
    try:
        for i, prompt in enumerate(prompts):
            for m in names:
                kw = dict(CLAIM_METHODS[m])
                if m == "ukf" and ukf_subspace:
                    kw["subspace"] = ukf_subspace
                with PeakMemory() as mem:
                    res = generate(model, tokenizer, prompt, seed=seed + i, **kw, **common)
                record = {"method": m, "prompt_index": i, "prompt": prompt, "text": res.text,
                          "seconds": res.seconds, "verifier_failures": res.verifier_failures}
                if log is not None:  # on disk before the next generation starts
                    log.write(json.dumps(record, ensure_ascii=False) + "\n")
                    log.flush()
                runs.append(_Run(record, int(res.token_ids.size),
                                 mem.extra_bytes / 2**20 if math.isfinite(mem.extra_bytes)
                                 else float("nan"),
                                 0 if m == "base" else int(res.states.shape[1])))
                bar.update(1)
    except KeyboardInterrupt as exc:
        done = len(runs) // len(names)  # prompts every method finished (interleaved order)

        def partial() -> ClaimsTable | None:
            if done == 0:
                return None
            return _claims_table(runs, prompts[:done], names, model=model, tokenizer=tokenizer,
                                 encoder=encoder, seed=seed,
                                 settings=dict(settings, prompts=done,
                                               interrupted=f"after {done} of {len(prompts)} "
                                                           "prompts"))

        raise _ClaimsInterrupted(done, len(prompts), len(runs), partial) from exc
    finally:
        bar.close()
        if log is not None:
            log.close()
    return _claims_table(runs, prompts, names, model=model, tokenizer=tokenizer,
                         encoder=encoder, seed=seed, settings=settings)


@dataclass(frozen=True)
class _Run:
    """One finished generation: its public record and what the table adds up."""

    record: dict        # the line of generations.jsonl
    tokens: int
    extra_mb: float     # peak-RSS increase, nan if unmeasured
    parameters: int     # state size (k in a subspace); 0 for base


class _ClaimsInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`reproduce_claims`, carrying what was finished.

    ``completed`` prompts were finished by every method (of ``total``);
    ``generations`` generations were finished in all; ``table()`` computes
    the claims table of the completed prompts (None if there are none).
    """

    def __init__(self, completed: int, total: int, generations: int, table):
        super().__init__(f"interrupted after {completed} of {total} prompts "
                         f"({generations} generations)")
        self.completed, self.total, self.generations = completed, total, generations
        self.table = table


def _claims_table(runs, prompts, names, *, model, tokenizer, encoder, seed,
                  settings) -> ClaimsTable:
    """The table of ``prompts`` (the first prompts of the run) from the finished ``runs``.

    Every run is kept in ``generations``; only those of ``prompts`` enter the rows.
    """
    P = len(prompts)
    texts = {m: [] for m in names}
    seconds = {m: 0.0 for m in names}
    tokens = {m: 0 for m in names}
    memory = {m: 0.0 for m in names}
    params = {m: 0 for m in names}
    failures = {m: 0 for m in names}
    for run in runs:  # in run order, so sums are those of a single pass
        m = run.record["method"]
        if run.record["prompt_index"] >= P:
            continue
        texts[m].append(run.record["text"])
        seconds[m] += run.record["seconds"]
        tokens[m] += run.tokens
        if math.isfinite(run.extra_mb):
            memory[m] = max(memory[m], run.extra_mb)
        failures[m] += run.record["verifier_failures"]
        if m != "base":
            params[m] = run.parameters  # the state adapts the model (k in a subspace)
    generations = [run.record for run in runs]

    if isinstance(encoder, str) and encoder == "auto":
        encoder = load_sentence_encoder() if sentence_encoder_available() else None
    judge = None if encoder is not None else (model, tokenizer)
    coh = {m: coherence(prompts, texts[m], encoder=encoder, judge=judge) for m in names}
    base = coh["base"]
    base_tps = tokens["base"] / seconds["base"]
    rows = []
    for j, m in enumerate(names):
        c = coh[m]

        def coh_change(idx, c=c):
            a, b = c.values[idx], base.values[idx]
            ok = np.isfinite(a) & np.isfinite(b)
            if not ok.any():
                return float("nan")
            if c.kind == "cosine":
                return 100.0 * (a[ok].mean() / b[ok].mean() - 1.0)
            return 100.0 * math.expm1(a[ok].mean() - b[ok].mean())

        def div_kept(idx, m=m):
            d_base = diversity([texts["base"][k] for k in idx])
            return 100.0 * diversity([texts[m][k] for k in idx]) / d_base

        all_idx = np.arange(P)
        lo_c, hi_c = _bootstrap(coh_change, P, seed=seed + 1 + j)
        lo_d, hi_d = _bootstrap(div_kept, P, seed=seed + 101 + j)
        tps = tokens[m] / seconds[m]
        rows.append({"method": m, "coherence": c.mean,
                     "coherence_change_pct": coh_change(all_idx),
                     "coherence_change_low": lo_c, "coherence_change_high": hi_c,
                     "diversity": diversity(texts[m]), "diversity_kept_pct": div_kept(all_idx),
                     "diversity_kept_low": lo_d, "diversity_kept_high": hi_d,
                     "tokens_per_second": tps, "slowdown": base_tps / tps,
                     "extra_memory_mb": memory[m], "parameters": int(params[m]),
                     "verifier_failures": int(failures[m])})
    return ClaimsTable(rows, settings, base.label, generations)


def write_claims(table: ClaimsTable, out, *, generations: bool = True) -> None:
    """Write ``claims.json``, ``claims.csv``, ``claims.txt`` and ``generations.jsonl`` to ``out``.

    Parameters
    ----------
    table : ClaimsTable
        The measured table.
    out : str or PathLike
        Output folder (created if needed).
    generations : bool, default True
        Also write ``generations.jsonl`` (from ``table.generations``); False
        leaves the file :func:`reproduce_claims` wrote as it went (``out=``).

    Examples
    --------
    >>> import os, tempfile
    >>> row = {k: 0.0 for k in ("coherence", "coherence_change_pct", "coherence_change_low",
    ...        "coherence_change_high", "diversity", "diversity_kept_pct", "diversity_kept_low",
    ...        "diversity_kept_high", "tokens_per_second", "slowdown", "extra_memory_mb")}
    >>> row.update(method="base", parameters=0, verifier_failures=0)
    >>> settings = dict(prompts=1, prompt_source="given", max_new_tokens=8, candidates=1,
    ...                 every=8, members=8, ukf_subspace=None, verifier="self", top_p=1.0,
    ...                 temperature=1.0, seed=0, model="tiny")
    >>> out = tempfile.mkdtemp()
    >>> write_claims(ClaimsTable([row], settings, "coherence: test"), out)
    >>> sorted(os.listdir(out))
    ['claims.csv', 'claims.json', 'claims.txt', 'generations.jsonl']
    """
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "claims.json"), "w") as f:
        json.dump(strict_json(table.summary()), f, indent=2, default=float)
    with open(os.path.join(out, "claims.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table.rows[0]))
        w.writeheader()
        w.writerows(table.rows)
    with open(os.path.join(out, "claims.txt"), "w") as f:
        f.write(table.table() + "\n")
    if not generations:
        return
    with open(os.path.join(out, "generations.jsonl"), "w", encoding="utf-8") as f:
        for g in table.generations:
            f.write(json.dumps(g, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------ CLI
def add_parser(sub) -> None:
    """Add the ``claims`` subcommand to the ``da-embed`` subparsers."""
    import argparse

    p = sub.add_parser(
        "claims", help="measure the seeds' claims table (coherence, diversity, speed, memory)",
        description="Generate from the first sentences of WikiText-2 test paragraphs with "
                    "base generation, the seeds' verification rule, the EnKF and the UKF, and "
                    "print coherence change, diversity kept, slowdown, extra memory and "
                    "parameters beside the seed's claims (+12.7%% coherence, 98%% diversity, "
                    "1.03x slower, 110 MB, ~0.1M parameters).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=50, help="number of prompts")
    p.add_argument("--corpus", default=None,
                   help="WikiText-style file of paragraphs; default: WikiText-2 test.txt")
    p.add_argument("--model", default=None, help="local causal LM folder; default: the "
                   "cached reference model")
    p.add_argument("--methods", default=",".join(_DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(CLAIM_METHODS)}")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--every", type=int, default=8, help="L tokens per cycle")
    p.add_argument("--candidates", type=int, default=1, help="K candidates per member")
    p.add_argument("--members", type=int, default=8, help="ensemble size / perturbations")
    p.add_argument("--ukf-subspace", default="random:4", help="subspace of the UKF")
    p.add_argument("--verifier", default="self", help="self, judge, or PATH[:FUNCTION]")
    p.add_argument("--judge-model", default=None, help="judge causal LM folder")
    p.add_argument("--greedy", action="store_true",
                   help="greedy decoding (needs --candidates 1) instead of sampling")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="da-embed-claims", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run_cli(args) -> int:
    """Run ``da-embed claims``.

    Generations go to ``args.out/generations.jsonl`` as they finish.  On
    Ctrl-C, one line on stderr says how many prompts every method completed
    and where they are kept; the table of those prompts (if any) is printed
    and written to ``claims.json/.csv/.txt``, and the status is 130.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the ``claims`` subcommand (:func:`add_parser`).

    Returns
    -------
    int
        Exit status: 0 done, 130 interrupted.
    """
    from .corpora import wikitext_path
    from .generate import load_generator, load_verifier

    if isinstance(args.prompts, bool) or args.prompts < 1:
        raise ValueError(f"--prompts must be >= 1, got {args.prompts}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CLAIM_METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(CLAIM_METHODS)}")
    corpus = args.corpus if args.corpus is not None else wikitext_path("test")
    prompts = wikitext_prompts(corpus, args.prompts)
    verifier = args.verifier
    if verifier not in ("self", "judge"):
        verifier = load_verifier(verifier)
    elif verifier == "judge" and args.judge_model is None:
        raise ValueError("--verifier judge needs --judge-model PATH")
    model, tokenizer, name = load_generator(args.model, progress=not args.no_progress)
    out = os.fspath(args.out)
    try:
        table = reproduce_claims(
            model, tokenizer, prompts, methods=methods, members=args.members,
            candidates=args.candidates, every=args.every, max_new_tokens=args.max_new_tokens,
            verifier=verifier, judge_model=args.judge_model, ukf_subspace=args.ukf_subspace,
            top_p=args.top_p, temperature=args.temperature, seed=args.seed, model_name=name,
            **({"sample": False} if args.greedy else {}),
            prompt_source=f"first sentences of the first {len(prompts)} paragraphs of "
                          f"{os.fspath(corpus)}",
            progress=not args.no_progress, out=out)
    except _ClaimsInterrupted as stop:
        partial = stop.table()
        if partial is not None:
            print(partial.table())
            write_claims(partial, out, generations=False)  # the file already holds them all
        print(f"\ninterrupted: {stop.completed} of {stop.total} prompts completed by every "
              f"method; all {stop.generations} finished generations are kept in "
              f"{out}/generations.jsonl; "
              + (f"the claims table of those {stop.completed} prompts is in {out}/claims.txt "
                 "(.json, .csv)" if partial is not None else "no claims table written"),
              file=sys.stderr)
        return 130
    print(table.table())
    write_claims(table, out, generations=False)  # generations.jsonl was written as they went
    print(f"\nwritten to {os.fspath(args.out)}/claims.json, claims.csv, claims.txt, "
          "generations.jsonl")
    return 0
