"""Rebuild a backbone from one checkpoint file (DESIGN.md 1a, 4): a unimodal NeuroNet or a SynthSleepNet.

Checkpoints are the training engine's files (utils/checkpoint.py): a dict with at least `model_kind`,
`model_config` (what the builder needs) and `model` (the state dict). This module only reads them, with
`torch.load(weights_only=True)`, so `models/` needs nothing from the engine.

    model_kind       builder                                     what `model_config` holds
    neuronet         models.neuronet.build_neuronet              NeuroNetConfig.to_dict()
    synthsleepnet    models.synthsleepnet.build_synthsleepnet    SynthSleepNetConfig.to_dict(), incl. the
                                                                 unimodal config of every channel's encoder

A SynthSleepNet checkpoint holds the frozen encoder weights, their LoRA adapters, the adapters, the fusion
encoder, decoders and projectors, so `load_backbone(path)` needs no unimodal checkpoint.
"""
from __future__ import annotations

import pickle
import zipfile
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from models.neuronet import NeuroNet, build_neuronet
from models.synthsleepnet import SynthSleepNet, build_synthsleepnet

CHECKPOINT_KEYS = ("model_kind", "model_config", "model")
BUILDERS = {"neuronet": build_neuronet, "synthsleepnet": build_synthsleepnet}
RUN_CHECKPOINTS = ("best.pt", "last.pt")  # a run directory's checkpoints, in order of preference


def checkpoint_path(run_or_file: str | Path) -> Path:
    """A run directory → its best.pt, else last.pt; a file → itself. FileNotFoundError names what was tried."""
    path = Path(run_or_file)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: run directory holds no checkpoint (looked for {', '.join(RUN_CHECKPOINTS)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run directory")
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at `path` (a file, or a run directory → best.pt / last.pt), checked for the keys
    a model needs (`model_kind`, `model_config`, `model`)."""
    path = checkpoint_path(path)
    state = load_checked_dict(path, CHECKPOINT_KEYS, "model checkpoint", map_location)
    state["path"] = str(path)
    return state


def load_checked_dict(path: Path, required: Iterable[str], what: str,
                      map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(path, weights_only=True)` (no pickled code runs) of a dict holding every `required` key;
    ValueError naming the file and the problem otherwise (`what` names the expected kind of file)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 — a corrupt or foreign file: say which and why, in one line
        raise ValueError(f"{path}: cannot read it as a {what}: {unreadable_reason(path, err)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a {what} of this project (a {type(state).__name__}, expected a dict)")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path}: not a {what} of this project (missing keys: {', '.join(missing)})")
    return state


def unreadable_reason(path: Path, err: Exception) -> str:
    """One line on why `torch.load(path, weights_only=True)` failed (torch's own message spans several lines and
    suggests `weights_only=False`, which this project never uses: it would run code from the file)."""
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint file (truncated, e.g. by an interrupted copy, or another kind of file)"
    if isinstance(err, pickle.UnpicklingError):
        return ("it holds Python objects other than tensors, numbers, strings, lists and dicts, which this "
                "project's checkpoints never do")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"corrupt PyTorch archive ({first[:160]})"


def load_state_checked(model: nn.Module, state: Mapping[str, torch.Tensor], where: str,
                       allowed_missing: Iterable[str] = (), allowed_unexpected: Iterable[str] = ()) -> None:
    """`model.load_state_dict(state, strict=False)`, then raise ValueError if a key is missing or unexpected
    beyond the allowed glob patterns (e.g. `"head.*"`); shapes must match in any case."""
    allowed_missing, allowed_unexpected = tuple(allowed_missing), tuple(allowed_unexpected)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches
        raise ValueError(f"{where}: weights do not fit the {type(model).__name__} built from its config: {err}") from err
    missing = [k for k in result.missing_keys if not any(fnmatchcase(k, p) for p in allowed_missing)]
    unexpected = [k for k in result.unexpected_keys if not any(fnmatchcase(k, p) for p in allowed_unexpected)]
    if missing or unexpected:
        raise ValueError(f"{where}: state does not match {type(model).__name__}: {len(missing)} missing key(s) "
                         f"{missing[:8]}, {len(unexpected)} unexpected key(s) {unexpected[:8]}")


def build_backbone(checkpoint: Mapping[str, Any], where: str = "checkpoint") -> NeuroNet | SynthSleepNet:
    """Model of `checkpoint["model_kind"]` built from `model_config`, weights loaded (every key must match)."""
    kind = checkpoint["model_kind"]
    if kind not in BUILDERS:
        raise ValueError(f"{where}: model kind {kind!r} is not a backbone; expected one of {sorted(BUILDERS)}")
    try:
        model = BUILDERS[kind](checkpoint["model_config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: cannot build a {kind} from the stored config: {err}") from err
    load_state_checked(model, checkpoint["model"], where)
    return model


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> NeuroNet | SynthSleepNet:
    """A ready backbone from one checkpoint (or run directory): NeuroNet for a unimodal checkpoint,
    SynthSleepNet for a multimodal one, in eval mode. Either exposes `encode(x) -> (pooled, tokens)`."""
    checkpoint = read_checkpoint(path, map_location)
    return build_backbone(checkpoint, checkpoint["path"]).eval()


def load_neuronet(path: str | Path, map_location: str | torch.device = "cpu") -> NeuroNet:
    """The unimodal NeuroNet of a checkpoint (or run directory); ValueError for any other kind."""
    checkpoint = read_checkpoint(path, map_location)
    if checkpoint["model_kind"] != "neuronet":
        raise ValueError(f"{checkpoint['path']}: holds a {checkpoint['model_kind']!r} model, expected a unimodal "
                         "'neuronet' checkpoint")
    return build_backbone(checkpoint, checkpoint["path"]).eval()
