"""Reuse a language model's trunk output across tuning runs whose state acts after the trunk."""

from __future__ import annotations

__all__ = ["TrunkCache"]


class TrunkCache:
    """Reuse the trunk's output across tuning runs (``HiddenScale`` rows only).

    With ``HiddenScale`` (and subspaces of it) the state scales the final
    hidden state *after* the trunk, so the trunk's output for a window of
    tokens does not depend on the state.  While the cache is active, the
    model's base (``model.base_model``, e.g. ``LlamaModel``: embeddings,
    blocks and final norm) returns its stored output for an input it has seen
    before; the LM head and every hook run as usual.  Only no-gradient calls
    with ``input_ids`` and no other non-default argument are cached; anything
    else goes to the model unchanged.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The language model whose base is cached.

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2
    >>> cache = TrunkCache(tiny_gpt2())
    >>> with cache:
    ...     pass
    >>> cache.hits, cache.misses
    (0, 0)
    """

    def __init__(self, model):
        self.model = model
        self.base = getattr(model, "base_model", model)
        self.store: dict = {}
        self.hits = self.misses = 0
        self._depth = 0  # re-entrant: a subspace may be built inside a cached tuning run

    def __enter__(self):
        self._depth += 1
        if self._depth > 1 or self.base is self.model:  # no separate trunk: nothing to cache
            return self
        import torch

        orig = self.base.forward

        def forward(*args, **kw):
            ids = kw.get("input_ids")
            plain = (not args and torch.is_tensor(ids) and not torch.is_grad_enabled()
                     and all(v is None or v is False for k, v in kw.items() if k != "input_ids"))
            if not plain:
                return orig(*args, **kw)
            key = (tuple(ids.shape), ids.detach().cpu().numpy().tobytes())
            out = self.store.get(key)
            if out is None:
                out = orig(*args, **kw)
                self.store[key] = out
                self.misses += 1
            else:
                self.hits += 1
            return out

        self.base.forward = forward
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self.base is not self.model:
            del self.base.forward  # the class's forward again
        return False
