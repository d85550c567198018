"""``Subspace``: run any placement in a k-dimensional affine subspace of its state."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

from .base import Placement
from .checks import _as_tensor, _check_int

__all__ = ["Subspace"]

#: Tolerance of the orthonormality check on ``basis``.
ORTHONORMAL_TOL = 1e-6


class Subspace(Placement):
    r"""Restrict a placement's state to an affine subspace: s = s_ref + P z.

    The wrapped placement sees, for member j,

    .. math:: s_j = s_{\text{ref}} + P z_j, \qquad P \in \mathbb{R}^{n \times k},
              \ P^\top P = I_k,

    so the filter state is z (k numbers per member) and the UKF needs only
    2k + 1 sigma points.  ``z = 0`` is the reference (the unmodified model when
    ``reference`` is zero, the default).  The subspace is a thin layer: states
    (N, k) are mapped to (N, n) (``to_full``, differentiably) and handed to the
    wrapped placement, whose hooks and batching are used unchanged.

    Parameters
    ----------
    placement : Placement
        The placement to wrap (n = ``placement.state_dim``).
    basis : array_like
        P, shape (n, k), orthonormal columns (checked to 1e-6).
    reference : array_like, optional
        s_ref, shape (n,); default zeros.
    origin : str, default "given"
        A label for run metadata saying how the basis was made (the
        constructors set it).  Store the basis itself with the run.

    Attributes
    ----------
    placement : Placement
        The wrapped placement.
    basis : torch.Tensor
        P (n, k), float64.
    reference : torch.Tensor
        s_ref (n,), float64.
    state_dim : int
        k.
    origin : str
        How the basis was made ("given", "random(seed=...)",
        "gradients(num_samples=...)").

    Notes
    -----
    The gradient-principal ("Fisher") subspace of :meth:`from_gradients` is
    what makes small ensembles work on this problem (DESIGN section 8: random
    subspaces gain about 2 %, gradient subspaces about 46 %).

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import HiddenScale, Subspace
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> sub = Subspace.random(HiddenScale(model), k=4, seed=0)
    >>> sub.state_dim, tuple(sub.basis.shape)
    (4, (32, 4))
    >>> with sub.attached():
    ...     nll = sub.token_nll(random_input_ids(model), torch.zeros(9, 4))  # 2k + 1 points
    >>> tuple(nll.shape)
    (9, 2, 7)
    """

    def __init__(self, placement: Placement, basis, reference=None, *,
                 origin: str = "given") -> None:
        if not isinstance(placement, Placement):
            raise ValueError(f"placement must be a Placement (e.g. HiddenScale(model)), "
                             f"got {type(placement).__name__}")
        if isinstance(placement, Subspace):
            raise ValueError("placement is already a Subspace; compose the bases instead")
        self.placement = placement
        self.model = placement.model
        self._ctx = None
        n = int(placement.state_dim)
        P = _as_tensor(basis, "basis").detach()
        if P.dtype == torch.bool or P.is_complex():
            raise ValueError(f"basis must be real numbers, got dtype {P.dtype}")
        P = P.to(device="cpu", dtype=torch.float64)
        if P.ndim != 2 or P.shape[0] != n or not 1 <= P.shape[1] <= n:
            raise ValueError(f"basis must have shape (n, k) = ({n}, k) with 1 <= k <= {n} for "
                             f"{type(placement).__name__}, got {tuple(P.shape)}")
        if not bool(torch.isfinite(P).all()):
            raise ValueError("basis contains non-finite values (NaN or inf)")
        err = float((P.T @ P - torch.eye(P.shape[1], dtype=torch.float64)).abs().max())
        if err > ORTHONORMAL_TOL:
            raise ValueError(f"basis must have orthonormal columns (|P^T P - I| <= "
                             f"{ORTHONORMAL_TOL}), got a deviation of {err:.3g}; "
                             f"orthonormalise it, e.g. with torch.linalg.qr")
        if reference is None:
            ref = torch.zeros(n, dtype=torch.float64)
        else:
            ref = _as_tensor(reference, "reference").detach().to("cpu", torch.float64)
            if tuple(ref.shape) != (n,):
                raise ValueError(f"reference must have shape (n,) = ({n},), got {tuple(ref.shape)}")
            if not bool(torch.isfinite(ref).all()):
                raise ValueError("reference contains non-finite values (NaN or inf)")
        self.basis = P  # (n, k)
        self.reference = ref  # (n,)
        self.state_dim = int(P.shape[1])
        self.origin = str(origin)

    # ------------------------------------------------------------ constructors
    @classmethod
    def random(cls, placement: Placement, k: int, seed: int = 0, reference=None) -> "Subspace":
        """A random k-dimensional subspace (QR of a seeded Gaussian matrix).

        Parameters
        ----------
        placement : Placement
            The placement to wrap.
        k : int
            Subspace dimension, 1 <= k <= n.
        seed : int, default 0
            Seed of the Gaussian matrix (numpy ``default_rng``).
        reference : array_like, optional
            s_ref (n,); default zeros.

        Returns
        -------
        Subspace

        Examples
        --------
        >>> from da_embed.placements import EmbeddingScale, Subspace
        >>> from da_embed.testing import tiny_llama
        >>> Subspace.random(EmbeddingScale(tiny_llama()), k=3, seed=1).state_dim
        3
        """
        n = int(placement.state_dim)
        k = _check_int(k, "k", minimum=1)
        if k > n:
            raise ValueError(f"k must be <= n = {n} (the state size of "
                             f"{type(placement).__name__}), got {k}")
        A = np.random.default_rng(seed).standard_normal((n, k))  # (n, k)
        Q, R = np.linalg.qr(A)  # (n, k), (k, k)
        Q = Q * np.sign(np.where(np.diag(R) == 0, 1.0, np.diag(R)))  # unique: diag(R) > 0
        return cls(placement, Q, reference, origin=f"random(seed={seed})")

    @classmethod
    def from_gradients(cls, placement: Placement, G, k: int, reference=None) -> "Subspace":
        """The top-k principal directions of a matrix of gradients ("Fisher" subspace).

        The basis is the k leading right singular vectors of G, i.e. the top
        eigenvectors of the empirical Fisher matrix G^T G (no centring).  Rows
        are typically per-token gradients of the NLL w.r.t. the state on
        tuning text.

        Parameters
        ----------
        placement : Placement
            The placement to wrap; G holds gradients with respect to its state.
        G : array_like
            Gradients, shape (num_samples, n).
        k : int
            Subspace dimension, 1 <= k <= min(num_samples, n).
        reference : array_like, optional
            s_ref (n,), the point the subspace passes through; default zeros.

        Returns
        -------
        Subspace
            Its ``origin`` records the number of gradient rows.

        Examples
        --------
        >>> import numpy as np
        >>> from da_embed.placements import HiddenScale, Subspace
        >>> from da_embed.testing import tiny_gpt2
        >>> G = np.random.default_rng(0).standard_normal((50, 32))
        >>> Subspace.from_gradients(HiddenScale(tiny_gpt2()), G, k=5).state_dim
        5
        """
        n = int(placement.state_dim)
        k = _check_int(k, "k", minimum=1)
        Gt = _as_tensor(G, "G").detach()
        if Gt.dtype == torch.bool or Gt.is_complex():
            raise ValueError(f"G must be real numbers, got dtype {Gt.dtype}")
        Gt = Gt.to("cpu", torch.float64)
        if Gt.ndim != 2 or Gt.shape[1] != n:
            raise ValueError(f"G must have shape (num_samples, n) = (num_samples, {n}), "
                             f"got {tuple(Gt.shape)}")
        if not bool(torch.isfinite(Gt).all()):
            raise ValueError("G contains non-finite values (NaN or inf)")
        if k > min(Gt.shape):
            raise ValueError(f"k must be <= min(num_samples, n) = {min(Gt.shape)}, got {k}")
        _, S, Vh = torch.linalg.svd(Gt, full_matrices=False)  # (r,), (r, n)
        if float(S[k - 1]) <= float(S[0]) * 1e-12:
            raise ValueError(f"G has rank < k = {k}: its gradients span fewer directions")
        P = Vh[:k].T  # (n, k)
        # Deterministic signs: the largest-magnitude entry of each column is positive.
        idx = P.abs().argmax(dim=0)
        P = P * torch.sign(P[idx, torch.arange(k)])
        return cls(placement, P, reference, origin=f"gradients(num_samples={Gt.shape[0]})")

    # ---------------------------------------------------------------- mapping
    def to_full(self, z) -> torch.Tensor:
        """Map subspace states z (N, k) to full states s = s_ref + z P^T (N, n).

        Parameters
        ----------
        z : torch.Tensor or numpy.ndarray
            Shape (N, k); may require grad.

        Returns
        -------
        torch.Tensor
            Shape (N, n), float64 (the mapping runs in float64; the wrapped
            placement casts to the model's dtype).

        Examples
        --------
        >>> import torch
        >>> from da_embed.placements import HiddenScale, Subspace
        >>> from da_embed.testing import tiny_gpt2
        >>> sub = Subspace.random(HiddenScale(tiny_gpt2()), k=2, reference=torch.ones(32))
        >>> torch.equal(sub.to_full(torch.zeros(1, 2))[0], torch.ones(32, dtype=torch.float64))
        True
        """
        z = self._check_z(z)
        dtype = torch.promote_types(z.dtype, torch.float64)  # map in float64 at least
        P = self.basis.to(device=z.device, dtype=dtype)  # (n, k)
        ref = self.reference.to(device=z.device, dtype=dtype)  # (n,)
        return ref + z.to(dtype) @ P.T  # (N, n)

    def project(self, states) -> torch.Tensor:
        """Project full states onto the subspace: z = (s - s_ref) P (N, k).

        Parameters
        ----------
        states : torch.Tensor or numpy.ndarray
            Shape (N, n).

        Returns
        -------
        torch.Tensor
            Shape (N, k); ``to_full(project(s))`` is the orthogonal projection
            of s onto the affine subspace.

        Examples
        --------
        >>> import torch
        >>> from da_embed.placements import HiddenScale, Subspace
        >>> from da_embed.testing import tiny_gpt2
        >>> sub = Subspace.random(HiddenScale(tiny_gpt2()), k=3)
        >>> z = torch.randn(2, 3, dtype=torch.float64)
        >>> torch.allclose(sub.project(sub.to_full(z)), z)
        True
        """
        s = _as_tensor(states, "states")
        n = int(self.placement.state_dim)
        if s.ndim != 2 or s.shape[1] != n:
            raise ValueError(f"states must have shape (N, n) = (N, {n}), got {tuple(s.shape)}")
        if not s.dtype.is_floating_point:
            s = s.to(torch.float64)
        P = self.basis.to(device=s.device, dtype=s.dtype)
        return (s - self.reference.to(device=s.device, dtype=s.dtype)) @ P  # (N, k)

    def _check_z(self, z) -> torch.Tensor:
        t = _as_tensor(z, "states")
        k = self.state_dim
        if t.ndim != 2 or t.shape[1] != k or t.shape[0] < 1:
            raise ValueError(f"states must have shape (N, k) = (N, {k}) with N >= 1 for "
                             f"Subspace(k={k}), got {tuple(t.shape)}")
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"states must be real numbers, got dtype {t.dtype}")
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError("states must be finite; got NaN or inf")
        return t if t.dtype.is_floating_point else t.to(torch.float64)  # (N, k)

    # ------------------------------------------------- delegation to the inner
    @property
    def is_attached(self) -> bool:
        """Whether the wrapped placement is attached."""
        return self.placement.is_attached

    def attach(self) -> "Subspace":
        """Attach the wrapped placement (see :meth:`Placement.attach`).

        Returns
        -------
        Subspace
            ``self``.

        Examples
        --------
        >>> from da_embed.placements import HiddenScale, Subspace
        >>> from da_embed.testing import tiny_gpt2
        >>> sub = Subspace.random(HiddenScale(tiny_gpt2()), k=2).attach()
        >>> sub.placement.is_attached
        True
        >>> sub.remove()
        """
        self.placement.attach()
        return self

    def remove(self) -> None:
        """Remove the wrapped placement; harmless if not attached.

        Examples
        --------
        >>> from da_embed.placements import HiddenScale, Subspace
        >>> from da_embed.testing import tiny_gpt2
        >>> Subspace.random(HiddenScale(tiny_gpt2()), k=2).remove()
        """
        self.placement.remove()

    def _check_states(self, states) -> torch.Tensor:
        return self._check_z(states)  # (N, k); cast after mapping, by the inner placement

    @contextlib.contextmanager
    def _activated(self, z: torch.Tensor) -> Iterator[None]:
        full = self.placement._check_states(self.to_full(z))  # (N, n)
        with self.placement._activated(full):
            yield

    def _run(self, input_ids, attention_mask, n_members):
        return self.placement._run(input_ids, attention_mask, n_members)

    def _options(self) -> dict[str, Any]:
        return {"k": self.state_dim, "n": int(self.placement.state_dim), "origin": self.origin,
                "placement": self.placement.describe()}
