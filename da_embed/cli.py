"""The ``da-embed`` command line.

``da-embed compare`` runs several online methods on one token stream and
prints the comparison table (:func:`da_embed.compare.compare`); ``da-embed plot
RUN.nc|DIR`` writes the figures of a run or a compare folder as PNG files
(:func:`da_embed.plot.save_figures`).  Bad input
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
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``da-embed --help``, ``da-embed compare --help``).

    Returns
    -------
    argparse.ArgumentParser
        With one subcommand per action (``compare``, ``plot``, ...).

    Examples
    --------
    >>> args = build_parser().parse_args(["compare", "--methods", "frozen,etkf", "--chunk", "16"])
    >>> args.command, args.methods, args.chunk
    ('compare', 'frozen,etkf', 16)
    """
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
    g.add_argument("--corpus", action="append", metavar="[NAME=]PATH",
                   help="evaluation text file (UTF-8); default: WikiText-2 test.txt.  Repeat "
                        "it for a multi-domain stream: the corpora alternate in segments of "
                        "--segment-tokens tokens (boundaries stored in the outputs)")
    g.add_argument("--segment-tokens", type=_positive_int, default=2048,
                   help="tokens per segment of a multi-domain stream (several --corpus)")
    g.add_argument("--tune-corpus", help="tuning text for --subspace fisher:k and the dyneval "
                   "learning rate; default: WikiText-2 valid.txt (skipped if absent)")
    g.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model (trained once, ~3 min)")
    g.add_argument("--placement", default=None,
                   help="where the state acts: hidden, embedding, svf[:targets], rotary[:mode]; "
                        "unset: hidden, or with t2 methods the experts' placement (svf when "
                        "--expert-corpus trains them)")
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
    g.add_argument("--dynamics", metavar="CKPT", default=None,
                   help="a da-embed spinup checkpoint (or its folder): every method also runs "
                        "with the learned dynamics and Q as its forecast step (rows "
                        "NAME+learned beside the random-walk rows)")
    g.add_argument("--experts", metavar="PATH",
                   help="expert states of t2/t2-cem (Transformer^2), saved by train_experts "
                        "(PATH.json + PATH.npz)")
    g.add_argument("--expert-corpus", action="append", metavar="NAME=PATH",
                   help="train one t2 expert per domain on this text (repeat it); the experts "
                        "are saved to OUT/experts.json/.npz")
    g.add_argument("--expert-steps", type=_positive_int, default=100,
                   help="Adam steps per expert (--expert-corpus)")
    g.add_argument("--expert-lr", type=_float, default=0.05,
                   help="Adam learning rate of the experts (--expert-corpus)")
    g.add_argument("--t2-context", type=_positive_int, default=None, metavar="TOKENS",
                   help="tokens of context pass 1 of t2/t2-cem scores each expert on (the "
                        "latest ones; default: all the chunk's context)")
    g.add_argument("--t2-population", type=_positive_int, default=32,
                   help="CEM population of t2-cem")
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
    p = sub.add_parser(
        "plot", help="write the figures of a run or a compare folder as PNG files",
        description="Write every figure that applies to RUN as PNG files and print their "
                    "paths: a compare output folder (per-chunk NLL, change vs frozen, and the "
                    "scale state, components and covariance of each method), a trajectory "
                    "<method>.nc, a summary.nc/summary.json, or a filters run .nc "
                    "(filters.plot figures).")
    p.add_argument("run", metavar="RUN.nc|DIR", help="a .nc run file or a compare output folder")
    p.add_argument("--out", default=None,
                   help="folder for the PNG files (default: next to the input; a folder's "
                        "figures go into the folder)")
    p.add_argument("--dpi", type=_positive_int, default=150, help="resolution of the PNG files")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    from . import claims as _claims, generate as _generate

    _generate.add_parser(sub)  # da-embed generate (candidates as pseudo-observations)
    _claims.add_parser(sub)  # da-embed claims (the seeds' claims table)
    from .spinup import add_parser as _spinup_parser

    _spinup_parser(sub)  # da-embed spinup (learned dynamics and Q by 4D-Var)
    return parser


