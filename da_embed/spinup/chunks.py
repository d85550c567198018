"""The corpus as chunks: documents, the chunk index, the tracks, and the chunks' NLL terms.

Chunk c is chunk ``starts[c]`` of document ``docs[doc_of[c]]``; its context
never reaches into another document.  Private helpers of :mod:`da_embed.spinup`
(no public names).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..observations import TokenNLLObservation, _hidden_parts
from ..placements import Placement
from ..protocol import PrequentialConfig, max_positions
from .config import SpinupConfig

__all__: list[str] = []


class _FastChunks:
    """NLL terms of chunks of a ``HiddenScale`` (or a Subspace of one), vectorised.

    Uses each chunk operator's cached final hidden states (the trunk ran once,
    when the operator was built); float64 throughout, so the E-step's Newton
    iterations converge cleanly.
    """

    fast = True

    def __init__(self, ops, head, sub):
        W, b = head
        self.W, self.b = W, b  # (V, d), (V,) or None, float64
        self.h = torch.stack([op._h for op in ops]).to(torch.float64)  # (C, L, d)
        self.y = torch.stack([op._y for op in ops])  # (C, L)
        self.P = None if sub is None else sub.basis.to(torch.float64)  # (n_full, n)
        self.ref = None if sub is None else sub.reference.to(torch.float64)  # (n_full,)
        self.summaries = torch.as_tensor(np.stack([op.summary_ for op in ops]))  # (C, d)

    def _full(self, Z):
        return Z if self.P is None else self.ref + Z @ self.P.T  # (C, n_full)

    def values(self, Z: torch.Tensor) -> torch.Tensor:
        """Chunk NLL sums (C,) for states Z (C, n); differentiable."""
        u = self.h * torch.exp(self._full(Z)).unsqueeze(1)  # (C, L, d)
        logits = F.linear(u, self.W, self.b)  # (C, L, V)
        C, L, V = logits.shape
        return F.cross_entropy(logits.reshape(-1, V), self.y.reshape(-1),
                               reduction="none").reshape(C, L).sum(1)

    def terms(self, Z: torch.Tensor, exact: bool):
        """Values (C,), gradients (C, n) and Hessian blocks (C, n, n) at Z (C, n).

        With u = h * exp(s), p = softmax(W u + b) and g_u = W^T (p - e_y), a
        token's gradient in s is ``u * g_u`` and its exact Hessian
        ``diag(u) W^T (diag p - p p^T) W diag(u) + diag(u * g_u)`` (mapped by
        the subspace basis P when there is one).
        """
        with torch.no_grad():
            u = self.h * torch.exp(self._full(Z)).unsqueeze(1)  # (C, L, d)
            logp = torch.log_softmax(F.linear(u, self.W, self.b), dim=-1)  # (C, L, V)
            val = -logp.gather(-1, self.y.unsqueeze(-1)).squeeze(-1).sum(1)  # (C,)
            p = logp.exp()
            r = p.clone()
            r.scatter_add_(-1, self.y.unsqueeze(-1), -torch.ones_like(logp[..., :1]))
            ug = u * (r @ self.W)  # (C, L, d): per-token gradients in s (DESIGN section 8)
            G = ug if self.P is None else ug @ self.P  # (C, L, n)
            grad = G.sum(1)
            if not exact:
                return val, grad, G.mT @ G  # empirical Fisher
            Pm = torch.eye(u.shape[-1], dtype=u.dtype) if self.P is None else self.P
            hess = Pm.T @ torch.diag_embed(ug.sum(1)) @ Pm  # (C, n, n)
            C, L, V, n = u.shape[0], u.shape[1], self.W.shape[0], Pm.shape[1]
            step = max(1, 2 ** 22 // (L * V * n))  # chunks per group: bounds (c, L, V, n)
            WT = self.W.T.contiguous()  # (d, V)
            for c in range(0, C, step):
                uP = u[c:c + step].unsqueeze(-2) * Pm.T  # (c, L, n, d)
                Y = uP @ WT  # (c, L, n, V): d logits / d s
                Yp = Y * p[c:c + step].unsqueeze(-2)  # (c, L, n, V)
                m = Yp.sum(-1)  # (c, L, n): E_p[d logit / d s]
                hess[c:c + step] += (Yp @ Y.mT).sum(1) - m.mT @ m
        return val, grad, hess


class _GenericChunks:
    """NLL terms of chunks of any placement, one chunk at a time (autograd)."""

    fast = False

    def __init__(self, ops):
        self.ops = ops
        self.summaries = None

    @staticmethod
    def nll_and_summary(op: TokenNLLObservation, x: torch.Tensor):
        """Chunk NLL sum (differentiable in x (n,)) and its summary (d,) under x."""
        head = op.placement.model.get_output_embeddings()
        captured = {}

        def grab(module, args):  # before the placement's own head hook: unscaled input
            captured["h"] = args[0]

        handle = head.register_forward_pre_hook(grab, prepend=True)
        try:
            nll = op.placement.token_nll(op._inputs, x.unsqueeze(0), targets=op._targets)
        finally:
            handle.remove()
        L = op.nobs
        summary = captured["h"][0, -L:].detach().to(torch.float64).mean(0).cpu()  # (d,)
        return nll[0, 0, -L:].sum().to(torch.float64), summary

    def values(self, Z: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.nll_and_summary(op, z)[0] for op, z in zip(self.ops, Z)])

    def terms(self, Z: torch.Tensor, exact: bool):
        vals, grads, hess = [], [], []
        for op, z in zip(self.ops, Z):
            x = z.detach().cpu().numpy()
            v, g = op.value_and_gradient(x)
            vals.append(float(np.sum(v)))
            grads.append(g)
            if exact:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                f = lambda s, op=op: self.nll_and_summary(op, s)[0]  # noqa: E731
                with sdpa_kernel([SDPBackend.MATH]):  # fused CPU kernels: no 2nd derivative
                    hess.append(torch.autograd.functional.hessian(f, z.detach()).detach())
            else:
                J = torch.as_tensor(op.jacobian(x))  # (L, n)
                hess.append(J.T @ J)
        return (torch.tensor(vals, dtype=torch.float64),
                torch.as_tensor(np.stack(grads), dtype=torch.float64),
                torch.stack(hess).to(torch.float64))


class _ChunkCache:
    """Chunk observation operators of a corpus, built on demand, kept in an LRU.

    Chunk c is chunk ``starts[c]`` of document ``docs[doc_of[c]]`` (its context
    never reaches into another document).
    """

    def __init__(self, placement: Placement, docs: list, doc_of: np.ndarray,
                 starts: np.ndarray, protocol: PrequentialConfig, capacity: int):
        self.placement, self.docs, self.doc_of, self.starts = placement, docs, doc_of, starts
        self.protocol, self.capacity = protocol, capacity
        self._ops: OrderedDict = OrderedDict()
        parts = _hidden_parts(placement)
        self._head = None
        self._sub = None if parts is None else parts[1]
        if parts is not None:
            head = parts[0].model.get_output_embeddings()
            self._head = (head.weight.detach().to(torch.float64),
                          None if head.bias is None else head.bias.detach().to(torch.float64))
        self.fast = None  # decided by the first operator's self-check

    def op(self, c: int) -> TokenNLLObservation:
        op = self._ops.get(c)
        if op is None:
            start, L = int(self.starts[c]), self.protocol.chunk
            a = max(0, start - self.protocol.context)
            op = TokenNLLObservation(self.placement, self.docs[self.doc_of[c]][a:start + L], L)
            if self.fast is None:
                self.fast = bool(op.fast_ and self._head is not None)
            self._ops[c] = op
            if len(self._ops) > self.capacity:
                self._ops.popitem(last=False)
        else:
            self._ops.move_to_end(c)
        return op

    def chunks(self, indices) -> _FastChunks | _GenericChunks:
        ops = [self.op(int(c)) for c in indices]
        if self.fast:
            return _FastChunks(ops, self._head, self._sub)
        return _GenericChunks(ops)


def _check_streams(placement: Placement, token_ids, protocol: PrequentialConfig) -> list:
    """The corpus as a list of 1-D int64 documents (``max_tokens`` caps their total)."""
    def as_ids(x, what):
        try:
            arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be a sequence of token ids: {exc}") from None
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
        return arr.astype(np.int64)

    if isinstance(token_ids, (list, tuple)) and len(token_ids) and np.ndim(token_ids[0]) > 0:
        docs = [as_ids(d, f"token_ids[{i}]") for i, d in enumerate(token_ids)]
        if any(d.ndim != 1 for d in docs):
            raise ValueError("token_ids: every document must be a 1-D sequence of token ids")
    else:
        arr = as_ids(token_ids, "token_ids")
        if arr.ndim not in (1, 2):
            raise ValueError(f"token_ids must be 1-D (one stream), 2-D (streams, tokens) or a "
                             f"list of 1-D documents, got shape {arr.shape}")
        docs = [arr] if arr.ndim == 1 else list(arr)
    if protocol.max_tokens is not None:
        kept, left = [], protocol.max_tokens
        for d in docs:
            if left <= 0:
                break
            kept.append(d[:left])
            left -= kept[-1].size
        docs = kept
    if not docs or sum(d.size for d in docs) == 0:
        raise ValueError("token_ids is empty (the corpus has no tokens)")
    V = placement.vocab_size
    lo = min(int(d.min()) for d in docs if d.size)
    hi = max(int(d.max()) for d in docs if d.size)
    if lo < 0 or hi >= V:
        raise ValueError(f"token ids must lie in [0, {V}) (the model's vocabulary), got "
                         f"[{lo}, {hi}]: tokenizer and model do not match")
    limit = max_positions(placement.model)
    if limit is not None and protocol.window > limit:
        raise ValueError(f"context + chunk - 1 = {protocol.window} tokens exceed the model's "
                         f"position limit of {limit}; lower context or chunk")
    return docs


def _chunk_index(docs: list, protocol: PrequentialConfig, K: int):
    """Per chunk its document and first target (doc_of, starts), and the valid window starts."""
    plain = PrequentialConfig(chunk=protocol.chunk, context=protocol.context)
    doc_of, starts = [], []
    for i, d in enumerate(docs):
        st = plain.starts(d.size)
        doc_of.extend([i] * st.size)
        starts.extend(st.tolist())
    doc_of, starts = np.asarray(doc_of, dtype=np.int64), np.asarray(starts, dtype=np.int64)
    C = starts.size
    first = np.arange(max(0, C - K + 1))
    valid = first[doc_of[first] == doc_of[first + K - 1]] if C >= K else first
    return doc_of, starts, valid


def _tracks(doc_of: np.ndarray, K: int, B: int):
    """Strong-constraint schedule: consecutive windows of K chunks, cut into B tracks.

    Returns the first chunk of every window in stream order (documents one
    after the other), whether the window starts its document, and the track
    length; track j is windows ``j * length .. (j + 1) * length - 1``, walked
    one window per step, the state carried from each window into the next (the windows
    left over when they do not fill B tracks are not used).
    """
    first, starts_doc = [], []
    C = doc_of.size
    c = 0
    while c + K <= C:
        if doc_of[c] != doc_of[c + K - 1]:  # the document's remainder is too short
            c = int(np.searchsorted(doc_of, doc_of[c], side="right"))
            continue
        first.append(c)
        starts_doc.append(c == 0 or doc_of[c - 1] != doc_of[c])
        c += K
    first, starts_doc = np.asarray(first, dtype=np.int64), np.asarray(starts_doc, dtype=bool)
    return first, starts_doc, max(1, first.size // B)


@dataclass(frozen=True)
class _Corpus:
    """The training corpus cut into chunks (:func:`_chunk_index`) and tracks (:func:`_tracks`)."""

    docs: list
    doc_of: np.ndarray
    starts: np.ndarray
    track_first: np.ndarray
    track_reset: np.ndarray
    track_len: int


def _corpus(placement: Placement, token_ids, cfg: SpinupConfig) -> _Corpus:
    """Check the corpus and index its chunks and tracks (ValueError if no window fits)."""
    protocol, K = cfg.protocol, cfg.window
    docs = _check_streams(placement, token_ids, protocol)
    doc_of, starts, valid = _chunk_index(docs, protocol, K)
    track_first, track_reset, track_len = _tracks(doc_of, K, cfg.batch)
    if valid.size == 0:
        raise ValueError(f"the corpus has {starts.size} chunks of {cfg.chunk} tokens and no "
                         f"document with window = {K} consecutive chunks: give more text or "
                         f"lower window/chunk")
    return _Corpus(docs, doc_of, starts, track_first, track_reset, track_len)
