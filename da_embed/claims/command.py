"""``da-embed claims``: its options (:func:`add_parser`) and the run (:func:`run_cli`).

:func:`run_cli` turns the parsed arguments into a :class:`ClaimsOptions` at
once, then checks them, loads the model and the verifier, and
measures the table with :func:`~da_embed.claims.reproduce_claims`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from ..generate.command import add_cycle_arguments
from .prompts import numpy_doc_prompts, wikitext_prompts
from .reproduce import CLAIM_METHODS, DEFAULT_METHODS, ClaimsInterrupted, reproduce_claims
from .table import write_claims

__all__ = ["ClaimsOptions", "add_parser", "run_cli"]


def add_parser(sub) -> None:
    """Add the ``claims`` subcommand to the ``da-embed`` subparsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        Where ``claims`` is added (``da-embed``'s subcommands).

    Examples
    --------
    >>> sub = argparse.ArgumentParser(prog="da-embed").add_subparsers(dest="command")
    >>> add_parser(sub)
    >>> sub.choices["claims"].parse_args(["--prompts", "3"]).prompts
    3
    """
    p = sub.add_parser(
        "claims", help="measure the seeds' claims table (coherence, diversity, speed, memory)",
        description="Generate from the first sentences of WikiText-2 test paragraphs with "
                    "base generation, the seeds' verification rule, the EnKF and the UKF, and "
                    "print coherence change, diversity kept, slowdown, extra memory and "
                    "parameters beside the seed's claims (+12.7%% coherence, 98%% diversity, "
                    "1.03x slower, 110 MB, ~0.1M parameters).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=50, help="number of prompts")
    p.add_argument("--prompt-source", default="wikitext", choices=("wikitext", "numpy"),
                   help="wikitext: first sentences of --corpus paragraphs; numpy: first "
                        "sentences of numpy's docstrings (a second domain the reference "
                        "model was not trained on)")
    p.add_argument("--corpus", default=None,
                   help="WikiText-style file of paragraphs; default: WikiText-2 test.txt")
    p.add_argument("--model", default=None, help="local causal LM folder; default: the "
                   "cached reference model")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(CLAIM_METHODS)}")
    p.add_argument("--max-new-tokens", type=int, default=64)
    add_cycle_arguments(p)
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


@dataclass(frozen=True)
class ClaimsOptions:
    """The options of ``da-embed claims``, one field per flag (``--no-progress``: ``progress``).

    Parameters
    ----------
    prompts, corpus, model, methods, max_new_tokens, every, candidates, members
        As the flags of the same name (``methods`` comma-separated).
    prompt_source, candidate_length, commit
        As ``--prompt-source``, ``--candidate-length`` and ``--commit``.
    ukf_subspace, verifier, judge_model, greedy, top_p, temperature, seed, out
        As the flags of the same name.
    progress : bool
        Show progress bars.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> ClaimsOptions.from_namespace(parser.parse_args(["claims"])).methods
    'base,verification,enkf,ukf'
    """

    prompts: int
    corpus: str | None
    model: str | None
    methods: str
    max_new_tokens: int
    every: int
    candidates: int
    members: int
    ukf_subspace: str | None
    verifier: str
    judge_model: str | None
    greedy: bool
    top_p: float
    temperature: float
    seed: int
    out: str
    progress: bool
    prompt_source: str = "wikitext"
    candidate_length: int | None = None
    commit: str = "mean"

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "ClaimsOptions":
        """The options from the parsed arguments of :func:`add_parser`."""
        names = [f for f in cls.__dataclass_fields__ if f != "progress"]
        return cls(**{f: getattr(args, f) for f in names}, progress=not args.no_progress)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``da-embed claims``.

    Generations go to ``args.out/generations.jsonl`` as they finish.  On
    Ctrl-C, one line on stderr says how many prompts every method completed
    and where they are kept; the table of those prompts (if any) is printed
    and written to ``claims.json/.csv/.txt``, and the status is 130.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the ``claims`` subcommand (:func:`add_parser`),
        converted to :class:`ClaimsOptions` at once.

    Returns
    -------
    int
        0 when the table is written; 130 after Ctrl-C.

    Examples
    --------
    >>> sub = argparse.ArgumentParser(prog="da-embed").add_subparsers(dest="command")
    >>> add_parser(sub)
    >>> run_cli(sub.choices["claims"].parse_args(["--methods", "base,x"]))
    Traceback (most recent call last):
    ...
    ValueError: --methods: unknown ['x']; choose from base, verification, enkf, etkf, ukf, oracle
    """
    return _run_claims(ClaimsOptions.from_namespace(args))


def _run_claims(opts: ClaimsOptions) -> int:
    """:func:`run_cli` with typed options: check them, load, measure, write."""
    from ..corpora import wikitext_path
    from ..generate import load_generator, load_verifier

    if isinstance(opts.prompts, bool) or opts.prompts < 1:
        raise ValueError(f"--prompts must be >= 1, got {opts.prompts}")
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CLAIM_METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(CLAIM_METHODS)}")
    if opts.prompt_source == "numpy":
        prompts = numpy_doc_prompts(opts.prompts)
        source = f"first sentences of the first {len(prompts)} public numpy docstrings"
    else:
        corpus = opts.corpus if opts.corpus is not None else wikitext_path("test")
        prompts = wikitext_prompts(corpus, opts.prompts)
        source = (f"first sentences of the first {len(prompts)} paragraphs of "
                  f"{os.fspath(corpus)}")
    verifier = opts.verifier
    if verifier not in ("self", "judge"):
        verifier = load_verifier(verifier)
    elif verifier == "judge" and opts.judge_model is None:
        raise ValueError("--verifier judge needs --judge-model PATH")
    model, tokenizer, name = load_generator(opts.model, progress=opts.progress)
    out = os.fspath(opts.out)
    try:
        table = reproduce_claims(
            model, tokenizer, prompts, methods=methods, members=opts.members,
            candidates=opts.candidates, every=opts.every, candidate_length=opts.candidate_length,
            commit=opts.commit, max_new_tokens=opts.max_new_tokens,
            verifier=verifier, judge_model=opts.judge_model, ukf_subspace=opts.ukf_subspace,
            top_p=opts.top_p, temperature=opts.temperature, seed=opts.seed, model_name=name,
            **({"sample": False} if opts.greedy else {}),
            prompt_source=source,
            progress=opts.progress, out=out)
    except ClaimsInterrupted as stop:
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
    print(f"\nwritten to {os.fspath(opts.out)}/claims.json, claims.csv, claims.txt, "
          "generations.jsonl")
    return 0
