"""The ``da-embed generate`` subcommand: its parser and its run.

The parsed arguments become a :class:`~da_embed.generate.config.GenerationConfig`
at the entry (:func:`run_cli`); nothing further reads the namespace.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np

from ..checks import check_int
from .config import CANDIDATE_LENGTH, COMMITS, EVERY, FILTERS, GenerationConfig
from .generation import generate
from .verifiers import load_verifier

__all__ = ["add_parser", "add_cycle_arguments", "load_generator", "run_cli"]


def add_cycle_arguments(p) -> None:
    """Add ``--every``, ``--candidate-length`` and ``--commit`` (shared by generate and claims).

    Parameters
    ----------
    p : argparse.ArgumentParser

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_cycle_arguments(p)
    >>> a = p.parse_args(["--every", "32", "--commit", "best"])
    >>> a.every, a.candidate_length, a.commit
    (32, None, 'best')
    """
    p.add_argument("--every", type=int, default=EVERY,
                   help="I, tokens per cycle: the assimilation interval")
    p.add_argument("--candidate-length", type=int, default=None,
                   help=f"L, tokens per candidate (<= --every); default min({CANDIDATE_LENGTH}, "
                        f"--every).  The first L tokens of a cycle are decoded with the "
                        f"candidates and committed, the other I - L by the analysis mean")
    p.add_argument("--commit", default="mean", choices=tuple(COMMITS),
                   help="which candidate becomes the cycle's first L tokens: "
                        + "; ".join(f"{k}: {v}" for k, v in COMMITS.items()))


def add_parser(sub) -> None:
    """Add the ``generate`` subcommand to the ``da-embed`` subparsers.

    Parameters
    ----------
    sub : argparse subparsers action
        From ``ArgumentParser.add_subparsers``.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="da-embed")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["generate", "--prompt", "the cat", "--greedy"])
    >>> args.filter, args.every, args.candidate_length, args.commit, args.greedy
    ('etkf', 64, None, 'mean', True)
    """
    p = sub.add_parser(
        "generate", help="generate text steered by scored candidates (pseudo-observations)",
        description="Every --every tokens each ensemble member / sigma point proposes "
                    "--candidates continuations of --candidate-length tokens, decoded as one "
                    "batch from the text's KV cache together with a row of the filter's mean; "
                    "a verifier scores them, the scores are assimilated as pseudo-observations "
                    "into the scale state, the --commit candidate becomes the next tokens and "
                    "the updated mean state generates the rest of the cycle.  Prints the "
                    "text; logs states, candidates and scores to --out (netCDF).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model")
    p.add_argument("--filter", default="etkf", choices=tuple(FILTERS),
                   help="; ".join(f"{k}: {v}" for k, v in FILTERS.items()))
    p.add_argument("--placement", default="hidden",
                   help="hidden, embedding, svf[:targets], rotary[:mode]")
    p.add_argument("--subspace", default=None, help="random:k (a random k-dim subspace)")
    p.add_argument("--candidates", type=int, default=1, help="K candidates per member")
    add_cycle_arguments(p)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--members", type=int, default=8,
                   help="ensemble size (enkf, etkf) or perturbations (verification)")
    p.add_argument("--verifier", default="self",
                   help="self, judge (with --judge-model), or PATH[:FUNCTION] of a Python "
                        "file defining score(text) -> float")
    p.add_argument("--judge-model", default=None, help="judge causal LM folder")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--P0", type=float, default=0.01, help="prior variance of the state")
    p.add_argument("--Q", type=float, default=0.001, help="process noise per cycle")
    p.add_argument("--R", default="auto", help="score noise variance, or auto")
    p.add_argument("--target", default="best", help="best, or c (score sds above predicted)")
    p.add_argument("--inflation", type=float, default=None,
                   help="multiplicative inflation (enkf, etkf, ukf)")
    p.add_argument("--eta", type=float, default=None, help="verification rule step")
    p.add_argument("--sigma", type=float, default=None, help="verification rule perturbation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="da-embed-generate.nc", help="netCDF log")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _number_or(text: str, word: str, name: str):
    if text == word:
        return word
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be {word!r} or a number, got {text!r}") from None


def load_generator(model_path, progress: bool = True):
    """(model, tokenizer, name): a local model folder, or the cached reference model.

    Parameters
    ----------
    model_path : str or PathLike or None
        A folder written by ``save_pretrained`` (model and tokenizer); None:
        the cached reference model (trained on first use).
    progress : bool, default True
        Progress bars while the reference model is trained.

    Returns
    -------
    tuple
        (model, tokenizer, name), the name for messages.

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> folder = tempfile.mkdtemp()
    >>> tiny_gpt2().save_pretrained(folder)
    >>> _ = train_tokenizer("a cat sat on a mat " * 20, vocab_size=300).save_pretrained(folder)
    >>> load_generator(folder)[2] == folder
    True
    """
    if model_path is None:
        from ..reference import load_reference

        model, tokenizer, info = load_reference(progress=progress)
        return model, tokenizer, f"reference ({info.get('path', 'cache')})"
    from ..lm.models import load_model

    model, tokenizer = load_model(model_path)
    return model, tokenizer, os.fspath(model_path)


@dataclass(frozen=True)
class _Command:
    """One ``da-embed generate``: the prompt, the model folder and the settings."""

    prompt: str
    model_path: str | None
    config: GenerationConfig


def _command(args) -> _Command:
    """The command of parsed ``args``, after the checks that need no model."""
    # Cheap checks before the model is loaded (generate() checks everything again).
    if not args.prompt.strip():
        raise ValueError("prompt must not be empty")
    check_int(args.candidates, "candidates (K)", 1)
    check_int(args.every, "every (I, tokens per cycle)", 1)
    check_int(args.max_new_tokens, "max_new_tokens", 1)
    R = _number_or(args.R, "auto", "--R")
    target = _number_or(args.target, "best", "--target")
    verifier = args.verifier
    if verifier not in ("self", "judge"):
        verifier = load_verifier(verifier)
    if args.verifier == "judge" and args.judge_model is None:
        raise ValueError("--verifier judge needs --judge-model PATH")
    return _Command(args.prompt, args.model, GenerationConfig(
        filter=args.filter, placement=args.placement, subspace=args.subspace,
        candidates=args.candidates, every=args.every, candidate_length=args.candidate_length,
        commit=args.commit, max_new_tokens=args.max_new_tokens,
        verifier=verifier, judge_model=args.judge_model, members=args.members,
        sample=not args.greedy, temperature=args.temperature, top_p=args.top_p, P0=args.P0,
        Q=args.Q, R=R, target=target, inflation=args.inflation, eta=args.eta,
        sigma=args.sigma, seed=args.seed, out=args.out, progress=not args.no_progress))


def run_cli(args) -> int:
    """Run ``da-embed generate`` (parsed ``args``); returns the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`.

    Returns
    -------
    int
        0; errors raise (``da-embed`` reports them in one line).

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="da-embed")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> run_cli(parser.parse_args(["generate", "--prompt", " "]))
    Traceback (most recent call last):
    ...
    ValueError: prompt must not be empty
    """
    cmd = _command(args)
    model, tokenizer, name = load_generator(cmd.model_path, progress=cmd.config.progress)
    res = generate(model, tokenizer, cmd.prompt, **cmd.config.kwargs())
    print(f"{res.prompt}{res.text}")
    print(f"[{name}; filter {res.filter}; {res.token_ids.size} tokens in {res.seconds:.2f} s "
          f"({res.tokens_per_second:.1f} tokens/s); verifier failures {res.verifier_failures}; "
          f"skipped analyses {res.skipped_analyses}; final |state| "
          f"{float(np.linalg.norm(res.states[-1])):.4f}; log {res.path}]")
    return 0
