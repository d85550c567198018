"""bench_lm: the reference models, the test-text prefix, saved subspace bases."""

from __future__ import annotations

import os
from pathlib import Path

from _lm_grids import MODELS, perf


# ----------------------------------------------------------------------------
# Models and text
# ----------------------------------------------------------------------------
def reference_config(quick: bool):
    from da_embed.reference import ReferenceConfig

    if quick:  # tiny and fast: checks the script, says nothing about the method
        return ReferenceConfig(vocab_size=1024, d_model=64, n_layers=2, n_heads=2, d_ff=172,
                               context=128, batch_size=8, train_tokens=49_152)
    return ReferenceConfig()


def load_model(name: str, config, progress: bool):
    from da_embed.reference import load_reference
    from da_embed.tuning import reference_text

    if name not in MODELS:
        raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    text = reference_text(name)
    import torch

    t0, threads = perf(), torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # training (first use only) is not timed
    try:
        model, tok, info = load_reference(config, text=text, progress=progress)
    finally:
        torch.set_num_threads(threads)
    info["load_seconds"] = perf() - t0
    return model, tok, info


def text_prefix(tokenizer, text: str, max_tokens: int | None) -> str:
    """The shortest line-aligned prefix of ``text`` holding ``max_tokens`` tokens."""
    if max_tokens is None:
        return text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    if len(offs) <= max_tokens:
        return text
    end = int(offs[max_tokens - 1][1])
    nl = text.find("\n", end)
    return text if nl < 0 else text[:nl + 1]


def save_basis(sub, path: Path) -> dict:
    """Save a subspace's basis for the report step; its file record for the selection file."""
    import numpy as np

    from da_embed.selection import file_digest

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, basis=sub.basis.numpy(), reference=sub.reference.numpy())
    return {"file": str(path), "sha256": file_digest(path), "origin": sub.origin}


def load_basis(hidden, rec: dict):
    """The subspace the selection step saved (its digest checked)."""
    import numpy as np

    from da_embed.placements import Subspace
    from da_embed.selection import file_digest

    if file_digest(rec["file"]) != rec["sha256"]:
        raise ValueError(f"subspace basis {rec['file']} changed since the selection step")
    with np.load(rec["file"]) as z:
        return Subspace(hidden, z["basis"], z["reference"], origin=rec["origin"])


def byte_lengths(tokenizer):
    """UTF-8 bytes of every token id (exact for byte-level BPE)."""
    import numpy as np
    from tokenizers import pre_tokenizers

    alphabet = set(pre_tokenizers.ByteLevel.alphabet())  # one character per byte
    toks = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out = np.zeros(len(toks), dtype=np.int64)
    for i, t in enumerate(toks):
        t = t or ""
        out[i] = len(t) if all(c in alphabet for c in t) else len(t.encode("utf-8"))
    return out


