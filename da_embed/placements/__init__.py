"""Placements: where the scale state enters a frozen Hugging Face causal LM.

Every placement applies N members as one batch, costs no weight copy per
member, is exactly the unmodified model at the zero state, and restores the
model bit for bit when removed.

===========================  ==========================  ==========================================
placement                    state (n)                   where it hooks
===========================  ==========================  ==========================================
:class:`EmbeddingScale`      d_model                     output of the input embedding
:class:`HiddenScale`         d_model                     input of the LM head (trunk runs once)
:class:`SingularValueScale`  sum of min(out, in)         outputs of chosen Linear / Conv1D modules
:class:`RotaryScale`         1 or h, + h, + h - 1        rotary (cos, sin); q_proj / k_proj outputs
:class:`Subspace`            k (wraps any of the above)  s = s_ref + P z
===========================  ==========================  ==========================================

Examples
--------
>>> import torch
>>> from da_embed.placements import SingularValueScale
>>> from da_embed.testing import tiny_llama, random_input_ids
>>> model = tiny_llama()
>>> ids = random_input_ids(model)
>>> with SingularValueScale(model).attached() as placement:
...     nll = placement.token_nll(ids, torch.zeros(2, placement.state_dim))
>>> tuple(nll.shape)
(2, 2, 7)
"""

from .base import Placement
from .embedding import EmbeddingScale
from .hidden import HiddenScale
from .rotary import RotaryScale, givens_matrix
from .singular import SingularValueScale
from .subspace import Subspace

__all__ = ["Placement", "EmbeddingScale", "HiddenScale", "SingularValueScale", "RotaryScale",
           "Subspace", "givens_matrix"]
