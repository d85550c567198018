"""The rows of the claims table from the finished generations: changes against base.

Coherence change and diversity kept come with 95 % percentile-bootstrap
intervals over prompts (paired: the same resampled prompts for a method and
base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..textmetrics import coherence, diversity, load_sentence_encoder, sentence_encoder_available
from .table import ClaimsTable

__all__ = ["ClaimRun", "bootstrap_interval", "paired_difference", "claims_table"]


@dataclass(frozen=True)
class ClaimRun:
    """One finished generation: its public record and what the table adds up.

    Parameters
    ----------
    record : dict
        The line of ``generations.jsonl`` (method, prompt_index, prompt,
        text, seconds, verifier_failures).
    tokens : int
        Tokens generated.
    extra_mb : float
        Peak heap increase of the generation call (nan if unmeasured).
    parameters : int
        State size (k in a subspace); 0 for base.

    Examples
    --------
    >>> ClaimRun({"method": "base"}, 8, float("nan"), 0).tokens
    8
    """

    record: dict
    tokens: int
    extra_mb: float
    parameters: int


def bootstrap_interval(stat, n: int, *, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(idx)`` over resampled prompt indices.

    Parameters
    ----------
    stat : callable
        ``stat(idx)`` of an integer index array of length ``n``.
    n : int
        Number of prompts; below 2 the interval is (nan, nan).
    n_boot : int, default 2000
        Resamples.
    seed : int, default 0

    Returns
    -------
    (float, float)
        The 2.5 % and 97.5 % quantiles of the finite values (nan if none).

    Examples
    --------
    >>> lo, hi = bootstrap_interval(lambda idx: float(idx.mean()), 10)
    >>> 2.0 < lo < 4.5 < hi < 7.0
    True
    """
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


@dataclass
class _Totals:
    """Per-method sums over the runs of the table's prompts."""

    texts: dict
    seconds: dict
    tokens: dict
    memory: dict
    params: dict
    failures: dict


def _totals(runs, n_prompts: int, names) -> _Totals:
    """Add up the runs of the first ``n_prompts`` prompts, method by method."""
    t = _Totals({m: [] for m in names}, {m: 0.0 for m in names}, {m: 0 for m in names},
                {m: 0.0 for m in names}, {m: 0 for m in names}, {m: 0 for m in names})
    for run in runs:  # in run order, so sums are those of a single pass
        m = run.record["method"]
        if run.record["prompt_index"] >= n_prompts:
            continue
        t.texts[m].append(run.record["text"])
        t.seconds[m] += run.record["seconds"]
        t.tokens[m] += run.tokens
        if math.isfinite(run.extra_mb):
            t.memory[m] = max(t.memory[m], run.extra_mb)
        t.failures[m] += run.record["verifier_failures"]
        if m != "base":
            t.params[m] = run.parameters  # the state adapts the model (k in a subspace)
    return t


def claims_table(runs, prompts, names, *, model, tokenizer, encoder, seed,
                 settings) -> ClaimsTable:
    """The table of ``prompts`` (the first prompts of the run) from the finished ``runs``.

    Every run is kept in ``generations``; only those of ``prompts`` enter the rows.

    Parameters
    ----------
    runs : sequence of ClaimRun
        In run order (methods interleaved prompt by prompt).
    prompts : sequence of str
        The prompts the rows cover (every method finished them).
    names : sequence of str
        The methods, "base" first.
    model, tokenizer
        The generator; the fallback coherence judge when there is no encoder.
    encoder : "auto", None or encoder
        Coherence encoder (:func:`~da_embed.textmetrics.coherence`).
    seed : int
        Seeds of the bootstrap intervals.
    settings : dict
        The protocol (:attr:`ClaimsTable.settings`).

    Returns
    -------
    ClaimsTable

    Examples
    --------
    >>> callable(claims_table)  # see reproduce_claims
    True
    """
    P = len(prompts)
    t = _totals(runs, P, names)
    if isinstance(encoder, str) and encoder == "auto":
        encoder = load_sentence_encoder() if sentence_encoder_available() else None
    judge = None if encoder is not None else (model, tokenizer)
    coh = {m: coherence(prompts, t.texts[m], encoder=encoder, judge=judge) for m in names}
    base_tps = t.tokens["base"] / t.seconds["base"]
    rows = [_method_row(m, j, coh, t, P, base_tps, seed) for j, m in enumerate(names)]
    for j, row in enumerate(rows):
        for ref in ("base", "verification"):
            if ref in coh and row["method"] != ref:
                d, lo, hi = paired_difference(coh[row["method"]].values, coh[ref].values,
                                              seed=seed + 201 + 10 * j + (ref == "base"))
                row.update({f"coherence_diff_vs_{ref}": d, f"coherence_diff_vs_{ref}_low": lo,
                            f"coherence_diff_vs_{ref}_high": hi})
    return ClaimsTable(rows, settings, coh["base"].label, [run.record for run in runs])


def paired_difference(a, b, *, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean over prompts of ``a - b`` and its 95 % paired percentile-bootstrap interval.

    Parameters
    ----------
    a, b : array_like (P,)
        Per-prompt values of two methods on the same prompts (NaN: left out).
    seed : int, default 0
    n_boot : int, default 2000

    Returns
    -------
    (float, float, float)
        The mean difference and the 2.5 % and 97.5 % quantiles.

    Examples
    --------
    >>> d, lo, hi = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.5])
    >>> d, lo <= d <= hi
    (0.875, True)
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_interval(lambda idx: float(diff[idx].mean()), diff.size, n_boot=n_boot,
                                seed=seed)
    return float(diff.mean()), lo, hi


def _method_row(m: str, j: int, coh: dict, t: _Totals, P: int, base_tps: float,
                seed: int) -> dict:
    """The row of method ``m`` (the ``j``-th): changes against base with their intervals."""
    c, base = coh[m], coh["base"]

    def coh_change(idx):
        a, b = c.values[idx], base.values[idx]
        ok = np.isfinite(a) & np.isfinite(b)
        if not ok.any():
            return float("nan")
        if c.kind == "cosine":
            return 100.0 * (a[ok].mean() / b[ok].mean() - 1.0)
        return 100.0 * math.expm1(a[ok].mean() - b[ok].mean())

    def div_kept(idx):
        d_base = diversity([t.texts["base"][k] for k in idx])
        return 100.0 * diversity([t.texts[m][k] for k in idx]) / d_base

    all_idx = np.arange(P)
    lo_c, hi_c = bootstrap_interval(coh_change, P, seed=seed + 1 + j)
    lo_d, hi_d = bootstrap_interval(div_kept, P, seed=seed + 101 + j)
    tps = t.tokens[m] / t.seconds[m]
    return {"method": m, "coherence": c.mean,
            "coherence_change_pct": coh_change(all_idx),
            "coherence_change_low": lo_c, "coherence_change_high": hi_c,
            "diversity": diversity(t.texts[m]), "diversity_kept_pct": div_kept(all_idx),
            "diversity_kept_low": lo_d, "diversity_kept_high": hi_d,
            "tokens_per_second": tps, "slowdown": base_tps / tps,
            "extra_memory_mb": t.memory[m], "parameters": int(t.params[m]),
            "verifier_failures": int(t.failures[m])}
