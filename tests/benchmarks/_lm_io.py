"""bench_lm: printing and keeping report lines, CPU and load accounting, JSON lines."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import time
from pathlib import Path

perf = time.perf_counter


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LoadMonitor:
    """CPU time used by other processes while we run (Linux /proc/stat)."""

    def __init__(self):
        self.t0, self.busy0, self.self0 = perf(), self._busy(), _cpu_seconds()

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        except (OSError, ValueError):
            return float("nan")

    def background_cores(self) -> float:
        wall = perf() - self.t0
        other = (self._busy() - self.busy0) - (_cpu_seconds() - self.self0)
        return max(other, 0.0) / wall if wall > 0 else float("nan")


class Report:
    """Prints lines and keeps them for the markdown."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        for line in str(text).split("\n"):
            self.lines.append(line)
        print(text, flush=True)



def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return x


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_jsonable(record)) + "\n")



def _header(report: Report, args, config, np, torch) -> None:
    from da_embed import __version__

    report(f"date    : {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    report(f"versions: python {platform.python_version()}, torch {torch.__version__}, numpy "
           f"{np.__version__}, da-embed {__version__}")
    report(f"machine : nproc {os.cpu_count()}, {platform.system()} {platform.release()}; torch and "
           f"BLAS threads {args.threads}")
    report(f"models  : {args.models}; ReferenceConfig("
           f"{', '.join(f'{k}={v}' for k, v in vars(config).items())})")




class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