def _read_corpus(path, what: str) -> str:
    from .corpora import read_text

    try:
        return read_text(path)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _encode(tokenizer, text: str, what: str, chunk: int):
    from .reference import encode_text

    ids = encode_text(tokenizer, text)
    if ids.size == 0:
        raise ValueError(f"{what} has no tokens after tokenisation")
    if ids.size < chunk + 1:  # a shorter context than --context is fine (the stream's start)
        raise ValueError(f"{what}: the token stream has {ids.size} tokens; at least chunk + 1 = "
                         f"{chunk + 1} are needed for one chunk (--chunk {chunk}); give a longer "
                         "text or a smaller --chunk")
    return ids


def _needs_tuning(methods, args) -> bool:
    """Whether the tuning text is used: a Fisher subspace, or dyneval without --dyneval-lr."""
    from .methods import split_method

    for label in methods:
        name, own = split_method(label)
        spec = own if own is not None else (None if name == "frozen" else args.subspace)
        if spec is not None and str(spec).strip().lower().startswith("fisher"):
            return True
        if name == "dyneval" and args.dyneval_lr is None:
            return True
    return False


def _named_paths(values, option: str) -> list[tuple[str, str]]:
    """``[NAME=]PATH`` arguments as (name, path); the name defaults to the file's stem."""
    out: list[tuple[str, str]] = []
    for v in values:
        name, sep, path = str(v).partition("=")
        if not sep or os.path.exists(v) or "/" in name or not name.strip():
            name, path = "", str(v)  # a path (which may contain '=')
        elif not path.strip():
            raise ValueError(f"{option} {v!r}: expected NAME=PATH or PATH (the path is empty)")
        name = name.strip() or os.path.splitext(os.path.basename(path))[0] or "corpus"
        base, k = name, 2
        while name in dict(out):  # two files with the same stem
            name, k = f"{base}-{k}", k + 1
        out.append((name, path))
    return out


def _expert_args(args, methods):
    """Check the t2 options; return (loaded experts, expert texts, resolved placement)."""
    from .methods import EXPERT_METHODS, split_method

    t2 = [m for m in methods if split_method(m)[0] in EXPERT_METHODS]
    if args.experts and args.expert_corpus:
        raise ValueError("give either --experts PATH or --expert-corpus NAME=PATH, not both")
    if t2 and not (args.experts or args.expert_corpus):
        raise ValueError(f"--methods {', '.join(t2)} needs expert states: --experts PATH "
                         "(saved by train_experts) or --expert-corpus NAME=PATH (repeated)")
    if (args.experts or args.expert_corpus) and not t2:
        raise ValueError("--experts/--expert-corpus are used only by the t2 and t2-cem methods; "
                         "add one to --methods")
    experts, texts, placement = None, {}, args.placement
    if args.experts:
        from .transformer2 import load_experts

        experts = load_experts(args.experts)
        placement = placement or experts.placement_spec
        if placement is None:
            raise ValueError(f"--experts {args.experts!r} do not record their placement; give "
                             "--placement")
    elif args.expert_corpus:
        texts = {n: _read_corpus(p, "--expert-corpus")
                 for n, p in _named_paths(args.expert_corpus, "--expert-corpus")}
        placement = placement or "svf"
    return experts, texts, placement or "hidden"


def _train_cli_experts(args, model, tokenizer, placement, texts, protocol):
    """Train (progress bars) and save the experts of --expert-corpus."""
    from .protocol import max_positions
    from .transformer2 import train_experts

    ids = {n: _encode(tokenizer, t, f"--expert-corpus {n!r}", protocol.chunk)
           for n, t in texts.items()}
    seq = min(protocol.window, max_positions(model) or protocol.window)
    print(f"training {len(ids)} t2 experts on {placement} ({args.expert_steps} steps, lr "
          f"{args.expert_lr:g}): " + ", ".join(f"{n} ({v.size} tokens)" for n, v in ids.items()),
          flush=True)
    seq = min(seq, min(v.size for v in ids.values()) - 1)  # every corpus gives a window
    experts = train_experts(model, ids, placement=placement, steps=args.expert_steps,
                            lr=args.expert_lr, seq_len=seq, seed=args.seed,
                            progress=not args.no_progress)
    path = experts.save(os.path.join(os.fspath(args.out), "experts"))
    print(f"experts saved to {path}", flush=True)
    return experts


