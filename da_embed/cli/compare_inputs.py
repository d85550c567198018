"""What ``da-embed compare`` reads before it compares: texts, token streams, t2 experts.

Every error is a ``ValueError`` naming the option it came from, so the
command ends with one line and exit status 2.
"""

from __future__ import annotations

import os

from .compare_options import CompareArgs

__all__ = ["read_corpus", "encode", "named_paths", "needs_tuning", "expert_inputs",
           "train_cli_experts"]


def read_corpus(path, what: str) -> str:
    """The text of ``path``; a ``ValueError`` names the option ``what``.

    Parameters
    ----------
    path : str or PathLike
        A UTF-8 text file.
    what : str
        The option that named the file (e.g. ``"--corpus"``).

    Returns
    -------
    str

    Examples
    --------
    >>> read_corpus("/no/such/file.txt", "--corpus")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    from ..corpora import read_text

    try:
        return read_text(path)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def encode(tokenizer, text: str, what: str, chunk: int):
    """Token ids of ``text``, at least ``chunk + 1`` of them (one chunk).

    Parameters
    ----------
    tokenizer : transformers tokenizer
    text : str
    what : str
        The text's name in error messages (e.g. ``"--corpus 'a.txt'"``).
    chunk : int
        ``--chunk``.

    Returns
    -------
    ndarray of int64

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> encode(tok, "the cat", "--corpus 'x'", 32)
    Traceback (most recent call last):
    ...
    ValueError: --corpus 'x': the token stream has 2 tokens; at least chunk + 1 = 33 are \
