"""The measured claims table (:class:`ClaimsTable`) and its files (:func:`write_claims`)."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

from ..trajectory import strict_json

__all__ = ["SEED_CLAIMS", "ClaimsTable", "write_claims"]

#: The seed's numbers (``000_*.txt``, "Performance Metrics" and the comparison table).
SEED_CLAIMS = {"coherence_change_pct": 12.7, "diversity_kept_pct": 98.0, "slowdown": 1.03,
               "extra_memory_mb": 110.0, "parameters": 100_000}


@dataclass
class ClaimsTable:
    """The measured claims table.

    Parameters
    ----------
    rows : list of dict
        One per method: ``method``, ``coherence``, ``coherence_change_pct`` (+
        ``_low``/``_high``), ``diversity``, ``diversity_kept_pct`` (+ bounds),
        ``tokens_per_second``, ``slowdown``, ``extra_memory_mb``,
        ``parameters``, ``verifier_failures``.
    settings : dict
        The protocol; ``interrupted`` (e.g. "after 3 of 50 prompts") marks
        the table of an interrupted run.
    coherence_label : str
        What "coherence" measured.
    generations : list of dict
        Every finished generation (method, prompt index, prompt, text,
        seconds, verifier failures); after an interruption also those of
        the prompt that not every method finished.

    Examples
    --------
    >>> t = ClaimsTable([], {}, "coherence: ...")
    >>> t.summary()["seed_claims"]["slowdown"]
    1.03
    """

    rows: list[dict]
    settings: dict
    coherence_label: str
    generations: list[dict] = field(default_factory=list)

    def table(self) -> str:
        """The table as text, with the seed's claims in the last row."""
        head = (f"{'method':<14}{'coherence':>10}{'change %':>9}{'[95% CI]':>17}"
                f"{'diversity':>10}{'kept %':>8}{'[95% CI]':>17}{'tok/s':>8}{'slowdown':>9}"
                f"{'extra MB':>9}{'params':>8}")
        lines = [head, "-" * len(head)]

        def ci(lo, hi):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                return ""
            return f"[{lo:+.1f}, {hi:+.1f}]"

        for r in self.rows:
            lines.append(
                f"{r['method']:<14}{r['coherence']:>10.4f}{r['coherence_change_pct']:>+9.1f}"
                f"{ci(r['coherence_change_low'], r['coherence_change_high']):>17}"
                f"{r['diversity']:>10.4f}{r['diversity_kept_pct']:>8.1f}"
                f"{ci(r['diversity_kept_low'], r['diversity_kept_high']):>17}"
                f"{r['tokens_per_second']:>8.1f}{r['slowdown']:>8.2f}x"
                f"{r['extra_memory_mb']:>9.1f}{r['parameters']:>8d}")
        c = SEED_CLAIMS
        lines.append(f"{'seed claims':<14}{'':>10}{c['coherence_change_pct']:>+9.1f}{'':>17}"
                     f"{'':>10}{c['diversity_kept_pct']:>8.1f}{'':>17}{'':>8}"
                     f"{c['slowdown']:>8.2f}x{c['extra_memory_mb']:>9.1f}{'~0.1M':>8}")
        s = self.settings
        decoding = ("greedy decoding" if s.get("generate_options", {}).get("sample") is False
                    else f"sampling top_p={s['top_p']} temperature={s['temperature']}")
        lines += ["", f"{self.coherence_label}",
                  "diversity: prod_{n=2..4} (1 - rep-n) over whitespace tokens, pooled over "
                  "prompts (Su et al. 2022); kept % = 100 diversity / base diversity",
                  f"prompts: {s['prompts']} ({s['prompt_source']}); {s['max_new_tokens']} new "
                  f"tokens each; candidates K={s['candidates']} of "
                  f"L={s.get('candidate_length')} tokens every "
                  f"I={s['every']} tokens, commit {s.get('commit', 'mean')}; "
                  f"members {s['members']}; ukf subspace {s['ukf_subspace']}; verifier "
                  f"{s['verifier']}; {decoding}; seed {s['seed']}; model {s['model']}",
                  "slowdown: base tokens/s over the method's, same run, methods interleaved "
                  "per prompt; extra MB: largest peak-heap increase of one generation; params: "
                  "numbers adapting the model (the state; no learned dynamics)"]
        diffs = [r for r in self.rows if "coherence_diff_vs_base" in r]
        if diffs:
            lines.append("paired coherence difference, mean over prompts [95% bootstrap CI]:")
            for r in diffs:
                text = (f"  {r['method']:<13} vs base {r['coherence_diff_vs_base']:+.4f} "
                        f"[{r['coherence_diff_vs_base_low']:+.4f}, "
                        f"{r['coherence_diff_vs_base_high']:+.4f}]")
                if "coherence_diff_vs_verification" in r:
                    text += (f"; vs verification {r['coherence_diff_vs_verification']:+.4f} "
                             f"[{r['coherence_diff_vs_verification_low']:+.4f}, "
                             f"{r['coherence_diff_vs_verification_high']:+.4f}]")
                lines.append(text)
        if any(r["method"] == "oracle" for r in self.rows):
            lines.append("oracle: NOT a method: the EnKF whose verifier is the coherence metric "
                         "itself (prompt against candidate), to show the headroom; the other "
                         "rows' verifier is independent of the metric")
        if s.get("interrupted"):  # a partial table must not pass for a full run
            lines.append(f"interrupted {s['interrupted']}: the table covers the prompts "
                         "completed by every method")
        return "\n".join(lines)

    def summary(self) -> dict:
        """JSON-serialisable content (rows, settings, claims, coherence label)."""
        return {"rows": self.rows, "settings": self.settings, "seed_claims": SEED_CLAIMS,
                "coherence_label": self.coherence_label}


