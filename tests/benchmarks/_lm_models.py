"""bench_lm: the reference models, the test-text prefix, saved subspace bases, the trunk cache."""

from __future__ import annotations

import os
from pathlib import Path

from _lm_grids import MODELS, perf


# ----------------------------------------------------------------------------
# Trunk cache for tuning runs (HiddenScale only)
# ----------------------------------------------------------------------------
class TrunkCache:
    """Reuse the trunk's output across tuning runs (``HiddenScale`` rows only).

    With ``HiddenScale`` (and subspaces of it) the state scales the final
    hidden state *after* the trunk, so the trunk's output for a window of
    tokens does not depend on the state.  While the cache is active, the
    model's base (``model.base_model``, e.g. ``LlamaModel``: embeddings,
    blocks and final norm) returns its stored output for an input it has seen
    before; the LM head and every hook run as usual.  Only no-gradient calls
    with ``input_ids`` and no other non-default argument are cached; anything
    else goes to the model unchanged.  Only tuning uses it; evaluation rows
    never do, and every model's first tuning step checks that cached and
    uncached runs agree bit for bit.
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
    from da_embed.corpora import read_text, stdlib_corpus, wikitext_path
    from da_embed.reference import load_reference

    text = stdlib_corpus()
    if name == "stdlib+wikivalid":
        text = text + "\n" + read_text(wikitext_path("valid"))
    elif name != "stdlib":
        raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
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


