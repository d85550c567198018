"""The ``da-embed`` command line.

``da-embed compare`` runs several online methods on one token stream and
prints the comparison table (:func:`da_embed.compare.compare`).  Bad input
(missing files, an empty or too short corpus, a model path that does not
exist, a placement the model cannot carry, too few members, a chunk longer
than the context, ...) ends with one line naming the problem and exit status
2, never a traceback (``--debug`` shows it).  Ctrl-C stops the run with exit
status 130; every completed chunk is kept in the method's netCDF file.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser"]

_DEFAULT_METHODS = "frozen,dyneval,ekf,etkf"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return v


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``da-embed --help``, ``da-embed compare --help``)."""
    from .methods import METHODS, UNAVAILABLE

    parser = argparse.ArgumentParser(
        prog="da-embed",
        description="Language-model scale adaptation as data assimilation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    methods_help = "; ".join(f"{k}: {v}" for k, v in METHODS.items())
    p = sub.add_parser(
        "compare", help="compare online methods on one token stream (prequential)",
        description="Run several methods on the same token stream under the prequential "
                    "protocol (each chunk is scored with the state estimated from earlier "
                    "chunks only, then assimilated) and print: method, perplexity, change "
                    "against frozen with a 95% block-bootstrap interval, wall time as a ratio "
                    "to frozen, peak extra memory, adaptation parameters.  Writes "
                    "<method>.nc trajectories and summary.json/.csv/.nc to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--corpus", help="evaluation text file (UTF-8); default: WikiText-2 test.txt")
    g.add_argument("--tune-corpus", help="tuning text for --subspace fisher:k and the dyneval "
                   "learning rate; default: WikiText-2 valid.txt (skipped if absent)")
    g.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model (trained once, ~3 min)")
    g.add_argument("--placement", default="hidden",
                   help="where the state acts: hidden, embedding, svf[:targets], rotary[:mode]")
    g.add_argument("--subspace", default=None,
                   help="run every method in a k-dim subspace: random:k or fisher:k (top-k "
                        "principal directions of per-token NLL gradients on the tuning text)")
    g = p.add_argument_group("methods")
    g.add_argument("--methods", default=_DEFAULT_METHODS,
                   help=f"comma-separated; frozen is always run first; NAME@random:k or "
                        f"NAME@fisher:k runs a method in its own subspace (e.g. "
                        f"ekf,etkf@fisher:8,ukf@fisher:8). {methods_help}. Not offered: "
                        f"{', '.join(UNAVAILABLE)}")
    g.add_argument("--members", type=_positive_int, default=16,
                   help="ensemble size N (>= 2); candidates of verify")
    g.add_argument("--P0", type=_float, default=0.1, help="prior variance of each state entry")
    g.add_argument("--Q", type=_float, default=0.01,
                   help="random-walk process-noise variance per chunk (0: identity forecast)")
    g.add_argument("--R", type=_float, default=1.0, help="observation-noise variance per token")
    g.add_argument("--target", default="decrement", choices=("decrement", "zero"),
                   help="pseudo-observation: decrement (each token's NLL lowered by "
                        "--decrement: a natural-gradient step) or zero")
    g.add_argument("--decrement", type=_float, default=1.0, help="innovation per token (nats)")
    g.add_argument("--dyneval-lr", type=_float, default=None,
                   help="dyneval learning rate (default: tuned on the tuning text)")
    g.add_argument("--tune-tokens", type=_positive_int, default=4096,
                   help="tokens of the tuning text used for tuning and the Fisher subspace")
    g = p.add_argument_group("prequential protocol")
    g.add_argument("--chunk", type=_positive_int, default=32, help="tokens per chunk")
    g.add_argument("--context", type=_positive_int, default=224,
                   help="tokens of context before each chunk (>= chunk)")
    g.add_argument("--stride", type=_positive_int, default=None,
                   help="distance between chunk starts (>= chunk; default: chunk)")
    g.add_argument("--max-tokens", type=_positive_int, default=20000,
                   help="use the first MAX_TOKENS tokens of the corpus")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="da-embed-compare", help="output folder")
    g.add_argument("--threads", type=_positive_int, default=None, help="torch threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _read_corpus(path, what: str) -> str:
    from .corpora import read_text

    try:
        return read_text(path)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _encode(tokenizer, text: str, what: str):
    from .reference import encode_text

    ids = encode_text(tokenizer, text)
    if ids.size == 0:
        raise ValueError(f"{what} has no tokens after tokenisation")
    return ids


def _compare(args) -> int:
    import torch

    from .assimilator import PrequentialConfig
    from .compare import compare, make_placement
    from .corpora import wikitext_path
    from .methods import parse_methods

    # Cheap checks first: protocol, methods, members, files.
    protocol = PrequentialConfig(chunk=args.chunk, context=args.context, stride=args.stride,
                                 max_tokens=args.max_tokens)
    methods = parse_methods(args.methods)
    if args.members < 2:
        raise ValueError(f"--members must be >= 2 (an ensemble needs at least two members), "
                         f"got {args.members}")
    corpus = args.corpus
    if corpus is None:
        corpus = wikitext_path("test")
    text = _read_corpus(corpus, "--corpus")
    tune_path = args.tune_corpus
    if tune_path is None:
        try:
            tune_path = wikitext_path("valid")
        except FileNotFoundError:
            tune_path = None
    tune_text = None if tune_path is None else _read_corpus(tune_path, "--tune-corpus")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from .reference import load_reference

        model, tokenizer, info = load_reference(progress=not args.no_progress)
        name = f"reference ({info.get('path', 'cache')})"
    else:
        from .compare import load_model

        model, tokenizer = load_model(args.model)
        name = os.fspath(args.model)
    make_placement(model, args.placement)  # fails early for e.g. rotary on GPT-2
    ids = _encode(tokenizer, text, f"--corpus {os.fspath(corpus)!r}")
    tune_ids = None if tune_text is None else _encode(tokenizer, tune_text, "--tune-corpus")
    print(f"corpus {os.fspath(corpus)}: {ids.size} tokens"
          + ("" if tune_path is None else f"; tuning text {os.fspath(tune_path)}"), flush=True)
    try:
        compare(model, ids, methods=methods, placement=args.placement, subspace=args.subspace,
                tune_ids=tune_ids, protocol=protocol, members=args.members, P0=args.P0,
                Q=args.Q, R=args.R, target=args.target, decrement=args.decrement,
                dyneval_lr=args.dyneval_lr, tune_tokens=args.tune_tokens, seed=args.seed,
                out=args.out, model_name=name, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every completed chunk is kept in {os.fspath(args.out)}/"
              "<method>.nc", file=sys.stderr)
        return 130
    print(f"trajectories and summary written to {os.fspath(args.out)}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``da-embed`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 2 bad input, 130 interrupted.

    Examples
    --------
    >>> main(["compare", "--chunk", "64", "--context", "32"])  # the error goes to stderr
    2
    """
    from .assimilator import AssimilationDiverged

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _compare(args)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, AssimilationDiverged) as exc:
        if args.debug:
            raise
        print(f"da-embed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