def write_claims(table: ClaimsTable, out, *, generations: bool = True) -> None:
    """Write ``claims.json``, ``claims.csv``, ``claims.txt`` and ``generations.jsonl`` to ``out``.

    Parameters
    ----------
    table : ClaimsTable
        The measured table.
    out : str or PathLike
        Output folder (created if needed).
    generations : bool, default True
        Also write ``generations.jsonl`` (from ``table.generations``); False
        leaves the file :func:`reproduce_claims` wrote as it went (``out=``).

    Examples
    --------
    >>> import os, tempfile
    >>> row = {k: 0.0 for k in ("coherence", "coherence_change_pct", "coherence_change_low",
    ...        "coherence_change_high", "diversity", "diversity_kept_pct", "diversity_kept_low",
    ...        "diversity_kept_high", "tokens_per_second", "slowdown", "extra_memory_mb")}
    >>> row.update(method="base", parameters=0, verifier_failures=0)
    >>> settings = dict(prompts=1, prompt_source="given", max_new_tokens=8, candidates=1,
    ...                 every=8, members=8, ukf_subspace=None, verifier="self", top_p=1.0,
    ...                 temperature=1.0, seed=0, model="tiny")
    >>> out = tempfile.mkdtemp()
    >>> write_claims(ClaimsTable([row], settings, "coherence: test"), out)
    >>> sorted(os.listdir(out))
    ['claims.csv', 'claims.json', 'claims.txt', 'generations.jsonl']
    """
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "claims.json"), "w") as f:
        json.dump(strict_json(table.summary()), f, indent=2, default=float)
    with open(os.path.join(out, "claims.csv"), "w", newline="") as f:
        names = list(dict.fromkeys(k for row in table.rows for k in row))  # rows differ
        w = csv.DictWriter(f, fieldnames=names, restval="")
        w.writeheader()
        w.writerows(table.rows)
    with open(os.path.join(out, "claims.txt"), "w") as f:
        f.write(table.table() + "\n")
    if not generations:
        return
    with open(os.path.join(out, "generations.jsonl"), "w", encoding="utf-8") as f:
        for g in table.generations:
            f.write(json.dumps(g, ensure_ascii=False) + "\n")
