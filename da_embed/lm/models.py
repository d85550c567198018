"""Loading a local Hugging Face causal LM and its tokenizer, with clear errors.

Nothing is downloaded: the model is read from a folder written by
``save_pretrained`` (``local_files_only``).
"""

from __future__ import annotations

import os

__all__ = ["load_model"]


def load_model(path):
    """A local Hugging Face causal LM and its tokenizer, with clear errors.

    Parameters
    ----------
    path : str or PathLike
        A folder written by ``save_pretrained`` (model and tokenizer).

    Returns
    -------
    model, tokenizer

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it holds no loadable causal LM or tokenizer.

    Examples
    --------
    >>> import tempfile
    >>> from transformers.utils import logging as hf_logging
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_llama
    >>> hf_logging.disable_progress_bar()
    >>> tokenizer = train_tokenizer("hello world. " * 50, vocab_size=300)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     tiny_llama(vocab_size=len(tokenizer)).save_pretrained(folder)
    ...     _ = tokenizer.save_pretrained(folder)
    ...     model, tok = load_model(folder)
    >>> type(model).__name__, model.training, len(tok) == len(tokenizer)
    ('LlamaForCausalLM', False, True)
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"--model path does not exist: {p!r} (give a folder written by "
                                "save_pretrained, holding a causal LM and its tokenizer)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a local model needs no loading bar
    try:
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load a causal LM and its tokenizer from {p!r}: "
                         f"{first}") from None
    model.eval()
    return model, tokenizer