needed for one chunk (--chunk 32); give a longer text or a smaller --chunk
    """
    from ..reference import encode_text

    ids = encode_text(tokenizer, text)
    if ids.size == 0:
        raise ValueError(f"{what} has no tokens after tokenisation")
    if ids.size < chunk + 1:  # a shorter context than --context is fine (the stream's start)
        raise ValueError(f"{what}: the token stream has {ids.size} tokens; at least chunk + 1 = "
                         f"{chunk + 1} are needed for one chunk (--chunk {chunk}); give a longer "
                         "text or a smaller --chunk")
    return ids


def needs_tuning(methods, opts: CompareArgs) -> bool:
    """Whether the tuning text is used: a Fisher subspace, or dyneval without --dyneval-lr.

    Parameters
    ----------
    methods : sequence of str
        Method labels (``NAME`` or ``NAME@SUBSPACE``).
    opts : CompareArgs
        ``subspace`` and ``dyneval_lr`` are read.

    Returns
    -------
    bool

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> needs_tuning(["frozen", "ekf@fisher:4"], SimpleNamespace(subspace=None, dyneval_lr=None))
    True
    """
    from ..methods import split_method

    for label in methods:
        name, own = split_method(label)
        spec = own if own is not None else (None if name == "frozen" else opts.subspace)
        if spec is not None and str(spec).strip().lower().startswith("fisher"):
            return True
        if name == "dyneval" and opts.dyneval_lr is None:
            return True
    return False


def named_paths(values, option: str) -> list[tuple[str, str]]:
    """``[NAME=]PATH`` arguments as (name, path); the name defaults to the file's stem.

    Parameters
    ----------
    values : sequence of str
        The option's values.
    option : str
        The option, for error messages.

    Returns
    -------
    list of (str, str)
        Names made unique by a ``-2``, ``-3``, ... suffix.

    Examples
    --------
    >>> named_paths(["wiki=/tmp/a.txt", "/tmp/b.txt", "/data/b.txt"], "--corpus")
    [('wiki', '/tmp/a.txt'), ('b', '/tmp/b.txt'), ('b-2', '/data/b.txt')]
    """
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


def expert_inputs(opts: CompareArgs, methods):
    """Check the t2 options; return (loaded experts, expert texts, resolved placement).

    Parameters
    ----------
    opts : CompareArgs
        ``experts``, ``expert_corpus`` and ``placement`` are read.
    methods : sequence of str
        Method labels.

    Returns
    -------
    experts : Experts or None
        Loaded from ``--experts``.
    texts : dict
        Name -> text of every ``--expert-corpus``.
    placement : str

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> expert_inputs(SimpleNamespace(experts=None, expert_corpus=(), placement=None), ["ekf"])
    (None, {}, 'hidden')
    """
    from ..methods import EXPERT_METHODS, split_method

    t2 = [m for m in methods if split_method(m)[0] in EXPERT_METHODS]
    if opts.experts and opts.expert_corpus:
        raise ValueError("give either --experts PATH or --expert-corpus NAME=PATH, not both")
    if t2 and not (opts.experts or opts.expert_corpus):
        raise ValueError(f"--methods {', '.join(t2)} needs expert states: --experts PATH "
                         "(saved by train_experts) or --expert-corpus NAME=PATH (repeated)")
    if (opts.experts or opts.expert_corpus) and not t2:
        raise ValueError("--experts/--expert-corpus are used only by the t2 and t2-cem methods; "
                         "add one to --methods")
    experts, texts, placement = None, {}, opts.placement
    if opts.experts:
        from ..transformer2 import load_experts

        experts = load_experts(opts.experts)
        placement = placement or experts.placement_spec
        if placement is None:
            raise ValueError(f"--experts {opts.experts!r} do not record their placement; give "
                             "--placement")
    elif opts.expert_corpus:
        texts = {n: read_corpus(p, "--expert-corpus")
                 for n, p in named_paths(opts.expert_corpus, "--expert-corpus")}
        placement = placement or "svf"
    return experts, texts, placement or "hidden"


def train_cli_experts(opts: CompareArgs, model, tokenizer, placement, texts, protocol,
                      eval_ids=None):
    """Train (progress bars) and save the experts of --expert-corpus.

    Parameters
    ----------
    opts : CompareArgs
        ``expert_steps``, ``expert_lr``, ``seed``, ``out`` and ``progress`` are read.
    model, tokenizer
        The compared model.
    placement : str
        Where the experts' states act.
    texts : dict
        Name -> training text.
    protocol : PrequentialConfig
        Its chunk and window bound the training sequences.
    eval_ids : array_like of int, optional
        The evaluation stream: an expert corpus sharing more than 1% of its
        16-token windows is refused unless ``opts.allow_overlap``.

    Returns
    -------
    Experts
        Saved to ``OUT/experts.json/.npz``.

    Examples
    --------
    >>> callable(train_cli_experts)  # trains a model: see tests/test_transformer2.py
    True
    """
    from ..overlap import check_disjoint
    from ..protocol import max_positions
    from ..transformer2 import train_experts

    ids = {n: encode(tokenizer, t, f"--expert-corpus {n!r}", protocol.chunk)
           for n, t in texts.items()}
    if eval_ids is not None:  # an expert that has read the scored text would leak it
        for n, v in ids.items():
            check_disjoint(eval_ids, v, what=f"--expert-corpus {n!r}", allow=opts.allow_overlap,
                           option="--allow-overlap")
    seq = min(protocol.window, max_positions(model) or protocol.window)
    print(f"training {len(ids)} t2 experts on {placement} ({opts.expert_steps} steps, lr "
          f"{opts.expert_lr:g}): " + ", ".join(f"{n} ({v.size} tokens)" for n, v in ids.items()),
          flush=True)
    seq = min(seq, min(v.size for v in ids.values()) - 1)  # every corpus gives a window
    experts = train_experts(model, ids, placement=placement, steps=opts.expert_steps,
                            lr=opts.expert_lr, seq_len=seq, seed=opts.seed,
                            progress=opts.progress)
    path = experts.save(os.path.join(os.fspath(opts.out), "experts"))
    print(f"experts saved to {path}", flush=True)
    return experts
