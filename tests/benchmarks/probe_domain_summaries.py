#!/usr/bin/env python
"""Do the reference model's chunk summaries h tell the two domains of bench_t2 apart?

Run directly: ``python tests/benchmarks/probe_domain_summaries.py`` (reference
model; a few seconds).  Not collected by pytest.  60 chunks (32 tokens, context
224, 600 tokens apart) of each domain, the reference model's own training text
(stdlib) and WikiText-2 valid; h is the mean unscaled final hidden state of the
chunk, what the learned dynamics see.  Prints the held-out accuracy of a
least-squares linear rule fitted on 80 chunks (40 held out) and of the rule
"closer to which domain's mean" on all chunks.
"""
import numpy as np, torch
torch.set_num_threads(1)
from da_embed.reference import load_reference, encode_text
from da_embed.corpora import stdlib_corpus, read_text, wikitext_path
from da_embed.placements import HiddenScale
from da_embed.observations import TokenNLLObservation
model, tok, info = load_reference(progress=False)
dom = {"stdlib": encode_text(tok, stdlib_corpus())[:40000], "wiki": encode_text(tok, read_text(wikitext_path("valid")))[:40000]}
H, y = [], []
pl = HiddenScale(model)
with pl.attached():
    for lab, (k, ids) in enumerate(dom.items()):
        for c in range(60):
            st = 224 + c * 600
            op = TokenNLLObservation(pl, ids[st - 224:st + 32], 32)
            H.append(op.summary_); y.append(lab)
H, y = np.array(H), np.array(y)
print("d", H.shape[1], "mean |h|", np.linalg.norm(H, axis=1).mean(), "max |h_j|", np.abs(H).max(), "per-dim std", H.std(0).mean())
idx = np.random.default_rng(0).permutation(len(y)); tr, te = idx[:80], idx[80:]
X = np.c_[H, np.ones(len(y))]
w = np.linalg.lstsq(X[tr], 2 * y[tr] - 1, rcond=None)[0]
print("held-out linear accuracy", ((X[te] @ w > 0) == y[te]).mean())
m = H[y == 0].mean(0) - H[y == 1].mean(0)
print("mean-difference rule accuracy", (((H - (H[y==0].mean(0)+H[y==1].mean(0))/2) @ m > 0) == (y == 0)).mean())
