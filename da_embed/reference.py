"""The reference language model: a small Llama-style model and a byte-level BPE
tokenizer, trained locally on the embedded default corpus and cached.

Nothing is downloaded.  The first call of :func:`load_reference` trains the
tokenizer and the model (about 2.5 minutes on 2 CPU cores with the default
:class:`ReferenceConfig`, measured at about 3.5k training tokens per second) and
saves both with the Hugging Face ``save_pretrained`` format under the cache
directory, in a folder keyed by the configuration and a hash of the training
text; later calls load it.

The defaults follow the prototype of DESIGN.md section 8: d_model 256, 4
layers, 4 heads, 4096 BPE tokens, tied embeddings (about 4.2M parameters),
trained on 512k tokens (the standard-library corpus is about 390k tokens, so
about 1.3 epochs; the budget keeps the first ``make demo`` within 5 minutes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .progress import progress_bar

__all__ = ["ReferenceConfig", "cache_dir", "train_tokenizer", "train_reference",
           "load_reference", "encode_text"]

#: Bump when the training procedure changes, so old caches are not reused.
_FORMAT = 1


@dataclass(frozen=True)
class ReferenceConfig:
    """How the reference model is built and trained.

    Parameters
    ----------
    vocab_size : int
        Byte-level BPE vocabulary size (4096: small enough for a 4M model,
        large enough that tokens are word pieces).
    d_model, n_layers, n_heads, d_ff : int
        Llama-style architecture (SwiGLU MLP of width ``d_ff``).
    context : int
        Training sequence length (the model's position limit is twice it).
    batch_size : int
        Sequences per optimiser step.
    train_tokens : int
        Total training tokens (steps = train_tokens / (batch_size * context)).
    lr : float
        Peak AdamW learning rate (linear warm-up over 5% of the steps, cosine decay).
    weight_decay : float
    seed : int
        Seeds tokenizer-independent randomness: initialisation and batch sampling.
    threads : int
        torch intra-op threads during training (0 keeps torch's default).

    Examples
    --------
    >>> ReferenceConfig().steps  # 512k tokens in batches of 16 x 256
    125
    >>> tiny = ReferenceConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2, d_ff=32,
    ...                        context=16, batch_size=2, train_tokens=64)
    >>> tiny.steps, tiny.key("0" * 40).startswith("llama-")
    (2, True)
    """

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 688
    context: int = 256
    batch_size: int = 16
    train_tokens: int = 512_000
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "context",
                     "batch_size", "train_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 bytes + merges), got "
                             f"{self.vocab_size}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads}) with an even head size (rotary embeddings)")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def steps(self) -> int:
        """Number of optimiser steps."""
        return max(1, self.train_tokens // (self.batch_size * self.context))

    def key(self, corpus_hash: str) -> str:
        """Cache folder name: configuration and corpus hash."""
        blob = json.dumps({"format": _FORMAT, "config": dataclasses.asdict(self),
                           "corpus": corpus_hash}, sort_keys=True)
        return "llama-" + hashlib.sha1(blob.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where trained reference models live.

    ``$DA_EMBED_CACHE`` if set, else ``$XDG_CACHE_HOME/da-embed``, else
    ``~/.cache/da-embed``.

    Returns
    -------
    pathlib.Path
        The folder (not created here).

    Examples
    --------
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"DA_EMBED_CACHE": "/tmp/da-embed-cache"}):
    ...     print(cache_dir().as_posix())
    /tmp/da-embed-cache
    """
    if os.environ.get("DA_EMBED_CACHE"):
        return Path(os.environ["DA_EMBED_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "da-embed"


def train_tokenizer(text: str, vocab_size: int = 4096):
    """Train a byte-level BPE tokenizer on ``text`` (deterministic).

    Parameters
    ----------
    text : str
    vocab_size : int

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        With ``<|endoftext|>`` as BOS, EOS and padding token.

    Examples
    --------
    >>> tok = train_tokenizer("hello world, hello tokens. " * 50, vocab_size=300)
    >>> tok.decode(tok("hello world")["input_ids"])
    'hello world'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not text.strip():
        raise ValueError("text must not be empty to train a tokenizer")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = text.split("\n")
    tok.train_from_iterator((ln + "\n" for ln in lines), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_max_length=1 << 30)


def encode_text(tokenizer, text: str, block_chars: int = 100_000) -> np.ndarray:
    """Token ids of a long text as one int64 array, encoded in line-aligned blocks.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    text : str
    block_chars : int
        Approximate characters per encoding call (keeps memory flat).

    Returns
    -------
    ndarray (T,)

    Examples
    --------
    >>> tok = train_tokenizer("def add(a, b):\\n    return a + b\\n" * 40, vocab_size=300)
    >>> ids = encode_text(tok, "def add(a, b):\\n" * 3, block_chars=16)  # three blocks
    >>> ids.dtype, tok.decode(ids.tolist()) == "def add(a, b):\\n" * 3
    (dtype('int64'), True)
    """
    ids: list[int] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + block_chars)
        if end < len(text):
            nl = text.rfind("\n", start, end)
            end = nl + 1 if nl > start else end
        ids.extend(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        start = end
    return np.asarray(ids, dtype=np.int64)


def _build_model(config: ReferenceConfig):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.d_model,
                      intermediate_size=config.d_ff, num_hidden_layers=config.n_layers,
                      num_attention_heads=config.n_heads, num_key_value_heads=config.n_heads,
                      max_position_embeddings=2 * config.context, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(cfg)


def train_reference(config: ReferenceConfig = ReferenceConfig(), text: str | None = None,
                    out_dir: str | os.PathLike | None = None, progress: bool = True):
    """Train the tokenizer and the model on ``text`` and save both.

    Parameters
    ----------
    config : ReferenceConfig
    text : str, optional
        Training text; the embedded default corpus
        (:func:`da_embed.corpora.stdlib_corpus`) when None.
    out_dir : path, optional
        Where to save (``save_pretrained``); nothing is saved when None.
    progress : bool
        Show a progress bar with the loss and tokens per second.

    Returns
    -------
    model : transformers.LlamaForCausalLM
        In eval mode.
    tokenizer : transformers.PreTrainedTokenizerFast
    info : dict
        Parameter count, steps, tokens, final loss, seconds, tokens per second.

    Examples
    --------
    >>> tiny = ReferenceConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2, d_ff=32,
    ...                        context=16, batch_size=2, train_tokens=64)
    >>> text = "def add(a, b):\\n    return a + b\\n" * 40
    >>> model, tokenizer, info = train_reference(tiny, text, progress=False)
    >>> info["steps"], info["tokens"], model.training
    (2, 64, False)
    """
    import torch

    from .corpora import stdlib_corpus

    text = stdlib_corpus() if text is None else text
    tokenizer, ids = _tokenize(config, text)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    model = _build_model(config)
    model.train()
    loss_val, seconds = _fit(model, ids, config, progress)
    if config.threads:
        torch.set_num_threads(old_threads)
    model.eval()
    tokens = config.steps * config.batch_size * config.context
    info = {"parameters": _parameter_count(model), "steps": config.steps, "tokens": tokens,
            "corpus_tokens": int(ids.numel()), "final_loss": loss_val, "seconds": seconds,
            "tokens_per_second": tokens / seconds, "config": dataclasses.asdict(config)}
    if out_dir is not None:
        _save(Path(out_dir), model, tokenizer, info)
    return model, tokenizer, info


def _tokenize(config: ReferenceConfig, text: str):
    """Stage 1: the tokenizer trained on ``text`` and the text's token ids (a torch tensor)."""
    import torch

    tokenizer = train_tokenizer(text, config.vocab_size)
    ids = torch.from_numpy(encode_text(tokenizer, text))
    L = config.context
    if ids.numel() < L + 2:
        raise ValueError(f"training text has {ids.numel()} tokens, fewer than the context "
                         f"{L} + 2")
    return tokenizer, ids


def _parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _learning_rate(config: ReferenceConfig, step: int) -> float:
    """The schedule: linear warm-up over 5% of the steps, cosine decay to 10% of ``lr``."""
    steps = config.steps
    warm = max(1, steps // 20)
    if step < warm:
        return config.lr * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _fit(model, ids, config: ReferenceConfig, progress: bool) -> tuple[float, float]:
    """Stage 3, the training loop: AdamW on random windows; (final loss, seconds).

    The windows come from a generator seeded by ``config.seed`` (the same
    draws, in the same order, for the same configuration: the cache key
    promises the same model).
    """
    import torch

    L = config.context
    steps = config.steps
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95),
                            weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    desc = f"training reference model ({_parameter_count(model) / 1e6:.1f}M params)"
    t0 = time.perf_counter()
    bar = progress_bar(range(steps), desc=desc, disable=not progress, unit="step")
    loss_val = float("nan")
    for step in bar:
        starts = torch.randint(0, ids.numel() - L - 1, (config.batch_size,), generator=gen)
        batch = torch.stack([ids[s:s + L + 1] for s in starts.tolist()])  # (B, L+1)
        for g in opt.param_groups:
            g["lr"] = _learning_rate(config, step)
        out = model(input_ids=batch, labels=batch)  # HF shifts labels: L next-token predictions
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = float(out.loss.detach())
        if progress and (step % 10 == 0 or step == steps - 1):
            rate = (step + 1) * config.batch_size * L / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{rate:.0f}")
    seconds = time.perf_counter() - t0
    bar.close()
    return loss_val, seconds


def _save(out: Path, model, tokenizer, info: dict) -> None:
    """Stage 4: ``save_pretrained`` into ``out``, atomically (a killed run leaves no cache)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "da_embed_reference.json").write_text(json.dumps(info, indent=2))
    if out.exists():  # another process finished first; keep theirs
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(out)  # atomic: a killed run never leaves a half-written cache


def load_reference(config: ReferenceConfig = ReferenceConfig(), text: str | None = None,
                   train_if_missing: bool = True, progress: bool = True):
    """The cached reference model and tokenizer, trained on first use.

    Parameters
    ----------
    config : ReferenceConfig
    text : str, optional
        Training text (default: the embedded standard-library corpus).  It is
        part of the cache key, so a different text gives a different model.
    train_if_missing : bool
        Train when no cached copy exists; otherwise raise FileNotFoundError.
    progress : bool
        Show progress bars while training.

    Returns
    -------
    model, tokenizer, info
        As :func:`train_reference`; ``info["path"]`` is the cache folder.

    Examples
    --------
    >>> import tempfile
    >>> from unittest import mock
    >>> tiny = ReferenceConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2, d_ff=32,
    ...                        context=16, batch_size=2, train_tokens=64)
    >>> text = "def add(a, b):\\n    return a + b\\n" * 40
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with mock.patch.dict(os.environ, {"DA_EMBED_CACHE": folder}):
    ...         _ = load_reference(tiny, text, progress=False)  # trains and caches
    ...         model, tokenizer, info = load_reference(tiny, text, train_if_missing=False)
    >>> info["steps"], Path(info["path"]).name.startswith("llama-")
    (2, True)
    """
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from .corpora import stdlib_corpus

    text = stdlib_corpus() if text is None else text
    corpus_hash = hashlib.sha1(text.encode("utf-8")).hexdigest()
    path = cache_dir() / config.key(corpus_hash)
    if not path.exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no cached reference model at {path}")
        if progress:
            print(f"Training the reference model once; it will be cached in {path}", flush=True)
        train_reference(config, text, out_dir=path, progress=progress)
    hf_logging.disable_progress_bar()  # loading a 4M model needs no progress bar
    model = LlamaForCausalLM.from_pretrained(path)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    info = json.loads((path / "da_embed_reference.json").read_text())
    info["path"] = str(path)
    return model, tokenizer, info
