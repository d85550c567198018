"""The options of ``da-embed compare``: its argument parser and their typed form.

:func:`add_parser` defines every flag (``da-embed compare --help``);
:class:`CompareArgs` is what :mod:`da_embed.cli.compare` works with, so the
argparse namespace stops at the command line's edge.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from .argtypes import number, positive_int

__all__ = ["DEFAULT_METHODS", "CompareArgs", "add_parser"]

#: The methods ``da-embed compare`` runs without ``--methods``.
DEFAULT_METHODS = "frozen,dyneval,ekf,etkf"


@dataclass(frozen=True)
class CompareArgs:
    """The options of ``da-embed compare``, one field per flag (``--no-progress``: ``progress``).

    Parameters
    ----------
    corpus, expert_corpus : tuple of str
        The repeated ``[NAME=]PATH`` values (empty when not given).
    segment_tokens, tune_corpus, model, placement, subspace, methods, members, P0, Q, R
        As the flags of the same name.
    target, decrement, dyneval_lr, tune_tokens, dynamics, experts, expert_steps, expert_lr
        As the flags of the same name.
    t2_context, t2_population, chunk, context, stride, max_tokens, seed, out, threads
        As the flags of the same name.
    allow_overlap : bool
        ``--allow-overlap``: run although the tuning or an expert text overlaps
        the evaluation text.
    progress : bool
        Show progress bars (not ``--no-progress``).

    Examples
    --------
    >>> from da_embed.cli import build_parser
    >>> opts = CompareArgs.from_namespace(build_parser().parse_args(["compare", "--chunk", "16"]))
    >>> opts.chunk, opts.corpus, opts.progress
    (16, (), True)
    """

    corpus: tuple[str, ...]
    segment_tokens: int
    tune_corpus: str | None
    model: str | None
    placement: str | None
    subspace: str | None
    methods: str
    members: int
    P0: float
    Q: float
    R: float
    target: str
    decrement: float
    dyneval_lr: float | None
    tune_tokens: int
    dynamics: str | None
    experts: str | None
    expert_corpus: tuple[str, ...]
    expert_steps: int
    expert_lr: float
    t2_context: int | None
    t2_population: int
    chunk: int
    context: int
    stride: int | None
    max_tokens: int
    seed: int
    out: str
    threads: int | None
    allow_overlap: bool
    progress: bool

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "CompareArgs":
        """The options from the parsed arguments of :func:`add_parser`."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if f.name != "progress"}
        values["corpus"] = tuple(args.corpus or ())
        values["expert_corpus"] = tuple(args.expert_corpus or ())
        return cls(**values, progress=not args.no_progress)


