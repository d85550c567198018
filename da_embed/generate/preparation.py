"""What a run fixes before its first cycle: the prompt's tokens, the placement, the verifier."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from ..placements import Placement, Subspace
from ..placements.base import rotary_modules
from ..protocol import max_positions
from .config import GenerationConfig
from .batch import shares_prefix_cache
from .verifiers import make_verifier

__all__ = ["RunSetup", "prepare_run"]


@dataclass(frozen=True)
class RunSetup:
    """The pieces of a run that the settings and the model determine.

    Parameters
    ----------
    prompt_ids : list of int
        The prompt's tokens (no special tokens).
    placement : Placement
        Where the state acts (a random Subspace when the settings ask for one).
    n : int
        State size.
    members : int
        M, the states that propose candidates: ensemble members, 2n + 1 sigma
        points, perturbed states, or 0 for ``filter="none"``.
    verifier : object or None
        Scores candidates (:func:`~da_embed.generate.make_verifier`); None
        for ``filter="none"``.
    shared : bool
        Whether the prompt's KV cache serves every state (the trunk does not
        depend on the state, or there is no state).

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> cfg = GenerationConfig(filter="ukf", subspace="random:2", max_new_tokens=8)
    >>> cfg = cfg.checked("the cat")
    >>> setup = prepare_run(tiny_gpt2(vocab_size=len(tok)), tok, "the cat", cfg)
    >>> setup.n, setup.members, setup.shared  # 2n + 1 sigma points
    (2, 5, True)
    """

    prompt_ids: list[int]
    placement: Placement
    n: int
    members: int
    verifier: Any
    shared: bool


def _prepare_placement(model, placement, subspace, seed: int) -> Placement:
    from ..placements.registry import make_placement
    from ..subspaces import parse_subspace

    pl = make_placement(model, placement)
    if pl.model is not model:
        raise ValueError("placement must act on the model passed to generate()")
    parsed = parse_subspace(subspace)
    if parsed is None:
        return pl
    if isinstance(pl, Subspace):
        raise ValueError("placement is already a Subspace; do not pass subspace too")
    kind, k = parsed
    if kind != "random":
        raise ValueError("generate() builds only random subspaces; build a Fisher subspace with "
                         "da_embed.fisher_subspace(...) and pass it as placement")
    if k > pl.state_dim:
        raise ValueError(f"subspace size k = {k} exceeds the state size n = {pl.state_dim}")
    return Subspace.random(pl, k, seed=seed)


def prepare_run(model, tokenizer, prompt: str, cfg: GenerationConfig, *,
                _stacklevel: int = 3) -> RunSetup:
    """Tokenise the prompt, check it against the model, build the placement and verifier.

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : transformers tokenizer of ``model``
    prompt : str
    cfg : GenerationConfig
        Checked settings (:meth:`GenerationConfig.checked`).

    Returns
    -------
    RunSetup

    Raises
    ------
    ValueError
        If the prompt has no tokens, the tokenizer does not match the model,
        the run exceeds the model's position limit, or the placement, the
        subspace or the verifier is bad.

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> cfg = GenerationConfig(filter="none", max_new_tokens=8).checked("the cat")
    >>> prepare_run(tiny_gpt2(vocab_size=len(tok)), tok, "the cat", cfg).members
    0
    """
    if getattr(model, "training", False):
        # stacklevel: the warning names the caller of generate()
        warnings.warn("the model is in training mode (dropout on): call model.eval()",
                      RuntimeWarning, stacklevel=_stacklevel)
    T_new = cfg.max_new_tokens
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise ValueError(f"prompt {prompt!r} has no tokens after tokenisation")
    V = int(model.get_input_embeddings().num_embeddings)
    if max(prompt_ids) >= V:
        raise ValueError(f"the tokenizer gives ids up to {max(prompt_ids)} but the model's "
                         f"vocabulary has {V}: tokenizer and model do not match")
    limit = max_positions(model)
    if limit is not None and not rotary_modules(model) and len(prompt_ids) + T_new > limit:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({T_new}) exceed "
                         f"the model's position limit of {limit}")
    pl = _prepare_placement(model, cfg.placement, cfg.subspace, cfg.seed)
    n = int(pl.state_dim)
    M = {"ukf": 2 * n + 1, "none": 0}.get(cfg.filter, cfg.members)
    checker = None if cfg.filter == "none" else make_verifier(cfg.verifier, model,
                                                              judge_model=cfg.judge_model)
    return RunSetup(prompt_ids, pl, n, M, checker, shares_prefix_cache(pl) or cfg.filter == "none")