def _compare(args) -> int:
    import torch

    from .protocol import PrequentialConfig
    from .compare import compare, make_placement
    from .corpora import wikitext_path
    from .methods import parse_methods

    # Cheap checks first: protocol, methods, members, files.
    protocol = PrequentialConfig(chunk=args.chunk, context=args.context, stride=args.stride,
                                 max_tokens=args.max_tokens)
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        raise ValueError(f"--methods: {exc}") from None
    if args.members < 2:
        raise ValueError(f"--members must be >= 2 (an ensemble needs at least two members), "
                         f"got {args.members}")
    t2_options = {"context_tokens": args.t2_context}
    if args.t2_context is not None and args.t2_context < 2:
        raise ValueError(f"--t2-context must be >= 2 tokens, got {args.t2_context}")
    if args.t2_population < 2:
        raise ValueError(f"--t2-population must be >= 2, got {args.t2_population}")
    method_options = {"t2": dict(t2_options),
                      "t2-cem": dict(t2_options, population=args.t2_population,
                                     elite=min(8, args.t2_population))}
    corpora = _named_paths(args.corpus or [], "--corpus")
    corpus = corpora[0][1] if corpora else wikitext_path("test")
    texts = {n: _read_corpus(pth, "--corpus") for n, pth in corpora} if corpora else {}
    text = texts[corpora[0][0]] if corpora else _read_corpus(corpus, "--corpus")
    experts, expert_texts, placement = _expert_args(args, methods)
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
    try:
        make_placement(model, placement)  # fails early for e.g. rotary on GPT-2
    except ValueError as exc:
        raise ValueError(f"--placement {placement!r}: {exc}") from None
    ids = _encode(tokenizer, text, f"--corpus {os.fspath(corpus)!r}", protocol.chunk)
    segments = None
    if len(corpora) > 1:  # a multi-domain stream
        from .corpora import alternate_segments

        streams = {n: ids if n == corpora[0][0] else _encode(
            tokenizer, texts[n], f"--corpus {os.fspath(pth)!r}", protocol.chunk)
            for n, pth in corpora}
        ids, segments = alternate_segments(streams, args.segment_tokens)
        print("multi-domain stream: " + ", ".join(f"{n} ({s.size} tokens)" for n, s in
                                                  streams.items())
              + f" in alternating segments of {args.segment_tokens} tokens", flush=True)
    if expert_texts:
        experts = _train_cli_experts(args, model, tokenizer, placement, expert_texts, protocol)
    if tune_text is not None and not _needs_tuning(methods, args):
        tune_text = None  # unused: no Fisher subspace, no dyneval learning rate to tune
    tune_ids = None if tune_text is None else _encode(
        tokenizer, tune_text, f"--tune-corpus {os.fspath(tune_path)!r}", protocol.chunk)
    print(f"corpus {os.fspath(corpus)}: {ids.size} tokens"
          + ("" if tune_ids is None else f"; tuning text {os.fspath(tune_path)}"), flush=True)
    try:
        compare(model, ids, methods=methods, placement=placement, subspace=args.subspace,
                tune_ids=tune_ids, protocol=protocol, members=args.members, P0=args.P0,
                Q=args.Q, R=args.R, target=args.target, decrement=args.decrement,
                dyneval_lr=args.dyneval_lr, tune_tokens=args.tune_tokens, seed=args.seed,
                out=args.out, model_name=name, progress=not args.no_progress,
                experts=experts, segments=segments, dynamics=args.dynamics,
                method_options=method_options)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every completed chunk is kept in {os.fspath(args.out)}/"
              "<method>.nc", file=sys.stderr)
        return 130
    print(f"trajectories and summary written to {os.fspath(args.out)}")
    return 0


def _plot(args) -> int:
    from .plot import save_figures  # draws on bare Figures: no pyplot, no window

    for path in save_figures(args.run, args.out, dpi=args.dpi):
        print(path)
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
        Exit status: 0 success, 2 bad input (argparse's usage errors
        included: they are returned, not raised), 1 an unexpected error
        (one line; ``--debug`` shows the traceback), 130 interrupted.

    Examples
    --------
    >>> main(["compare", "--chunk", "64", "--context", "32"])  # the error goes to stderr
    2
    """
    from .assimilator import AssimilationDiverged

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0): already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "plot":
            return _plot(args)
        if args.command == "spinup":
            from .spinup import run_cli as _spinup_cli

            return _spinup_cli(args)
        if args.command in ("generate", "claims"):
            from . import claims as _claims, generate as _generate

            return (_generate if args.command == "generate" else _claims).run_cli(args)
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
    except Exception as exc:  # a bug, not bad input: one line, the traceback with --debug
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"da-embed {args.command}: error: unexpected {type(exc).__name__}: {first} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