def add_parser(sub) -> None:
    """Add the ``compare`` subcommand to the ``da-embed`` subparsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        ``compare`` joins these subcommands (:func:`da_embed.cli.build_parser`).

    Examples
    --------
    >>> from da_embed.cli import build_parser
    >>> build_parser().parse_args(["compare"]).methods
    'frozen,dyneval,ekf,etkf'
    """
    p = sub.add_parser(
        "compare", help="compare online methods on one token stream (prequential)",
        description="Run several methods on the same token stream under the prequential "
                    "protocol (each chunk is scored with the state estimated from earlier "
                    "chunks only, then assimilated) and print: method, perplexity, change "
                    "against frozen with a 95% block-bootstrap interval, wall time as a ratio "
                    "to frozen, peak extra memory, adaptation parameters.  Writes "
                    "<method>.nc trajectories and summary.json/.csv/.nc to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _data_options(p.add_argument_group("data and model"))
    methods = p.add_argument_group("methods")
    _method_options(methods)
    _expert_options(methods)
    _protocol_options(p.add_argument_group("prequential protocol"))
    _run_options(p.add_argument_group("run"))


def _data_options(g) -> None:
    g.add_argument("--corpus", action="append", metavar="[NAME=]PATH",
                   help="evaluation text file (UTF-8); default: WikiText-2 test.txt.  Repeat "
                        "it for a multi-domain stream: the corpora alternate in segments of "
                        "--segment-tokens tokens (boundaries stored in the outputs)")
    g.add_argument("--segment-tokens", type=positive_int, default=2048,
                   help="tokens per segment of a multi-domain stream (several --corpus)")
    g.add_argument("--tune-corpus", help="tuning text for --subspace fisher:k and the dyneval "
                   "learning rate; default: WikiText-2 valid.txt (skipped if absent)")
    g.add_argument("--allow-overlap", action="store_true",
                   help="run although --tune-corpus or an --expert-corpus shares more than 1%% "
                        "of the evaluation text's 16-token windows (refused otherwise: choices "
                        "fitted to the scored text leak it); the table says so")
    g.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model (trained once, ~3 min)")
    g.add_argument("--placement", default=None,
                   help="where the state acts: hidden, embedding, svf[:targets], rotary[:mode]; "
                        "unset: hidden, or with t2 methods the experts' placement (svf when "
                        "--expert-corpus trains them)")
    g.add_argument("--subspace", default=None,
                   help="run every method in a k-dim subspace: random:k or fisher:k (top-k "
                        "principal directions of per-token NLL gradients on the tuning text)")


def _method_options(g) -> None:
    from ..methods import METHODS, UNAVAILABLE

    methods_help = "; ".join(f"{k}: {v}" for k, v in METHODS.items())
    g.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated; frozen is always run first; NAME@random:k or "
                        f"NAME@fisher:k runs a method in its own subspace (e.g. "
                        f"ekf,etkf@fisher:8,ukf@fisher:8). {methods_help}. Not offered: "
                        f"{', '.join(UNAVAILABLE)}")
    g.add_argument("--members", type=positive_int, default=16,
                   help="ensemble size N (>= 2); candidates of verify")
    g.add_argument("--P0", type=number, default=0.1, help="prior variance of each state entry")
    g.add_argument("--Q", type=number, default=0.01,
                   help="random-walk process-noise variance per chunk (0: identity forecast)")
    g.add_argument("--R", type=number, default=1.0, help="observation-noise variance per token")
    g.add_argument("--target", default="decrement", choices=("decrement", "zero"),
                   help="pseudo-observation: decrement (each token's NLL lowered by "
                        "--decrement: a natural-gradient step) or zero")
    g.add_argument("--decrement", type=number, default=1.0, help="innovation per token (nats)")
    g.add_argument("--dyneval-lr", type=number, default=None,
                   help="dyneval learning rate (default: tuned on the tuning text)")
    g.add_argument("--tune-tokens", type=positive_int, default=4096,
                   help="tokens of the tuning text used for tuning and the Fisher subspace")
    g.add_argument("--dynamics", metavar="CKPT", default=None,
                   help="a da-embed spinup checkpoint (or its folder): every method also runs "
                        "with the learned dynamics and Q as its forecast step (rows "
                        "NAME+learned beside the random-walk rows)")


def _expert_options(g) -> None:
    g.add_argument("--experts", metavar="PATH",
                   help="expert states of t2/t2-cem (Transformer^2), saved by train_experts "
                        "(PATH.json + PATH.npz)")
    g.add_argument("--expert-corpus", action="append", metavar="NAME=PATH",
                   help="train one t2 expert per domain on this text (repeat it); the experts "
                        "are saved to OUT/experts.json/.npz")
    g.add_argument("--expert-steps", type=positive_int, default=100,
                   help="Adam steps per expert (--expert-corpus)")
    g.add_argument("--expert-lr", type=number, default=0.05,
                   help="Adam learning rate of the experts (--expert-corpus)")
    g.add_argument("--t2-context", type=positive_int, default=None, metavar="TOKENS",
                   help="tokens of context pass 1 of t2/t2-cem scores each expert on (the "
                        "latest ones; default: all the chunk's context)")
    g.add_argument("--t2-population", type=positive_int, default=32,
                   help="CEM population of t2-cem")


def _protocol_options(g) -> None:
    g.add_argument("--chunk", type=positive_int, default=32, help="tokens per chunk")
    g.add_argument("--context", type=positive_int, default=224,
                   help="tokens of context before each chunk (>= chunk)")
    g.add_argument("--stride", type=positive_int, default=None,
                   help="distance between chunk starts (>= chunk; default: chunk)")
    g.add_argument("--max-tokens", type=positive_int, default=20000,
                   help="use the first MAX_TOKENS tokens of the corpus")


def _run_options(g) -> None:
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="da-embed-compare", help="output folder")
    g.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")
