"""Training checkpoints: atomic writes, RNG state capture, provenance (code version, data split hash).

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` can read (tensors, numbers, strings,
lists, dicts only), with the keys

    format_version, model_kind, model_config, model, optimizer, scheduler, scaler, epoch, batch_in_epoch,
    step, rng (list, one entry per rank), config, splits_sha256, version, metrics, best, meter, metadata

`model` is the unwrapped state_dict (no `module.` prefix); `model_kind` + `model_config` are what `models/`
needs to rebuild the module from the file alone. `epoch` counts completed passes over the training set and
`batch_in_epoch` the micro-batches already consumed of the next one, so a run resumes mid-pass exactly where it
stopped. This module writes checkpoints; reading one is `models.loading.read_checkpoint` (the one reader, which
`load_checkpoint` calls).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import random
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.loading import FORMAT_VERSION as FORMAT_VERSION  # written here, checked by the reader
from models.loading import TRAINING_KEYS, read_checkpoint

PACKAGE_NAME = "synthsleepnet"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def sha256_file(path: str | Path) -> str | None:
    """Hex SHA-256 of a file's bytes, or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """`{"package": <installed version>, "git_commit": <HEAD sha>}`, each "unknown" when it cannot be found.
    Looked up once per process (every checkpoint save would otherwise start a git process)."""
    return dict(_code_version())


@functools.lru_cache(maxsize=1)
def _code_version() -> dict[str, str]:
    try:
        package = importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    repo = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        commit = result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"package": package, "git_commit": commit}


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA generator states, in weights_only-loadable types."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)  # {'bit_generator', 'state': {'key', 'pos'}, 'has_gauss', 'gauss'}
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),  # (624,) uint32 values
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file beside `path`, then `os.replace` (no half-written checkpoint). The temp
    files of processes killed while they wrote `path` (`.<name>.<pid>.tmp`, as large as the checkpoint) go first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover_dead_stages(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def staging_names(out: Path) -> tuple[Path, Path]:
    """The two folders `staged_folder` keeps beside `out` while it writes: (new, old)."""
    return out.with_name(f".{out.name}.{os.getpid()}.tmp"), out.with_name(f".{out.name}.{os.getpid()}.old")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _recover_dead_stages(out: Path) -> None:
    """What processes that no longer run left beside `out` while they wrote it (`.<name>.<pid>.tmp|old`): the
    staging folders of `staged_folder` and the temp files of `atomic_save`, each as large as what it replaces. A
    run killed between `staged_folder`'s two renames left the earlier `out` as `.old` with no `out`, which is put
    back; every other leftover is removed. Those of running processes are left alone."""
    for path in sorted(out.parent.glob(f".{out.name}.*")):
        pid, _, kind = path.name[len(out.name) + 2 :].partition(".")
        if not pid.isdigit() or kind not in ("tmp", "old") or _alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.replace(path, out)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def in_staging(path: Path, out: Path) -> bool:
    """Whether `path` lies in `out` or in a staging folder of `staged_folder` beside it (of any process)."""
    out = Path(out).absolute()
    return any(
        part == out or (part.parent == out.parent and part.name.startswith(f".{out.name}."))
        for part in (Path(path).absolute(), *Path(path).absolute().parents)
    )


def replaceable(out: Path, markers: Sequence[str]) -> bool:
    """Whether `staged_folder(out)` may replace `out` as a whole: it does not exist, is an empty folder (not a
    symbolic link), or holds one of `markers` (a file only the script's own earlier run writes). A folder of
    anything else (a training run's checkpoints, a user's notes) must not be swapped away."""
    out = Path(out)
    if out.is_symlink():  # swapping the link for a folder would leave its target and an `.old` link behind
        return False
    if not out.is_dir():
        return not out.exists()
    return not any(out.iterdir()) or any((out / name).is_file() for name in markers)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out` to write into; on success it replaces `out` (two renames), on any failure it
    is removed and `out` is left exactly as it was. Callers check `replaceable(out, ...)` before their work."""
    out = Path(out).absolute()  # "." has no name to put a sibling beside
    out.parent.mkdir(parents=True, exist_ok=True)
    stage, old = staging_names(out)
    for leftover in (stage, old):  # from a run of this pid that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    _recover_dead_stages(out)
    stage.mkdir()
    try:
        yield stage
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_run_folder(out: Path) -> Iterator[Path]:
    """`staged_folder` for a run folder that keeps its config history: the earlier runs' config*.json are carried
    into the stage, so `save_config(..., keep_previous=True)` there keeps them as it would in place."""
    with staged_folder(out) as stage:
        for earlier in sorted(Path(out).glob("config*.json")) if Path(out).is_dir() else []:
            shutil.copy2(earlier, stage / earlier.name)
        yield stage


def save_model_checkpoint(
    path: str | Path,
    kind: str,
    model_config: dict,
    state: dict,
    metadata: dict | None = None,
    splits_sha256: str | None = None,
    *,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    step: int = 1,
    epoch: int = 1,
) -> Path:
    """A model without training state (untrained, converted, imported or solved in closed form, like the
    logistic probe head) as a checkpoint with every key the engine writes: optimizer, scheduler and scaler
    empty; `step` and `epoch` (default one step of one pass), the `metrics` it was selected by and the run's
    `config` as the engine records them. Readable by every script that takes a `--backbone` or a run, as if the
    engine had written it."""
    return atomic_save(
        {
            "format_version": FORMAT_VERSION,
            "model_kind": kind,
            "model_config": model_config,
            "model": state,
            "optimizer": {},
            "scheduler": {},
            "scaler": {},
            "epoch": int(epoch),
            "batch_in_epoch": 0,
            "step": int(step),
            "rng": [],
            "config": dict(config or {}),
            "version": {},
            "metrics": {k: plain_number(v) for k, v in (metrics or {}).items()},
            "best": {},
            "splits_sha256": splits_sha256,
            "meter": {},
            "world_size": 1,
            "metadata": metadata or {},
        },
        path,
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training checkpoint file at `path` (not a run directory), with every key a resume needs:
    `models.loading.read_checkpoint(path, required=TRAINING_KEYS)`; CheckpointError naming the file otherwise."""
    return read_checkpoint(path, map_location, required=TRAINING_KEYS, run_directory=False)


def plain_number(value: Any) -> Any:
    """NumPy / torch scalars -> Python numbers (JSON- and weights_only-safe)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
