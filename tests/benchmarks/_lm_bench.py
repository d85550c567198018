"""bench_lm: :class:`ModelBench`, the tuning and evaluation rows of one reference model."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

from _common import warm_up
from _lm_grids import MEMBERS, SHORT, _fmt_settings, grid_for, is_short, perf, split_settings
from _lm_io import _append_jsonl, _cpu_seconds, _null
from _lm_models import TrunkCache, byte_lengths, load_basis, save_basis


# ----------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------
class ModelBench:
    """Tuning and evaluation rows of one reference model."""

    def __init__(self, name, model, tok, info, args, report, out_dir: Path, bases=None):
        import numpy as np

        from da_embed.assimilator import PrequentialConfig
        from da_embed.compare import make_placement

        self.name, self.model, self.tok, self.info = name, model, tok, info
        self.args, self.report, self.out = args, report, out_dir
        self.protocol = PrequentialConfig(chunk=args.chunk, context=args.context,
                                          stride=args.stride)
        self.hidden = make_placement(model, "hidden")
        self.placements: dict = {}
        self.bytes = byte_lengths(tok)
        self.tuned: dict = {}
        self.tuning: dict = {}
        self.rows: list[dict] = []
        self.frozen = None
        self.cache: TrunkCache | None = None
        self.np = np
        #: Subspace bases: {spec: file record}; given to the report step, written by selection.
        self.bases: dict = dict(bases or {})
        self.budget: dict = {}  # row -> (configurations, tokens per configuration)

    # -- placements ----------------------------------------------------------
    def placement(self, label: str):
        from da_embed.compare import make_placement
        from da_embed.subspaces import make_subspace

        name, _, spec = label.partition("@")
        if name == "frozen" or not spec:
            return self.hidden
        if spec not in self.placements:
            if spec.startswith("rotary"):
                self.placements[spec] = make_placement(self.model, spec)
            elif spec in self.bases:  # report step: the basis the selection step built
                self.placements[spec] = load_basis(self.hidden, self.bases[spec])
            else:  # selection step: built from the tuning text, saved for the report step
                t0 = perf()
                with self.cache if self.cache is not None else _null():
                    sub = make_subspace(
                        self.hidden, spec, tune_ids=self.tune_ids, protocol=self.protocol,
                        seed=self.args.seed, max_tokens=self.args.tune_tokens,
                        progress=self.args.progress)
                self.placements[spec] = sub
                self.bases[spec] = save_basis(sub, self.out / self.name / f"basis-{spec}.npz")
                self.report(f"  subspace {spec}: {sub.origin} ({perf() - t0:.0f} s)")
        return self.placements[spec]

    def _assimilator(self, label, settings, max_tokens, progress_label):
        from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
        from da_embed.methods import make_method

        name, assim, opts = split_settings(label, settings)
        method = make_method(name, members=MEMBERS, P0=assim["P0"], **opts)
        protocol = PrequentialConfig(chunk=self.protocol.chunk, context=self.protocol.context,
                                     stride=self.protocol.stride, max_tokens=max_tokens)
        return OnlineAssimilator(self.placement(label), method, protocol=protocol,
                                 members=MEMBERS, seed=self.args.seed,
                                 model_name=f"reference:{self.name}", label=progress_label,
                                 progress=self.args.progress, **assim)

    # -- tuning --------------------------------------------------------------
    def prepare_tuning(self, tune_ids):
        self.tune_ids = tune_ids
        self.cache = TrunkCache(self.model)
        self._check_cache()

    def _check_cache(self):
        """Cached and uncached tuning runs give the same per-chunk NLLs (EKF, 8 chunks)."""
        np = self.np
        n = 1 + 8 * self.protocol.chunk
        ds0 = self._assimilator("ekf", {}, n, "cache check").run(self.tune_ids)
        with self.cache:
            ds1 = self._assimilator("ekf", {}, n, "cache check").run(self.tune_ids)
            ds2 = self._assimilator("ekf", {}, n, "cache check").run(self.tune_ids)
        diff = max(float(np.abs(ds0.token_nll.values - d.token_nll.values).max())
                   for d in (ds1, ds2))
        self.report(f"  trunk-cache check (EKF, 8 tuning chunks, uncached vs cached): max |d nll| "
                    f"= {diff:.1e} ({self.cache.hits} hits)")
        if diff > 1e-6:
            raise RuntimeError(f"the trunk cache changed the tuning NLLs by {diff}")

    def tune(self, label: str) -> dict:
        """Tuned settings of a row: the best of ``--budget`` configurations on valid."""
        from da_embed.selection import draw_configs

        grid = grid_for(label)
        if not grid:
            return {}
        if label in self.tuned:
            return self.tuned[label]
        draws = draw_configs(grid, self.args.budget, seed=self.args.seed, key=label)
        use_cache = "@rotary" not in label
        tokens = self.tune_ids.size - 1
        results = []
        t0 = perf()
        for g in draws:
            tag = f"tuning {label} {_fmt_settings(g)}"
            try:
                with self.cache if use_cache else _null():
                    ds = self._assimilator(label, g, tokens + 1, tag).run(self.tune_ids)
                ppl, status = float(ds.attrs["perplexity"]), str(ds.attrs["status"])
                chunks = int(ds.sizes["time"])
            except Exception as exc:  # a diverged or failed configuration is recorded and skipped
                ppl, status, chunks = float("inf"), f"failed: {type(exc).__name__}: {exc}", 0
            if not math.isfinite(ppl):
                status = status if status.startswith("failed") else f"diverged ({status})"
            rec = {"model": self.name, "row": label, "settings": g, "valid_perplexity": ppl,
                   "status": status, "chunks": chunks, "tokens": chunks * self.protocol.chunk}
            results.append(rec)
            _append_jsonl(self.out / "tuning.jsonl", rec)
        ok = [r for r in results if math.isfinite(r["valid_perplexity"])]
        pick = min(ok, key=lambda r: r["valid_perplexity"]) if ok else results[0]
        best = pick["settings"]
        self.tuned[label] = best
        self.tuning[label] = results
        self.budget[label] = (len(draws), max(r["tokens"] for r in results))
        edges = [k for k, vals in grid.items()  # numeric knobs of 3+ values: an edge means something
                 if len(vals) > 2 and not isinstance(vals[0], str) and best[k] in (vals[0], vals[-1])]
        pick["edges"] = edges
        self.report(f"  tuned {label:18s} {len(draws)} configurations x "
                    f"{self.budget[label][1]} valid tokens ({perf() - t0:.0f} s): best "
                    f"{_fmt_settings(best)} (valid ppl {pick['valid_perplexity']:.1f})"
                    + (f" (at the grid's edge in {', '.join(edges)})" if edges else ""))
        items = [f"{_fmt_settings(r['settings'])}: {r['valid_perplexity']:.1f}" for r in results]
        line = "      drawn configurations (valid perplexity):"
        for item in items:  # wrapped between configurations, never inside one
            if len(line) + len(item) + 3 > 110:
                self.report(line)
                line = "       "
            line += f" {item} |" if item != items[-1] else f" {item}"
        self.report(line)
        return best

    def selected(self, label: str) -> dict:
        """The selection-file entry of a tuned row."""
        rec = {"model": self.name, "row": label, "settings": self.tuned.get(label, {})}
        if label in self.tuning:
            ok = [r for r in self.tuning[label] if math.isfinite(r["valid_perplexity"])]
            pick = min(ok, key=lambda r: r["valid_perplexity"]) if ok else self.tuning[label][0]
            rec.update(valid_perplexity=pick["valid_perplexity"], edges=pick.get("edges", []),
                       configs=self.budget[label][0], tokens=self.budget[label][1])
        else:  # frozen: nothing to tune; its valid perplexity for the record
            rec.update(configs=0, tokens=0)
        return rec

    # -- evaluation ----------------------------------------------------------
    def run_row(self, label: str, test_ids) -> dict:
        np = self.np
        from da_embed.metrics import paired_change, perplexity
        from da_embed.trajectory import run_file_stem

        settings = self.tuned.get(label, {})
        K_all = len(self.protocol.starts(test_ids.size))
        K = K_all if not is_short(label) else max(2, -(-K_all // SHORT))
        max_tokens = 1 + K * self.protocol.stride
        path = self.out / self.name / (run_file_stem(label) + ".nc")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        # One untimed warm-up per row: the first timed chunk must not carry a cold start.
        warm_up(f"{self.name} {label}", lambda: self._assimilator(
            label, settings, 1 + 2 * self.protocol.stride, "warm-up").run(test_ids))
        runner = self._assimilator(label, settings, max_tokens, f"{self.name} {label}")
        t0, c0 = perf(), _cpu_seconds()
        err = None
        try:
            runner.run(test_ids, out=str(path))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # keep the chunks it completed and go on
            err = f"{type(exc).__name__}: {exc}"
        wall, cpu = perf() - t0, _cpu_seconds() - c0
        ds = getattr(runner, "dataset_", None)
        row = {"model": self.name, "row": label, "settings": settings,
               "placement": runner.placement.describe() if hasattr(runner.placement, "describe")
               else type(runner.placement).__name__,
               "state_dim": int(runner.placement.state_dim), "chunk": self.protocol.chunk,
               "context": self.protocol.context, "stride": self.protocol.stride,
               "stream_tokens": int(test_ids.size), "chunks_planned": K, "wall_s": wall,
               "budget": list(self.budget.get(label, (0, 0))),
               "cpu_s": cpu, "path": str(path), "error": err}
        if ds is None or ds.sizes.get("time", 0) == 0:
            row.update(status=err or "no chunks", chunks=0)
            return self._finish(row)
        nll = ds["nll"].values
        k = nll.size
        tok_nll = ds["token_nll"].values  # (k, L)
        ids = ds["token_id"].values
        nats = float(tok_nll.sum())
        nbytes = int(self.bytes[ids].sum())
        first, last = int(ds["chunk_start"].values[0]), int(ds["chunk_start"].values[-1])
        span = self.tok.decode(test_ids[first:last + self.protocol.chunk].tolist(),
                               clean_up_tokenization_spaces=False)
        words = len(span.split())
        wt = ds["wall_time"].values
        row.update(status=str(ds.attrs.get("status", "")), chunks=k, tokens=int(ds["tokens"].sum()),
                   perplexity=perplexity(nll, ds["tokens"].values), nll=float(nll.mean()),
                   bytes=nbytes, words=words, bits_per_byte=nats / math.log(2) / nbytes,
                   word_perplexity=math.exp(nats / words) if words else float("nan"),
                   chunk_wall_s=float(wt.sum()),
                   own_ratio=float(wt.sum() / ds["wall_time_score"].values.sum()),
                   nll_per_chunk=nll.tolist(), wall_per_chunk=wt.tolist(),
                   score_per_chunk=ds["wall_time_score"].values.tolist())
        if label == "frozen":
            self.frozen = row
            row.update(change_pct=0.0, ci_low=float("nan"), ci_high=float("nan"),
                       frozen_ratio=1.0, frozen_ppl_same=row["perplexity"])
        elif self.frozen is not None:
            fz = np.asarray(self.frozen["nll_per_chunk"][:k])
            fw = np.asarray(self.frozen["wall_per_chunk"][:k])
            pc = paired_change(nll[:fz.size], fz, n_boot=2000, seed=self.args.seed)
            row.update(change_pct=pc.change, ci_low=pc.low, ci_high=pc.high,
                       frozen_ratio=float(wt[:fz.size].sum() / fw.sum()),
                       frozen_ppl_same=math.exp(float(fz.mean())))
        return self._finish(row)

    def _finish(self, row: dict) -> dict:
        self.rows.append(row)
        rec = dict(row)
        rec["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        _append_jsonl(self.out / "rows.jsonl", rec)
        return row
