"""bench_lm: :class:`ModelBench`, the tuning and evaluation rows of one reference model."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

from _common import warm_up
from _lm_grids import MEMBERS, SHORT, _fmt_settings, grid_for, is_short, perf
from _lm_io import _append_jsonl, _cpu_seconds, _null
from _lm_models import byte_lengths, load_basis, save_basis


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
        self.cache = None  # da_embed.trunk_cache.TrunkCache while tuning
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
        from da_embed.tuning import make_tuning_run

        return make_tuning_run(self.placement(label), label, settings, protocol=self.protocol,
                               max_tokens=max_tokens, members=MEMBERS, seed=self.args.seed,
                               model_name=f"reference:{self.name}",
                               progress_label=progress_label, progress=self.args.progress)

    # -- tuning --------------------------------------------------------------
    def prepare_tuning(self, tune_ids):
        self.tune_ids = tune_ids
        from da_embed.trunk_cache import TrunkCache

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

    def _draws(self, label: str) -> list:
        from da_embed.selection import draw_configs

        return draw_configs(grid_for(label), self.args.budget, seed=self.args.seed, key=label)

    def tune(self, label: str) -> dict:
        """Tuned settings of a row: the best of ``--budget`` configurations on valid (serial)."""
        from da_embed.tuning import run_config

        if not grid_for(label):
            return {}
        if label in self.tuned:
            return self.tuned[label]
        draws, t0 = self._draws(label), perf()
        placement = self.placement(label)
        results = [run_config(placement, self.cache, label, g, self.tune_ids,
                              protocol=self.protocol, members=MEMBERS, seed=self.args.seed,
                              model_name=f"reference:{self.name}", progress=self.args.progress)
                   for g in draws]
        return self._record(label, draws, results, perf() - t0)

    def tune_sweep(self, labels, sweep_out: Path, fixed: dict, scheduler: str,
                   resume: bool) -> None:
        """Tune every row through :func:`filters.sweep.run_sweep`: one cell per configuration.

        ``fixed`` holds the ``[lm_tune]`` entries that say which model and text
        (:mod:`da_embed.tuning`); the cells land in ``sweep_out`` (``cells/``,
        ``results.nc``), so ``resume`` runs only the missing ones.
        """
        from filters.sweep import CellStore, parse_spec, run_sweep

        labels = [lab for lab in labels if grid_for(lab) and lab not in self.tuned]
        if not labels:
            return
        draws = {lab: self._draws(lab) for lab in labels}
        for lab in labels:  # subspaces from the tuning text, built and saved here first
            if "@" in lab and "@rotary" not in lab:
                self.placement(lab)
        spec = parse_spec({"lm_tune": dict(
            fixed, tune_tokens=int(self.tune_ids.size - 1), chunk=self.protocol.chunk,
            context=self.protocol.context, stride=self.protocol.stride, seed=self.args.seed,
            members=MEMBERS, configs=draws,
            placements={lab: self.bases[lab.partition("@")[2]] for lab in labels
                        if lab.partition("@")[2] in self.bases}),
            "grid": {"row": labels, "draw": list(range(self.args.budget))}})
        t0 = perf()
        rep = run_sweep(spec, sweep_out, scheduler=scheduler, resume=resume,
                        progress=self.args.progress)
        self.report(f"  sweep {sweep_out}: {rep.cells} cells ({rep.reused} reused, {rep.ran} "
                    f"run) on {scheduler} in {perf() - t0:.0f} s")
        if rep.failed:
            raise RuntimeError(f"the sweep could not finish {len(rep.failed)} cells "
                               f"({rep.failed[0][1]}); rerun with --resume")
        store = CellStore(sweep_out)
        by_cell = {(c.coords["row"], c.coords["draw"]): store.read(c) for c in spec.cells()}
        for lab in labels:
            res = [by_cell[(lab, i)] for i in range(len(draws[lab]))]
            self._record(lab, draws[lab], res, sum(r.get("wall_cell", 0.0) for r in res))

    def _record(self, label: str, draws: list, runs: list, seconds: float) -> dict:
        """Keep, log and print a row's tuning runs; its best settings."""
        grid = grid_for(label)
        results = []
        for g, run in zip(draws, runs):
            chunks = int(run["chunks"]) if math.isfinite(run["chunks"]) else 0
            rec = {"model": self.name, "row": label, "settings": g,
                   "valid_perplexity": float(run["valid_perplexity"]),
                   "status": run["run_status"], "chunks": chunks,
                   "tokens": chunks * self.protocol.chunk}
            if not math.isfinite(rec["valid_perplexity"]):
                rec["valid_perplexity"] = float("inf")
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
                    f"{self.budget[label][1]} valid tokens ({seconds:.0f} s): best "
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
