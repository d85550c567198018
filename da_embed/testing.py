"""Tiny, randomly initialised Hugging Face causal LMs for tests and examples.

Nothing here downloads anything: every model is built from a configuration,
seeded, in eval mode.  The two families cover the two position schemes the
placements care about: learned absolute positions (GPT-2) and rotary position
embeddings (Llama).

Examples
--------
>>> from da_embed.testing import tiny_gpt2, random_input_ids
>>> model = tiny_gpt2()
>>> random_input_ids(model, batch=2, length=5).shape
torch.Size([2, 5])
"""

from __future__ import annotations

import torch

__all__ = ["FAMILIES", "tiny_model", "tiny_gpt2", "tiny_llama", "random_input_ids"]

#: Model families :func:`tiny_model` can build.
FAMILIES = ("gpt2", "llama")


def _seeded(build, seed: int, dtype: torch.dtype):
    """Build a model under a private RNG state (the global one is left alone)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build()
    # Always initialise in float32 and cast: the same seed gives the same weights
    # (up to rounding) in every dtype, which the exactness tests rely on.
    return model.to(dtype).eval()


def tiny_gpt2(seed: int = 0, dtype: torch.dtype = torch.float32, *, n_layer: int = 2,
              n_embd: int = 32, n_head: int = 4, vocab_size: int = 97, n_positions: int = 64,
              initializer_range: float = 0.02):
    """A tiny randomly initialised GPT-2 (learned absolute positions, tied head).

    Parameters
    ----------
    seed : int, default 0
        Seed of the initialisation (a private RNG; the global state is untouched).
    dtype : torch.dtype, default torch.float32
        Floating dtype of the parameters (float64 for exactness tests).
    n_layer, n_embd, n_head, vocab_size, n_positions : int
        :class:`transformers.GPT2Config` sizes.
    initializer_range : float, default 0.02
        Standard deviation of the weights (larger values give sharper
        attention and larger logits, so tests see effects more clearly).

    Returns
    -------
    transformers.GPT2LMHeadModel
        The model, in eval mode.

    Examples
    --------
    >>> model = tiny_gpt2(seed=1)
    >>> model.config.n_embd, model.training
    (32, False)
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                        n_positions=n_positions, initializer_range=initializer_range,
                        bos_token_id=vocab_size - 1,
                        eos_token_id=vocab_size - 1)
    return _seeded(lambda: GPT2LMHeadModel(config), seed, dtype)


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, *, hidden_size: int = 32,
               intermediate_size: int = 64, num_hidden_layers: int = 2,
               num_attention_heads: int = 4, num_key_value_heads: int = 2,
               vocab_size: int = 97, max_position_embeddings: int = 128,
               initializer_range: float = 0.02):
    """A tiny randomly initialised Llama (rotary positions, grouped-query attention).

    Built like :func:`tiny_gpt2`: in float32 under a private RNG, then cast.

    Parameters
    ----------
    seed : int, default 0
        Initialisation seed, as for :func:`tiny_gpt2`.
    dtype : torch.dtype, default torch.float32
        Floating dtype of the parameters and of the rotary ``inv_freq`` buffers.
    hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, \
num_key_value_heads, vocab_size, max_position_embeddings : int
        :class:`transformers.LlamaConfig` sizes.
    initializer_range : float, default 0.02
        Standard deviation of the weights.

    Returns
    -------
    transformers.LlamaForCausalLM
        The model, in eval mode (head dimension ``hidden_size // num_attention_heads``).

    Examples
    --------
    >>> model = tiny_llama()
    >>> tuple(model.model.rotary_emb.inv_freq.shape)  # d_head / 2 rotary frequencies
    (4,)
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers,
                         num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, vocab_size=vocab_size,
                         max_position_embeddings=max_position_embeddings,
                         initializer_range=initializer_range)
    return _seeded(lambda: LlamaForCausalLM(config), seed, dtype)


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **sizes):
    """A tiny model of a named family (``"gpt2"`` or ``"llama"``).

    Parameters
    ----------
    family : {"gpt2", "llama"}
        Which builder to call.
    seed : int, default 0
        Initialisation seed.
    dtype : torch.dtype, default torch.float32
        Parameter dtype.
    **sizes
        Keyword arguments of the builder (e.g. ``initializer_range``).

    Returns
    -------
    transformers.PreTrainedModel
        :func:`tiny_gpt2` or :func:`tiny_llama`.

    Examples
    --------
    >>> type(tiny_model("llama")).__name__
    'LlamaForCausalLM'
    """
    builders = {"gpt2": tiny_gpt2, "llama": tiny_llama}
    if family not in builders:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    return builders[family](seed=seed, dtype=dtype, **sizes)


def random_input_ids(model, batch: int = 2, length: int = 8, seed: int = 0) -> torch.Tensor:
    """Uniformly random token ids for ``model`` (a private, seeded generator).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Supplies the vocabulary size (its input embedding table).
    batch, length : int
        Shape of the result.
    seed : int, default 0
        Seed of the generator.

    Returns
    -------
    torch.Tensor
        Long tensor of shape (batch, length).

    Examples
    --------
    >>> ids = random_input_ids(tiny_gpt2(), batch=3, length=4, seed=2)
    >>> ids.dtype, tuple(ids.shape)
    (torch.int64, (3, 4))
    """
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, vocab, (int(batch), int(length)), generator=gen)  # (B, T)
