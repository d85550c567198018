"""``da-embed compare``: several online methods on one token stream, the comparison table.

:func:`run` turns the parsed arguments into a :class:`CompareArgs` at once;
the stages below check the cheap things first (protocol, methods, members,
files), then load the model, build the token stream and call
:func:`da_embed.compare.compare`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from .compare_inputs import (encode, expert_inputs, named_paths, needs_tuning, read_corpus,
                             train_cli_experts)
from .compare_options import CompareArgs, add_parser

__all__ = ["add_parser", "run"]


@dataclass
class _Texts:
    """The texts of ``--corpus`` and ``--tune-corpus`` (read before any model is loaded)."""

    corpora: list          # (name, path) of every --corpus; empty: WikiText-2 test
    corpus: object         # the first corpus's path
    texts: dict            # name -> text of every --corpus
    text: str              # the first corpus's text
    tune_path: object      # None: no tuning text
    tune_text: str | None


def run(args: argparse.Namespace) -> int:
    """Run ``da-embed compare`` from the parsed arguments of :func:`add_parser`.

    Parameters
    ----------
    args : argparse.Namespace
        Converted to :class:`CompareArgs` at once.

    Returns
    -------
    int
        Exit status: 0 done, 130 interrupted.

    Examples
    --------
    >>> from da_embed.cli import build_parser
    >>> run(build_parser().parse_args(["compare", "--members", "1"]))
    Traceback (most recent call last):
    ...
    ValueError: --members must be >= 2 (an ensemble needs at least two members), got 1
    """
    return _run_compare(CompareArgs.from_namespace(args))


def _run_compare(opts: CompareArgs) -> int:
    """:func:`run` with typed options, stage by stage."""
    import torch

    from ..compare import make_placement

    protocol, methods, method_options = _check_options(opts)  # cheap checks first
    texts = _read_texts(opts)
    experts, expert_texts, placement = expert_inputs(opts, methods)
    _tuning_text(opts, texts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model, tokenizer, name = _load_model(opts)
    try:
        make_placement(model, placement)  # fails early for e.g. rotary on GPT-2
    except ValueError as exc:
        raise ValueError(f"--placement {placement!r}: {exc}") from None
    ids, segments = _token_stream(opts, tokenizer, texts, protocol)
    if expert_texts:
        experts = train_cli_experts(opts, model, tokenizer, placement, expert_texts, protocol,
                                    eval_ids=ids[:protocol.max_tokens])
    tune_text = texts.tune_text
    if tune_text is not None and not needs_tuning(methods, opts):
        tune_text = None  # unused: no Fisher subspace, no dyneval learning rate to tune
    tune_ids = None if tune_text is None else encode(
        tokenizer, tune_text, f"--tune-corpus {os.fspath(texts.tune_path)!r}", protocol.chunk)
    print(f"corpus {os.fspath(texts.corpus)}: {ids.size} tokens"
          + ("" if tune_ids is None else f"; tuning text {os.fspath(texts.tune_path)}"),
          flush=True)
    run_options = dict(methods=methods, placement=placement, tune_ids=tune_ids,
                       protocol=protocol, model_name=name, experts=experts,
                       segments=segments, method_options=method_options)
    return _run_comparison(opts, model, ids, run_options)


def _check_options(opts: CompareArgs):
    """The protocol, the method labels and their options, or a ValueError naming the flag."""
    from ..methods import parse_methods
    from ..protocol import PrequentialConfig

    protocol = PrequentialConfig(chunk=opts.chunk, context=opts.context, stride=opts.stride,
                                 max_tokens=opts.max_tokens)
    try:
        methods = parse_methods(opts.methods)
    except ValueError as exc:
        raise ValueError(f"--methods: {exc}") from None
    if opts.members < 2:
        raise ValueError(f"--members must be >= 2 (an ensemble needs at least two members), "
                         f"got {opts.members}")
    t2_options = {"context_tokens": opts.t2_context}
    if opts.t2_context is not None and opts.t2_context < 2:
        raise ValueError(f"--t2-context must be >= 2 tokens, got {opts.t2_context}")
    if opts.t2_population < 2:
        raise ValueError(f"--t2-population must be >= 2, got {opts.t2_population}")
    method_options = {"t2": dict(t2_options),
                      "t2-cem": dict(t2_options, population=opts.t2_population,
                                     elite=min(8, opts.t2_population))}
    return protocol, methods, method_options


def _read_texts(opts: CompareArgs) -> _Texts:
    """Read every ``--corpus`` (default WikiText-2 test) and the tuning text."""
    from ..corpora import wikitext_path

    corpora = named_paths(opts.corpus, "--corpus")
    corpus = corpora[0][1] if corpora else wikitext_path("test")
    texts = {n: read_corpus(pth, "--corpus") for n, pth in corpora} if corpora else {}
    text = texts[corpora[0][0]] if corpora else read_corpus(corpus, "--corpus")
    return _Texts(corpora, corpus, texts, text, None, None)


def _tuning_text(opts: CompareArgs, texts: _Texts) -> None:
    """``--tune-corpus``, else WikiText-2 valid if it is there, else none."""
    from ..corpora import wikitext_path

    tune_path = opts.tune_corpus
    if tune_path is None:
        try:
            tune_path = wikitext_path("valid")
        except FileNotFoundError:
            tune_path = None
    texts.tune_path = tune_path
    texts.tune_text = None if tune_path is None else read_corpus(tune_path, "--tune-corpus")


def _load_model(opts: CompareArgs):
    """(model, tokenizer, name): ``--model``, or the cached reference model."""
    if opts.model is None:
        from ..reference import load_reference

        model, tokenizer, info = load_reference(progress=opts.progress)
        return model, tokenizer, f"reference ({info.get('path', 'cache')})"
    from ..compare import load_model

    model, tokenizer = load_model(opts.model)
    return model, tokenizer, os.fspath(opts.model)


def _token_stream(opts: CompareArgs, tokenizer, texts: _Texts, protocol):
    """(ids, segments): the first corpus, or several alternating in segments."""
    ids = encode(tokenizer, texts.text, f"--corpus {os.fspath(texts.corpus)!r}", protocol.chunk)
    if len(texts.corpora) <= 1:
        return ids, None
    from ..corpora import alternate_segments  # a multi-domain stream

    first = texts.corpora[0][0]
    streams = {n: ids if n == first else encode(
        tokenizer, texts.texts[n], f"--corpus {os.fspath(pth)!r}", protocol.chunk)
        for n, pth in texts.corpora}
    ids, segments = alternate_segments(streams, opts.segment_tokens)
    print("multi-domain stream: " + ", ".join(f"{n} ({s.size} tokens)" for n, s in
                                              streams.items())
          + f" in alternating segments of {opts.segment_tokens} tokens", flush=True)
    return ids, segments


def _run_comparison(opts: CompareArgs, model, ids, run_options: dict) -> int:
    """Call :func:`da_embed.compare.compare`; Ctrl-C keeps every completed chunk (130)."""
    from ..compare import compare  # looked up now: tests replace it

    try:
        compare(model, ids, subspace=opts.subspace, members=opts.members, P0=opts.P0,
                Q=opts.Q, R=opts.R, target=opts.target, decrement=opts.decrement,
                dyneval_lr=opts.dyneval_lr, tune_tokens=opts.tune_tokens, seed=opts.seed,
                out=opts.out, progress=opts.progress, dynamics=opts.dynamics,
                allow_overlap=opts.allow_overlap, **run_options)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every completed chunk is kept in {os.fspath(opts.out)}/"
              "<method>.nc", file=sys.stderr)
        return 130
    print(f"trajectories and summary written to {os.fspath(opts.out)}")
    return 0
