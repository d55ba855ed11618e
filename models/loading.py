"""Read checkpoint files, and rebuild a backbone from one (docs/architecture.md 1a): a NeuroNet or a SynthSleepNet.

Checkpoints are the training engine's files (utils/checkpoint.py writes them): a dict with at least
`model_kind`, `model_config` (what the builder needs) and `model` (the state dict). `read_checkpoint` is the
project's one reader of those files: `torch.load(weights_only=True)` (no pickled code runs), the format version,
the keys and the model kind checked, and every problem raised as one `CheckpointError` whose message names the
file. Everything else (the engine's resume, the downstream loaders, the scripts) calls it; it calls nothing above
`models/`, so a checkpoint is read one way down.

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
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.neuronet import PRESETS as NEURONET_PRESETS
from models.neuronet import NeuroNet, build_neuronet
from models.synthsleepnet import PRESETS as SYNTHSLEEPNET_PRESETS
from models.synthsleepnet import SynthSleepNet, build_synthsleepnet

FORMAT_VERSION = 1  # of the checkpoint dict (utils/checkpoint.py writes it); a newer file is refused
# Checkpoint kinds (a checkpoint's `model_kind`, written in every file, so the values never change): the two
# backbones, then the downstream models: a probe's head alone (the backbone stays a file of its own), a per-epoch
# classifier, a windowed classifier, and fine-tuning's first phase (context + head on cached vectors).
NEURONET, SYNTHSLEEPNET = "neuronet", "synthsleepnet"
MLP_HEAD, EPOCH_CLASSIFIER, TEMPORAL_CLASSIFIER, CONTEXT_HEAD = (
    "mlp_head",
    "epoch_classifier",
    "temporal_classifier",
    "context_head",
)
BUILDERS = {NEURONET: build_neuronet, SYNTHSLEEPNET: build_synthsleepnet}
# Every model size preset a script's --preset takes (NeuroNet's; a SynthSleepNet has a subset of them).
MODEL_PRESETS: tuple[str, ...] = tuple(dict.fromkeys((*NEURONET_PRESETS, *SYNTHSLEEPNET_PRESETS)))
MODEL_KEYS = ("model_kind", "model_config", "model")  # what rebuilding a model needs
TRAINING_KEYS = ("format_version", *MODEL_KEYS, "epoch", "step", "config")  # what resuming a run needs
RUN_CHECKPOINTS = ("best.pt", "last.pt")  # a run directory's checkpoints, in order of preference


# A run that replaces an earlier one in its folder trains in FOLDER/REPLACEMENT and is moved in when it finished;
# FOLDER/REPLACEMENT/PUBLISHING exists while it moves in (utils/resume.py): the folder then holds parts of both.
REPLACEMENT = ".next"
PUBLISHING = ".publishing"


def half_replaced(folder: str | Path) -> str:
    """Why `folder` cannot be read as one run: it was stopped while a new run moved in; "" when it can."""
    if not (Path(folder) / REPLACEMENT / PUBLISHING).is_file():
        return ""
    return (
        f"a new run is moving into its folder from {Path(folder) / REPLACEMENT}, or was stopped while it did; "
        "the new run's training command (any --resume) finishes the move"
    )


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, of another format, kind or shape. The message is one
    line that starts with the file's path (scripts print it as `error: ...`)."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint at the path given (also a FileNotFoundError)."""


def checkpoint_path(run_or_file: str | Path) -> Path:
    """A run directory → its best.pt, else last.pt; a file → itself. CheckpointNotFound names what was tried."""
    path = Path(run_or_file)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        pickled = (path / "model.pkl").is_file()  # a run of scikit-learn trees or an event detector
        raise CheckpointNotFound(
            f"{path}: run directory holds no checkpoint (looked for {', '.join(RUN_CHECKPOINTS)})"
            + ("; its model.pkl is a scikit-learn model, not a PyTorch checkpoint" if pickled else "")
        )
    if not path.is_file():
        raise CheckpointNotFound(f"{path}: no such checkpoint file or run directory")
    return path


