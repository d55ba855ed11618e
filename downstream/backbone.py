"""The backbone of a downstream run (docs/evaluation.md 5.3) and the frozen encoders shared between loaded runs.

`--backbone RUN` is a pretraining run directory (best.pt, else last.pt) or checkpoint of a unimodal NeuroNet
(one channel; default the first it was pretrained on) or a SynthSleepNet (its channels). With `--init random`
(supervised from scratch) the backbone's architecture comes from that checkpoint, or, without `--backbone`,
from `--preset` over `--channels` (one channel: NeuroNet; several: SynthSleepNet with one NeuroNet encoder per
channel); weights are random and everything trains (`resolve_backbone` -> `BackboneSource`).

`shared_encoder`: the frozen encoder of a backbone file, built once per file content, channels and device
while a loaded run holds it (`file_sha256` hashes each file once per process).
"""

from __future__ import annotations

import argparse
import copy
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dataset.constants import CHANNEL_BY_NAME
from models.heads import EpochEncoder
from models.loading import BUILDERS, NEURONET, SYNTHSLEEPNET, build_backbone, load_backbone, read_checkpoint
from models.neuronet import neuronet_config_for_rate
from models.synthsleepnet import synthsleepnet_config
from utils.checkpoint import sha256_file
from utils.config import UsageError


@dataclass
class BackboneSource:
    """Where a backbone comes from: its kind and config, pretrained weights (None = random init), the channels
    it encodes, and provenance for the run record."""

    kind: str
    config: dict
    state: dict | None
    channels: list[str]
    provenance: dict

    @property
    def name(self) -> str:
        return self.provenance["name"]

    def instantiate(self) -> nn.Module:
        """The backbone module: pretrained weights loaded (every key must match), or random (seeded by the
        caller's RNG state)."""
        if self.state is not None:
            return build_backbone(
                {"model_kind": self.kind, "model_config": self.config, "model": self.state}, self.provenance["path"]
            )
        return BUILDERS[self.kind](copy.deepcopy(self.config))


def resolve_backbone(cfg: argparse.Namespace, data_dir: str | Path) -> BackboneSource:
    """The backbone of `--backbone` / `--init` / `--preset` / `--channels` (module docstring)."""
    if cfg.model_args and cfg.backbone is not None:
        raise UsageError(
            "--model-arg shapes a backbone built from --preset (--init random without "
            "--backbone); a checkpoint's architecture is fixed"
        )
    if cfg.backbone is not None:
        try:
            checkpoint = read_checkpoint(cfg.backbone)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--backbone {cfg.backbone}: {err}") from None
        kind, path = checkpoint["model_kind"], checkpoint["path"]
        if kind not in BUILDERS:
            raise UsageError(
                f"--backbone {path}: holds a {kind!r} model, expected a pretrained backbone (one of "
                f"{sorted(BUILDERS)}: a unimodal or multimodal pretraining checkpoint)"
            )
        config = checkpoint["model_config"]
        metadata = checkpoint.get("metadata") or {}
        trained = list(config["channels"]) if kind == SYNTHSLEEPNET else list(metadata.get("channels") or [])
        where = Path(path).resolve()
        label = where.parent.name if where.name in ("best.pt", "last.pt") else where.stem  # run directory or file
        provenance = {
            "path": str(where),
            "sha256": sha256_file(where),
            "step": checkpoint.get("step"),
            "kind": kind,
            "name": f"{kind}:{label}",
            "init": cfg.init,
        }
        splits_hash = sha256_file(Path(data_dir) / "splits.json")
        if cfg.init == "pretrained" and checkpoint.get("splits_sha256") not in (None, splits_hash):
            warnings.warn(
                f"{path} was pretrained with another splits.json than {data_dir}; make sure its pretraining "
                "data held no subject of this test split",
                stacklevel=2,
            )
        state = checkpoint["model"] if cfg.init == "pretrained" else None
    else:
        if not cfg.channels:
            raise UsageError("--init random without --backbone needs --channels (and --preset)")
        trained = list(cfg.channels)
        try:
            rate = {c: CHANNEL_BY_NAME[c].target_fs for c in trained}  # 10-Hz channels: respiratory geometry
            if len(trained) == 1:
                kind = NEURONET
                config = neuronet_config_for_rate(cfg.preset, rate[trained[0]], **cfg.model_args).to_dict()
            else:
                encoders = {c: neuronet_config_for_rate(cfg.preset, rate[c]).to_dict() for c in trained}
                kind = SYNTHSLEEPNET
                config = synthsleepnet_config(
                    cfg.preset, channels=trained, encoders=encoders, **cfg.model_args
                ).to_dict()
        except (ValueError, TypeError) as err:
            raise UsageError(f"--preset {cfg.preset} / --model-arg: {err}") from err
        provenance = {
            "path": None,
            "sha256": None,
            "step": None,
            "kind": kind,
            "name": f"{kind}[{cfg.preset}]",
            "init": "random",
        }
        state = None
    if cfg.init == "random":
        provenance["name"] += " random-init"
    channels = list(cfg.channels) if cfg.channels else (trained if kind == SYNTHSLEEPNET else trained[:1])
    if not channels:
        raise UsageError(
            f"--backbone {cfg.backbone}: the checkpoint does not say which channel it was trained on; pass --channels"
        )
    if kind == NEURONET and len(channels) != 1:
        raise UsageError(f"a unimodal NeuroNet backbone encodes one channel, got --channels {channels}")
    spec = CHANNEL_BY_NAME.get(channels[0])
    if kind == NEURONET and spec is not None and spec.target_fs != config.get("fs", spec.target_fs):
        raise UsageError(
            f"--channels {channels[0]} is sampled at {spec.target_fs} Hz; the NeuroNet backbone takes "
            f"{config['fs']:g}-Hz epochs (use a backbone pretrained on a {spec.target_fs}-Hz channel)"
        )
    if kind == SYNTHSLEEPNET and not set(channels) <= set(trained):
        raise UsageError(f"--channels {channels} are not all channels of the SynthSleepNet ({trained})")
    return BackboneSource(kind, config, state, channels, provenance)


_FILE_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 of the file
_FROZEN_ENCODERS: weakref.WeakValueDictionary[tuple[str, str, tuple[str, ...], str], EpochEncoder] = (
    weakref.WeakValueDictionary()
)  # (path, sha256, channels, device) -> frozen encoder, while some run holds it


def file_sha256(path: str | Path) -> str:
    """`sha256_file` of `path`, hashed once per process while its size and modification time stay the same."""
    where = Path(path).resolve()
    stat = where.stat()
    key = (str(where), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_SHA256:
        _FILE_SHA256[key] = sha256_file(where)
    return _FILE_SHA256[key]


def shared_encoder(
    path: str | Path, channels: Sequence[str], map_location: str | torch.device = "cpu", pooling: str = "mean"
) -> EpochEncoder:
    """The frozen `EpochEncoder` of a pretraining checkpoint over `channels` with `pooling`, built once per
    distinct backbone file (by content), channels, pooling and device while a loaded run still holds it: the
    probes of one backbone share one module instead of each rebuilding its own copy. Inference only: the module
    is frozen and shared, so callers must not train or modify it."""
    key = (str(Path(path).resolve()), file_sha256(path), tuple(channels), pooling, str(map_location))
    encoder = _FROZEN_ENCODERS.get(key)
    if encoder is None:
        encoder = EpochEncoder(load_backbone(path, map_location), list(channels), "frozen", pooling=pooling).eval()
        _FROZEN_ENCODERS[key] = encoder
    return encoder
