"""``RotaryScale``: log-scales of rotary frequencies, query phases and Givens mixing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Placement, rotary_modules

__all__ = ["RotaryScale", "givens_matrix"]

#: State components, in state order.  ``base`` and ``frequency`` exclude each other.
COMPONENTS = ("base", "frequency", "phase", "givens")
#: The documented modes (any "+"-joined combination of COMPONENTS is accepted).
MODES = ("base", "frequency", "frequency+phase", "givens")


def givens_matrix(angles: torch.Tensor, half: int) -> torch.Tensor:
    r"""Product of Givens rotations mixing adjacent rotary planes.

    With ``h = half`` rotary planes, plane p spans coordinates (p, p + h) (the
    ``rotate_half`` layout of Hugging Face).  Rotation :math:`G_p(\theta_p)`,
    p = 0 .. h - 2, rotates coordinates (p, p + 1) **and** (p + h, p + 1 + h)
    by :math:`\theta_p` (i.e. it mixes rotary planes p and p + 1, seen as complex
    numbers, by a real rotation).  The result is
    :math:`G = G_0 G_1 \cdots G_{h-2}`, orthogonal, and exactly the identity at
    zero angles.

    Parameters
    ----------
    angles : torch.Tensor
        Shape (N, h - 1), radians.
    half : int
        h, the number of rotary frequencies (d_rot / 2).

    Returns
    -------
    torch.Tensor
        Shape (N, 2h, 2h): one orthogonal matrix per member, acting on column
        vectors (``q' = G q``).

    Examples
    --------
    >>> import torch
    >>> G = givens_matrix(torch.tensor([[0.3, -1.0, 2.0]]), half=4)  # (1, 8, 8)
    >>> torch.allclose(G[0] @ G[0].T, torch.eye(8), atol=1e-6)
    True
    >>> torch.equal(givens_matrix(torch.zeros(1, 3), half=4)[0], torch.eye(8))
    True
    """
    N, m = angles.shape
    if m != half - 1:
        raise ValueError(f"angles must have shape (N, half - 1) = (N, {half - 1}), "
                         f"got {tuple(angles.shape)}")
    D = 2 * half
    eye = torch.eye(D, dtype=angles.dtype, device=angles.device).expand(N, D, D)
    cols = list(eye.unbind(-1))  # D columns of shape (N, D)
    c, s = torch.cos(angles), torch.sin(angles)  # (N, h - 1)
    for p in range(m):  # M <- M @ G_p acts on columns (p, p + 1) and (p + h, p + 1 + h)
        cp, sp = c[:, p, None], s[:, p, None]  # (N, 1)
        for a, b in ((p, p + 1), (p + half, p + 1 + half)):
            ca, cb = cols[a], cols[b]
            cols[a], cols[b] = cp * ca + sp * cb, cp * cb - sp * ca
    return torch.stack(cols, dim=-1)  # (N, D, D)


def _parse_mode(mode) -> tuple[str, ...]:
    if not isinstance(mode, str) or not mode:
        raise ValueError(f"mode must be a string such as {', '.join(map(repr, MODES))}, "
                         f"got {mode!r}")
    parts = tuple(p.strip() for p in mode.split("+"))
    unknown = [p for p in parts if p not in COMPONENTS]
    if unknown or len(set(parts)) != len(parts) or {"base", "frequency"} <= set(parts):
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))} (or a '+'-joined "
                         f"combination of {COMPONENTS} without both 'base' and 'frequency'), "
                         f"got {mode!r}")
    return tuple(c for c in COMPONENTS if c in parts)


class RotaryScale(Placement):
    r"""Adapt the rotary position embeddings (the Adaptive Transformer seed).

    With h = d_rot / 2 rotary frequencies :math:`\theta_i` (the model's
    ``inv_freq`` buffer; d_rot = d_head for Llama) a query or key at position m
    is rotated in plane i (coordinates i, i + h) by the angle
    :math:`m\,\theta_i`.  The state of member j is the concatenation of the
    components named in ``mode`` (in this order; ``slices`` says where each
    sits):

    ``base`` (1 number x)
        the RoPE base is multiplied by :math:`e^{x}`:
        :math:`\theta_i' = \theta_i \exp(-x \cdot 2i/d_{rot})` (exact for the
        default RoPE, :math:`\theta_i = \text{base}^{-2i/d_{rot}}`; for scaled
        RoPE types the same factor multiplies the stored frequencies).
    ``frequency`` (h numbers x)
        :math:`\theta_i' = \theta_i \exp(x_i)`.
    ``phase`` (h numbers :math:`\phi`)
        queries are rotated by an extra :math:`\phi_i` in plane i, so a query
        at m is rotated by :math:`m\theta_i' + \phi_i` and a key at n by
        :math:`n\theta_i'`.  (A phase shared by queries and keys cancels in
        :math:`q \cdot k` because RoPE is relative; on queries only it shifts
        the relative angle by :math:`-\phi_i`.)
    ``givens`` (h - 1 angles)
        before RoPE, queries and keys of every head and layer are mixed by the
        same orthogonal :math:`G = G_0 \cdots G_{h-2}` (see
        :func:`givens_matrix`): :math:`q \mapsto G q,\ k \mapsto G k`, so the
        score becomes :math:`q^\top G^\top R_{n-m} G k`.

    Modes: ``"base"``, ``"frequency"`` (default), ``"frequency+phase"``,
    ``"givens"``, or any '+'-joined combination (e.g. ``"frequency+givens"``).
    The zero state is exactly the unmodified model.

    Where it hooks: frequencies through a forward hook on the rotary module
    (Llama: ``model.model.rotary_emb``) that recomputes its (cos, sin) output
    per member, differentiably (the module's own forward is under
    ``no_grad``): with the module's angles ``a = positions * inv_freq`` and its
    output (cos a, sin a), the new angle is ``a * exp(x) = a + delta`` with
    ``delta = a * expm1(x)`` (N, B, T, h), and (cos, sin) are rotated by delta
    by angle addition, so ``x = 0`` reproduces the module's output bit for
    bit in every dtype; phases and
    Givens through forward hooks on every attention's ``q_proj`` / ``k_proj``
    output.  Members are rows of one batch of N * B.  The ``inv_freq`` buffers
    are never written.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM with rotary position embeddings (a module carrying an
        ``inv_freq`` buffer, as in the Llama family).
    mode : str, default "frequency"
        Which components the state holds (see above).

    Attributes
    ----------
    state_dim : int
        1 (base) or h (frequency), + h (phase), + h - 1 (givens).
    n_frequencies : int
        h.
    slices : dict of str to slice
        Where each component sits in the state.

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import RotaryScale
    >>> from da_embed.testing import tiny_llama, random_input_ids
    >>> model = tiny_llama()  # d_head = 8, so h = 4
    >>> placement = RotaryScale(model, mode="frequency+phase")
    >>> placement.state_dim, placement.slices["phase"]
    (8, slice(4, 8, None))
    >>> with placement.attached():
    ...     logits = placement.logits(random_input_ids(model), torch.zeros(3, 8))
    >>> torch.allclose(logits[0], model(random_input_ids(model)).logits, atol=1e-6)
    True
    """

    def __init__(self, model, mode: str = "frequency") -> None:
        super().__init__(model)
        rotary = rotary_modules(self.model)
        if not rotary:
            raise ValueError(f"RotaryScale needs a model with rotary position embeddings; "
                             f"{type(self.model).__name__} has none")
        self.mode = "+".join(_parse_mode(mode))
        parts = self.mode.split("+")
        sizes = {int(m.inv_freq.numel()) for _, m in rotary}
        if len(sizes) != 1:
            raise ValueError(f"RotaryScale needs one set of rotary frequencies; "
                             f"{type(self.model).__name__} has rotary modules with {sorted(sizes)}")
        h = sizes.pop()
        self.n_frequencies = h
        self._rotary = [m for _, m in rotary]
        if "givens" in parts and h < 2:
            raise ValueError(f"mode {mode!r}: Givens mixing needs at least 2 rotary frequencies, "
                             f"the model has {h}")
        self._attention: list[tuple[nn.Module, int]] = []
        if "phase" in parts or "givens" in parts:
            self._attention = self._find_attention()
        sizes_by_part = {"base": 1, "frequency": h, "phase": h, "givens": h - 1}
        self.slices: dict[str, slice] = {}
        offset = 0
        for part in parts:
            self.slices[part] = slice(offset, offset + sizes_by_part[part])
            offset += sizes_by_part[part]
        self.state_dim = offset

    def _find_attention(self) -> list[tuple[nn.Module, int]]:
        config = getattr(self.model, "config", None)
        found = []
        for _, mod in self.model.named_modules():
            q, k = getattr(mod, "q_proj", None), getattr(mod, "k_proj", None)
            if not (isinstance(q, nn.Module) and isinstance(k, nn.Module)):
                continue
            head_dim = getattr(mod, "head_dim", None) or getattr(config, "head_dim", None)
            if head_dim is None:
                head_dim = config.hidden_size // config.num_attention_heads
            if 2 * self.n_frequencies > head_dim:
                raise ValueError(f"RotaryScale: rotary width {2 * self.n_frequencies} exceeds the "
                                 f"head dimension {head_dim} of {type(self.model).__name__}")
            found.append((mod, int(head_dim)))
        if not found:
            raise ValueError(f"RotaryScale mode {self.mode!r} needs attention modules with "
                             f"separate q_proj and k_proj; {type(self.model).__name__} has none")
        return found

    def _options(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def _install(self) -> list:
        handles = []
        if "base" in self.slices or "frequency" in self.slices:
            for mod in self._rotary:
                handles.append(mod.register_forward_hook(self._rotary_hook, with_kwargs=True))
        for attn, head_dim in self._attention:
            handles.append(attn.q_proj.register_forward_hook(
                (lambda d: lambda m, a, o: self._qk_hook(o, d, query=True))(head_dim)))
            handles.append(attn.k_proj.register_forward_hook(
                (lambda d: lambda m, a, o: self._qk_hook(o, d, query=False))(head_dim)))
        return handles

    def _prepare(self, states: torch.Tensor) -> dict[str, Any]:
        h = self.n_frequencies
        ctx: dict[str, Any] = {"log_mult": None, "phase": None, "givens": None}
        if "base" in self.slices:
            x = states[:, self.slices["base"]]  # (N, 1)
            expo = torch.arange(0, 2 * h, 2, dtype=states.dtype, device=states.device) / (2 * h)
            ctx["log_mult"] = -x * expo  # (N, h)
        if "frequency" in self.slices:
            ctx["log_mult"] = states[:, self.slices["frequency"]]  # (N, h)
        if "phase" in self.slices:
            phi = states[:, self.slices["phase"]]  # (N, h)
            ctx["phase"] = (torch.cos(phi), torch.sin(phi))
        if "givens" in self.slices:
            ctx["givens"] = givens_matrix(states[:, self.slices["givens"]], h)  # (N, 2h, 2h)
        return ctx

    def _rotary_hook(self, module, args, kwargs, output):
        ctx = self._ctx
        if ctx is None or ctx["log_mult"] is None:
            return None
        x = args[0] if args else kwargs["x"]
        pos = kwargs.get("position_ids", args[1] if len(args) > 1 else None)  # (Bp, T)
        if pos is None:
            raise ValueError("RotaryScale: the rotary module was called without position_ids")
        cos0, sin0 = output  # (Bp, T, 2h) each: cat(c, c) * scaling, cat(s, s) * scaling
        h = self.n_frequencies
        if cos0.shape[-1] != 2 * h:
            raise ValueError(f"RotaryScale: {type(module).__name__} returned cos of width "
                             f"{cos0.shape[-1]}, expected 2 * {h} (Hugging Face layout)")
        n_members = ctx["n_members"]
        rows = self._members(x).shape[1]  # B
        cdt = torch.promote_types(torch.float32, cos0.dtype)
        # The module's own angles theta * pos, in float32 exactly as it computes them.
        ang = pos[..., None].float() * module.inv_freq.to(device=x.device, dtype=torch.float)
        ang, c0, s0 = ang.to(cdt), cos0[..., :h].to(cdt), sin0[..., :h].to(cdt)  # (Bp, T, h)
        if ang.shape[0] == 1:
            ang, c0, s0 = ang[None], c0[None], s0[None]  # (1, 1, T, h)
        else:
            ang, c0, s0 = self._members(ang), self._members(c0), self._members(s0)  # (N, B, T, h)
        # New angle = ang * exp(x) = ang + delta; rotate the module's own (cos, sin) by
        # delta (angle addition), so x = 0 reproduces its output bit for bit.
        delta = ang * torch.expm1(ctx["log_mult"].to(cdt))[:, None, None, :]  # (N, B or 1, T, h)
        cd, sd = torch.cos(delta), torch.sin(delta)
        c, s = c0 * cd - s0 * sd, s0 * cd + c0 * sd  # (N, B or 1, T, h)
        c = c.expand(n_members, rows, *c.shape[2:])  # (N, B, T, h)
        s = s.expand(n_members, rows, *s.shape[2:])
        cos = torch.cat((c, c), dim=-1).to(cos0.dtype).reshape(n_members * rows, -1, 2 * h)
        sin = torch.cat((s, s), dim=-1).to(sin0.dtype).reshape(n_members * rows, -1, 2 * h)
        return cos, sin  # (N * B, T, 2h) each

    def _qk_hook(self, output, head_dim: int, query: bool):
        ctx = self._ctx
        if ctx is None:
            return None
        G, phase = ctx["givens"], ctx["phase"] if query else None
        if G is None and phase is None:
            return None
        h = self.n_frequencies
        y = self._members(output)  # (N, B, T, H * d_head)
        n_members = y.shape[0]
        y = y.reshape(n_members, -1, head_dim)  # (N, B * T * H, d_head)
        rot, rest = y[..., : 2 * h], y[..., 2 * h:]  # (N, M, 2h), (N, M, d_head - 2h)
        if G is not None:
            rot = rot @ G.to(rot.dtype).transpose(1, 2)  # (N, M, 2h): rows q -> G q
        if phase is not None:
            c, s = (t.to(rot.dtype)[:, None, :] for t in phase)  # (N, 1, h)
            q1, q2 = rot[..., :h], rot[..., h:]  # (N, M, h)
            rot = torch.cat((q1 * c - q2 * s, q2 * c + q1 * s), dim=-1)  # (N, M, 2h)
        if rest.shape[-1]:
            rot = torch.cat((rot, rest), dim=-1)  # (N, M, d_head)
        return rot.reshape(output.shape)  # (N * B, T, H * d_head)