def damaged_member(path: Path) -> str | None:
    """The first member of a checkpoint (a zip archive, as `torch.save` writes) whose bytes do not match their
    stored CRC-32, or None. `torch.load` does not check them: flipped bytes inside a tensor load as wrong numbers
    (a NaN weight that later reads as a diverging loss)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError):  # not a zip (the legacy format): torch.load was its only check
        return None


def read_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    kinds: Iterable[str] | None = None,
    required: Iterable[str] = MODEL_KEYS,
    run_directory: bool = True,
) -> dict[str, Any]:
    """The checkpoint dict at `path`, read and checked: the one reader of checkpoint files.

    `path` is a file or, with `run_directory`, a run directory (→ best.pt, else last.pt). The file is loaded with
    `torch.load(weights_only=True)`; it must be a dict holding every `required` key (default: what rebuilding
    the model needs; `TRAINING_KEYS` for resuming), of a format version this code reads and, when `kinds` is
    given, of one of those `model_kind`s. Any problem raises CheckpointError (CheckpointNotFound for a missing
    file) naming the file. The dict gets `path`: the file read.
    """
    path = checkpoint_path(path) if run_directory else Path(path)
    problem = half_replaced(path.parent)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    if not path.is_file():
        raise CheckpointNotFound(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 — a corrupt or foreign file: say which and why, in one line
        raise CheckpointError(f"{path}: cannot read it as a checkpoint: {unreadable_reason(path, err)}") from None
    damaged = damaged_member(path)
    if damaged is not None:
        raise CheckpointError(
            f"{path}: damaged (the stored checksum of {damaged} does not match its bytes: a disk or copy error); "
            "use another checkpoint or train again"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (a {type(state).__name__}, expected a dict)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing keys: {', '.join(missing)})")
    version = state.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this code ({FORMAT_VERSION}); update the code"
        )
    if kinds is not None and state.get("model_kind") not in tuple(kinds):
        raise CheckpointError(
            f"{path}: holds a {state.get('model_kind')!r} model, expected {' or '.join(repr(kind) for kind in kinds)}"
        )
    state["path"] = str(path)
    return state


def unreadable_reason(path: Path, err: Exception) -> str:
    """One line on why `torch.load(path, weights_only=True)` failed (torch's own message spans several lines and
    suggests `weights_only=False`, which this project never uses: it would run code from the file)."""
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint file (truncated, e.g. by an interrupted copy, or another kind of file)"
    if isinstance(err, pickle.UnpicklingError):
        return (
            "it holds Python objects other than tensors, numbers, strings, lists and dicts, which this "
            "project's checkpoints never do"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"corrupt PyTorch archive ({first[:160]})"


def load_state_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    where: str,
    allowed_missing: Iterable[str] = (),
    allowed_unexpected: Iterable[str] = (),
) -> None:
    """`model.load_state_dict(state, strict=False)`, then raise CheckpointError if a key is missing or unexpected
    beyond the allowed glob patterns (e.g. `"head.*"`); shapes must match in any case."""
    allowed_missing, allowed_unexpected = tuple(allowed_missing), tuple(allowed_unexpected)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches
        raise CheckpointError(
            f"{where}: weights do not fit the {type(model).__name__} built from its config: {err}"
        ) from err
    missing = [k for k in result.missing_keys if not any(fnmatchcase(k, p) for p in allowed_missing)]
    unexpected = [k for k in result.unexpected_keys if not any(fnmatchcase(k, p) for p in allowed_unexpected)]
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: state does not match {type(model).__name__}: {len(missing)} missing key(s) "
            f"{missing[:8]}, {len(unexpected)} unexpected key(s) {unexpected[:8]}"
        )


def build_backbone(checkpoint: Mapping[str, Any], where: str = "checkpoint") -> NeuroNet | SynthSleepNet:
    """Model of `checkpoint["model_kind"]` built from `model_config`, weights loaded (every key must match)."""
    kind = checkpoint["model_kind"]
    if kind not in BUILDERS:
        raise CheckpointError(f"{where}: model kind {kind!r} is not a backbone; expected one of {sorted(BUILDERS)}")
    try:
        model = BUILDERS[kind](checkpoint["model_config"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: cannot build a {kind} from the stored config: {err}") from err
    load_state_checked(model, checkpoint["model"], where)
    return model


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> NeuroNet | SynthSleepNet:
    """A ready backbone from one checkpoint (or run directory): NeuroNet for a unimodal checkpoint,
    SynthSleepNet for a multimodal one, in eval mode. Either exposes `encode(x) -> (pooled, tokens)`."""
    checkpoint = read_checkpoint(path, map_location, kinds=BUILDERS)
    return build_backbone(checkpoint, checkpoint["path"]).eval()


def load_neuronet(path: str | Path, map_location: str | torch.device = "cpu") -> NeuroNet:
    """The unimodal NeuroNet of a checkpoint (or run directory); CheckpointError for any other kind."""
    checkpoint = read_checkpoint(path, map_location, kinds=(NEURONET,))
    return build_backbone(checkpoint, checkpoint["path"]).eval()
