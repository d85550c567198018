"""Spin-up checkpoints: fingerprints of the run, writing, reading and restoring.

Outputs
-------
A checkpoint every ``checkpoint_every`` steps and at the end
(``checkpoint-NNNNNN.safetensors``, or ``.pt`` without safetensors, with a
JSON file beside it: configuration, hashes of the token stream and of the
model/placement, step, optimiser and random-generator state), and the
training trajectory ``spinup.nc`` (one record per step, synced as it goes).
``resume=`` continues bit for bit.  :func:`~da_embed.spinup.load_dynamics` turns a checkpoint
into the forecast model of every filter (``da-embed compare --dynamics``).

Private helpers of :mod:`da_embed.spinup` (no public names).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..placements import Placement
from .learned import _Learned

__all__: list[str] = []

_FORMAT = "da-embed spinup checkpoint"
#: Tensors carried from step to step (checkpointed with the parameters).
_CARRIED = ("bank", "carry", "carry_var", "carry_h")
#: ... and those only some objectives carry (the predictive EKF's covariance).
_CARRIED_OPTIONAL = ("carry_cov",)


def _stream_hash(docs: list) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(np.int64(d.size).tobytes())
        h.update(np.ascontiguousarray(d, dtype=np.int64).tobytes())
    return h.hexdigest()


def _model_hash(placement: Placement) -> str:
    """sha256 of the placement's description, its subspace (if any) and the LM's weights."""
    h = hashlib.sha256()
    h.update(json.dumps(placement.describe(), sort_keys=True, default=str).encode())
    for attr in ("basis", "reference"):
        t = getattr(placement, attr, None)
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().numpy().tobytes())
    for name, p in placement.model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _placement_record(placement: Placement) -> dict:
    """``placement.describe()`` plus, for a subspace, a hash of its basis and reference."""
    out = dict(placement.describe())
    if isinstance(getattr(placement, "basis", None), torch.Tensor):
        h = hashlib.sha256(placement.basis.detach().cpu().numpy().tobytes())
        h.update(placement.reference.detach().cpu().numpy().tobytes())
        out["basis_sha256"] = h.hexdigest()
    return out


def _has_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _write_checkpoint(out: Path, step: int, learned: _Learned, optimizer, meta: dict,
                      carried: dict) -> Path:
    """Parameters, Adam state and ``carried`` (bank, carry, generator state) after ``step``."""
    tensors = {f"param.{k}": v.detach().cpu().contiguous().clone()
               for k, v in learned.named().items()}
    tensors.update({k: carried[k].clone() for k in _CARRIED + _CARRIED_OPTIONAL
                    if k in carried})
    sd = optimizer.state_dict()
    shapes = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            t = torch.as_tensor(v).detach().cpu()
            shapes[f"adam.{i}.{k}"] = list(t.shape)
            tensors[f"adam.{i}.{k}"] = t.reshape(-1).contiguous().clone()
    base = out / f"checkpoint-{step:06d}"
    if _has_safetensors():
        from safetensors.torch import save_file

        tensor_path = base.with_suffix(".safetensors")
        tmp = tensor_path.with_name(tensor_path.name + ".tmp")
        save_file(tensors, os.fspath(tmp))
    else:
        tensor_path = base.with_suffix(".pt")
        tmp = tensor_path.with_name(tensor_path.name + ".tmp")
        torch.save(tensors, tmp)
    os.replace(tmp, tensor_path)
    doc = {**meta, "step": int(step), "tensors": tensor_path.name,
           "rng": carried["rng"], "created": _now(),
           "optimizer": {"param_groups": sd["param_groups"], "shapes": shapes}}
    json_path = base.with_suffix(".json")
    tmp = json_path.with_name(json_path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=_json_default)
    os.replace(tmp, json_path)  # the JSON file is written last: it marks a complete checkpoint
    return json_path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def _checkpoint_json(path) -> Path:
    """The JSON file of a checkpoint given as a folder (latest), JSON or tensor file."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(p)!r}")
    if p.is_dir():
        found = sorted(p.glob("checkpoint-*.json"))
        if not found:
            raise FileNotFoundError(f"no checkpoint (checkpoint-*.json) in {os.fspath(p)!r}")
        return found[-1]
    if p.suffix in (".safetensors", ".pt"):
        p = p.with_suffix(".json")
    if p.suffix != ".json":
        raise ValueError(f"a checkpoint is a folder, a checkpoint-*.json file or its "
                         f".safetensors/.pt file, got {os.fspath(path)!r}")
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(p)!r}")
    return p


def _read_checkpoint(path):
    jp = _checkpoint_json(path)
    try:
        with open(jp) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"could not read the checkpoint {os.fspath(jp)!r}: {exc}") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(jp)!r} is not a da-embed spin-up checkpoint")
    tp = jp.with_name(meta["tensors"])
    if not tp.exists():
        raise FileNotFoundError(f"the checkpoint's tensors are missing: {os.fspath(tp)!r}")
    if tp.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(os.fspath(tp))
    else:
        tensors = torch.load(tp, weights_only=True)
    return jp, meta, tensors


def _check_compatible(jp: Path, meta: dict, expected: dict) -> None:
    problems = []
    saved, mine = meta.get("identity", {}), expected["identity"]
    for k in [*mine, *(k for k in saved if k not in mine)]:  # a field at its default is left out
        if saved.get(k) != mine.get(k):
            problems.append(f"{k} (checkpoint {saved.get(k)!r}, this run {mine.get(k)!r})")
    for k, what in (("stream_sha256", "token stream"), ("model_sha256", "model or placement"),
                    ("kind", "what is trained")):
        if meta.get(k) != expected[k]:
            a, b = str(meta.get(k)), str(expected[k])
            problems.append(f"{what} ({k}: checkpoint {a[:12]}, this run {b[:12]})")
    if problems:
        raise ValueError(f"checkpoint {os.fspath(jp)!r} is from another configuration: "
                         + "; ".join(problems))


def _restore(meta: dict, tensors: dict, learned: _Learned, optimizer, carried: dict) -> None:
    with torch.no_grad():
        for k in _CARRIED + tuple(k for k in _CARRIED_OPTIONAL if k in carried):
            if k not in tensors:
                raise ValueError(f"the checkpoint lacks {k!r} (written by another objective?)")
            carried[k] = tensors[k].clone()
        carried["rng"] = meta["rng"]
        for k, v in learned.named().items():
            t = tensors.get(f"param.{k}")
            if t is None or tuple(t.shape) != tuple(v.shape):
                raise ValueError(f"checkpoint parameter {k!r} is missing or has another shape")
            v.copy_(t)
    shapes = meta["optimizer"]["shapes"]
    state = {}
    for key, shape in shapes.items():
        _, i, name = key.split(".", 2)
        state.setdefault(int(i), {})[name] = tensors[key].reshape(shape).clone()
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
