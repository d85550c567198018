"""Attaching a placement's hooks to a model and removing them (one placement per model)."""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

from torch import nn

from .checks import _model_name

__all__ = ["Attachment"]

# model -> the placement attached to it (at most one; see Attachment.attach).
_ATTACHED: "weakref.WeakKeyDictionary[nn.Module, Attachment]" = weakref.WeakKeyDictionary()


class Attachment:
    """The attach / remove life cycle of :class:`~da_embed.placements.Placement`.

    A subclass sets ``model``, ``_handles`` (``[]``), ``_frozen`` (``[]``) and
    ``_ctx`` and implements ``_install()``, which registers its hooks and
    returns their handles.
    """

    model: nn.Module

    @property
    def is_attached(self) -> bool:
        """Whether this placement's hooks are installed on the model."""
        return _ATTACHED.get(self.model) is self

    def attach(self) -> "Attachment":
        """Install the hooks and freeze the model's parameters.

        Attaching an attached placement does nothing.  With no states active
        (outside :meth:`logits`, :meth:`token_nll` and :meth:`using`) the hooks
        are the identity, so the attached model behaves as the original.

        Returns
        -------
        Placement
            ``self``, for chaining.

        Raises
        ------
        ValueError
            If another placement is attached to the same model (one
            placement per model: remove that one first).

        See Also
        --------
        attached : attach for the length of a ``with`` block.

        Examples
        --------
        >>> from da_embed.placements import HiddenScale
        >>> from da_embed.testing import tiny_gpt2
        >>> placement = HiddenScale(tiny_gpt2()).attach()
        >>> placement.is_attached
        True
        >>> placement.remove()
        """
        if self.is_attached:
            return self
        other = _ATTACHED.get(self.model)
        if other is not None:
            raise ValueError(f"cannot attach {type(self).__name__}: the model "
                             f"({_model_name(self.model)}) already carries {type(other).__name__}; "
                             f"remove that placement first (one placement per model)")
        self._frozen = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            self._handles = list(self._install())
        except BaseException:
            for h in self._handles:
                h.remove()
            self._handles, self._frozen = [], []
            raise
        for p, _ in self._frozen:
            p.requires_grad_(False)
        _ATTACHED[self.model] = self
        return self

    def remove(self) -> None:
        """Remove the hooks and restore ``requires_grad``; harmless if not attached.

        After removal the model's parameters, buffers and forward behaviour are
        bit for bit those before :meth:`attach` (nothing was ever written to
        them).

        Examples
        --------
        >>> from da_embed.placements import HiddenScale
        >>> from da_embed.testing import tiny_gpt2
        >>> placement = HiddenScale(tiny_gpt2()).attach()
        >>> placement.remove(); placement.remove()  # twice is fine
        >>> placement.is_attached
        False
        """
        if not self.is_attached:
            return
        for h in self._handles:
            h.remove()
        for p, flag in self._frozen:
            p.requires_grad_(flag)
        self._handles, self._frozen, self._ctx = [], [], None
        del _ATTACHED[self.model]

    @contextlib.contextmanager
    def attached(self) -> Iterator["Attachment"]:
        """Context manager: attach on entry, remove on exit (if it attached).

        Yields
        ------
        Placement
            ``self``, attached inside the block.

        Examples
        --------
        >>> from da_embed.placements import EmbeddingScale
        >>> from da_embed.testing import tiny_gpt2
        >>> placement = EmbeddingScale(tiny_gpt2())
        >>> with placement.attached():
        ...     placement.is_attached
        True
        >>> placement.is_attached
        False
        """
        was_attached = self.is_attached
        self.attach()
        try:
            yield self
        finally:
            if not was_attached:
                self.remove()

    def _require_attached(self, what: str) -> None:
        if not self.is_attached:
            raise RuntimeError(f"{type(self).__name__}.{what} needs the placement attached: call "
                               f"attach() first or use `with placement.attached(): ...`")

    def _install(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError
