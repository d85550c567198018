"""``SingularValueScale``: log-scales of the singular values of chosen weight matrices (SVF)."""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import torch
from torch import nn

from .base import Placement

__all__ = ["SingularValueScale"]

#: Preset target names and the module-name patterns they stand for.
PRESETS: dict[str, tuple[str, ...]] = {
    "mlp": ("*.mlp.*",),
    "attention": ("*.attn.*", "*.self_attn.*", "*.attention.*"),
    "all": ("*",),
}


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return ()
    return (Conv1D,)


def _weight_matrix(module: nn.Module) -> torch.Tensor:
    """W with shape (out, in) such that the module computes x @ W^T + b."""
    if isinstance(module, nn.Linear):
        return module.weight  # (out, in)
    return module.weight.T  # Conv1D stores (in, out)


class SingularValueScale(Placement):
    r"""Scale the singular values of chosen weight matrices (Transformer^2's SVF).

    Every chosen matrix :math:`W = U \operatorname{diag}(\sigma) V^\top`
    (shape (out, in), rank r = min(out, in); factors computed once, in
    float64, stored in the model's dtype) becomes, for member j,

    .. math:: W'_j = U \operatorname{diag}\big(\sigma \odot \exp(x_j)\big) V^\top
              = W + U \operatorname{diag}\big(\sigma \odot \operatorname{expm1}(x_j)\big) V^\top,

    with :math:`x_j` the matrix's slice of the state.  The second form is what
    runs: a forward hook on the ``nn.Linear`` (or transformers ``Conv1D``,
    weight stored (in, out)) adds the low-rank correction to the module's own
    output,

    ``y_j = module(x_j) + ((x_j @ V) * (sigma * expm1(s_j))) @ U^T``,

    so ``x = 0`` gives exactly the unmodified model (the correction is zero),
    no weight matrix is copied per member, and members are rows of one batch
    of N * B.

    The state is the concatenation, in ``model.named_modules()`` order, of one
    slice per matrix (``slices[name]``), each ordered like the singular values
    (largest first); ``state_dim = sum(r)``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A Hugging Face causal LM.
    targets : str or sequence of str, default "mlp"
        ``"mlp"`` (GPT-2: ``mlp.c_fc``, ``mlp.c_proj``; Llama:
        ``mlp.gate_proj``, ``up_proj``, ``down_proj``), ``"attention"``
        (``attn.*`` / ``self_attn.*``), ``"all"``, or fnmatch patterns over
        qualified module names (e.g. ``["*.mlp.c_fc", "*.0.mlp.down_proj"]``).
        Only ``nn.Linear`` and ``Conv1D`` modules are taken; presets never take
        the input embedding or the LM head.

    Attributes
    ----------
    state_dim : int
        Sum of min(out, in) over the chosen matrices.
    names : list of str
        The chosen modules' qualified names, in state order.
    slices : dict of str to slice
        Where each matrix's singular-value log-scales sit in the state.

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import SingularValueScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> placement = SingularValueScale(model)  # MLP matrices, 2 per block, 2 blocks
    >>> placement.names[:2], placement.state_dim
    (['transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj'], 128)
    >>> placement.slices["transformer.h.0.mlp.c_proj"]
    slice(32, 64, None)
    >>> with placement.attached():
    ...     logits = placement.logits(random_input_ids(model), torch.zeros(2, 128))
    >>> tuple(logits.shape)
    (2, 2, 8, 97)
    """

    def __init__(self, model, targets: str | Sequence[str] = "mlp") -> None:
        super().__init__(model)
        self.targets = self._check_targets(targets)
        self.names: list[str] = []
        self.slices: dict[str, slice] = {}
        self._modules: dict[str, nn.Module] = {}
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        offset = 0
        for name, module in self._select():
            W = _weight_matrix(module).detach().to(torch.float64)  # (out, in)
            U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)  # (out, r), (r,), (r, in)
            dtype = module.weight.dtype
            self._factors[name] = (U.to(dtype), sigma.to(dtype), Vh.T.contiguous().to(dtype))
            r = sigma.numel()
            self.names.append(name)
            self._modules[name] = module
            self.slices[name] = slice(offset, offset + r)
            offset += r
        self.state_dim = offset

    @staticmethod
    def _check_targets(targets) -> tuple[str, ...]:
        if isinstance(targets, str):
            return (targets,)
        try:
            out = tuple(targets)
        except TypeError:
            raise ValueError(f"targets must be a preset ({', '.join(PRESETS)}) or a list of "
                             f"module-name patterns, got {targets!r}") from None
        if not out or not all(isinstance(t, str) for t in out):
            raise ValueError(f"targets must be a preset ({', '.join(PRESETS)}) or a non-empty "
                             f"list of module-name patterns (str), got {targets!r}")
        return out

    def _select(self) -> list[tuple[str, nn.Module]]:
        kinds = (nn.Linear, *_conv1d_type())
        excluded = {id(self.model.get_input_embeddings()), id(self.model.get_output_embeddings())}
        chosen: list[tuple[str, nn.Module]] = []
        for target in self.targets:
            is_preset = target in PRESETS
            patterns = PRESETS.get(target, (target,))
            matched = [(n, m) for n, m in self.model.named_modules()
                       if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
            usable = [(n, m) for n, m in matched if isinstance(m, kinds)
                      and not (is_preset and id(m) in excluded)]
            if not usable:
                examples = [n for n, m in self.model.named_modules() if isinstance(m, kinds)][:4]
                what = "matches no module" if not matched else "matches no nn.Linear/Conv1D module"
                raise ValueError(f"targets entry {target!r} {what} of {type(self.model).__name__}; "
                                 f"use a preset ({', '.join(PRESETS)}) or fnmatch patterns over "
                                 f"qualified names such as {examples}")
            chosen.extend(usable)
        order = {id(m): i for i, (_, m) in enumerate(self.model.named_modules())}
        unique = {id(m): (n, m) for n, m in chosen}
        return sorted(unique.values(), key=lambda nm: order[id(nm[1])])

    def _options(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "matrices": list(self.names),
                "ranks": [s.stop - s.start for s in self.slices.values()]}

    def _install(self) -> list:
        handles = []
        for name in self.names:
            hook = (lambda n: lambda module, args, output: self._hook(n, args, output))(name)
            handles.append(self._modules[name].register_forward_hook(hook))
        return handles

    def _prepare(self, states: torch.Tensor) -> dict[str, Any]:
        coef = {}
        for name in self.names:
            sigma = self._factors[name][1]  # (r,)
            coef[name] = sigma * torch.expm1(states[:, self.slices[name]])  # (N, r)
        return {"coef": coef}

    def _hook(self, name: str, args, output):
        ctx = self._ctx
        if ctx is None:
            return None
        U, _, V = self._factors[name]  # (out, r), (r,), (in, r)
        x = self._members(args[0])  # (N, B, T, in)
        n_members = x.shape[0]
        x = x.reshape(n_members, -1, x.shape[-1])  # (N, B * T, in)
        coef = ctx["coef"][name].to(x.dtype)  # (N, r)
        delta = ((x @ V) * coef[:, None, :]) @ U.T  # (N, B * T, out)
        return output + delta.reshape(output.shape)  # (N * B, T, out)
