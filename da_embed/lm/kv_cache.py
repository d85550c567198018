"""The key-value cache of a Hugging Face causal LM, across transformers releases.

transformers 5.x renamed the forward argument and the output field
``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40);
earlier releases know only ``past_key_values``.  These helpers pick the name
the installed model understands, so our calls raise no deprecation warning on
either side of the rename.

Examples
--------
>>> import torch
>>> from da_embed.testing import tiny_gpt2
>>> model = tiny_gpt2()
>>> cache = prefill(model, torch.tensor([[1, 2, 3]]))
>>> out = forward_with_cache(model, torch.tensor([[4]]), cache)
>>> tuple(out.logits.shape)
(1, 1, 97)
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch

__all__ = ["cache_argument", "new_cache", "output_cache", "forward_with_cache", "prefill"]


@lru_cache(maxsize=None)
def _argument_of(forward_cls: type) -> str:
    params = inspect.signature(forward_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_argument(model) -> str:
    """The name of the model's KV-cache argument: ``"cache"`` or ``"past_key_values"``.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Returns
    -------
    str

    Examples
    --------
    >>> from da_embed.testing import tiny_llama
    >>> cache_argument(tiny_llama()) in ("cache", "past_key_values")
    True
    """
    return _argument_of(type(model))


def output_cache(output):
    """The KV cache a forward pass returned, under either field name.

    Parameters
    ----------
    output : transformers.utils.ModelOutput

    Returns
    -------
    transformers.Cache or None

    Examples
    --------
    >>> import torch
    >>> from da_embed.testing import tiny_gpt2
    >>> model = tiny_gpt2()
    >>> output_cache(model(input_ids=torch.tensor([[1, 2]]), use_cache=True)) is not None
    True
    """
    keys = output.keys()
    return output["cache"] if "cache" in keys else output.get("past_key_values")


def new_cache(model):
    """An empty :class:`transformers.DynamicCache` for ``model``.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Returns
    -------
    transformers.DynamicCache

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2
    >>> type(new_cache(tiny_gpt2())).__name__
    'DynamicCache'
    """
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # releases before the config argument
        return DynamicCache()


def forward_with_cache(model, input_ids: torch.Tensor, cache, **kwargs):
    """``model(input_ids, <cache>=cache, use_cache=True, **kwargs)`` with the right name.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    input_ids : torch.Tensor (B, T)
    cache : transformers.Cache or None
        The cache of everything before ``input_ids``; extended in place.
    **kwargs
        Passed on to the forward pass (e.g. ``attention_mask``).

    Returns
    -------
    transformers.utils.ModelOutput
        Its cache is read with :func:`output_cache`.

    Examples
    --------
    >>> import torch
    >>> from da_embed.testing import tiny_gpt2
    >>> model = tiny_gpt2()
    >>> out = forward_with_cache(model, torch.tensor([[1, 2]]), None)
    >>> output_cache(out) is not None
    True
    """
    if cache is not None:
        kwargs[cache_argument(model)] = cache
    return model(input_ids=input_ids, use_cache=True, **kwargs)


def prefill(model, input_ids: torch.Tensor):
    """The KV cache of ``input_ids`` (B, T); an empty cache when T = 0.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    input_ids : torch.Tensor (B, T)

    Returns
    -------
    transformers.Cache

    Examples
    --------
    >>> import torch
    >>> from da_embed.testing import tiny_gpt2
    >>> prefill(tiny_gpt2(), torch.zeros(1, 0, dtype=torch.long)).get_seq_length()
    0
    """
    cache = new_cache(model)
    if input_ids.shape[1]:
        cache = output_cache(forward_with_cache(model, input_ids, cache))
    return cache
