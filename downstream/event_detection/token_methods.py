"""The token methods of the event task (`probe`, `finetune`, `scratch`): a backbone's per-frame tokens resampled
to one vector per second (`downstream.event_detection.tokens`), a `SecondsHead` over the seconds trained on windows
of the train nights (finetune / scratch: with the encoders, on raw epochs), the step with the best val mean event
F1 kept."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dataset.constants import EPOCH_S
from dataset.event_targets import RESPIRATORY_CLASSES
from downstream.backbone import resolve_backbone
from downstream.data import check_two_classes
from downstream.event_detection.detector import EventDetector, Night, recording_columns
from downstream.event_detection.head import SecondsClassifier, SecondsHead, train_steps
from downstream.event_detection.nights import labelled_train_nights, read_signals
from downstream.event_detection.selection import select_decoding
from downstream.event_detection.tokens import SecondTokenizer, default_read_channels, night_tokens
from downstream.training import class_weights
from models.heads import EpochEncoder
from models.loading import SYNTHSLEEPNET
from utils.config import Config, UsageError
from utils.distributed import resolve_device
from utils.engine import evaluating

TOKEN_METHODS = ("probe", "finetune", "scratch")  # per-second vectors from a backbone + the SecondsHead
ENCODER_MODE = {"probe": "frozen", "finetune": "lora", "scratch": "full"}  # models.heads.EpochEncoder modes
DEFAULT_STEPS = {"probe": 2000, "finetune": 300, "scratch": 300}  # optimizer steps unless --steps


def token_backbone(cfg: Config):
    """The `downstream.backbone.BackboneSource` of --backbone (random weights for scratch); UsageError if unusable."""
    options = Config(
        backbone=cfg.backbone,
        init="random" if cfg.method == "scratch" else "pretrained",
        channels=cfg.channels,
        preset=None,
        model_args={},
    )
    return resolve_backbone(options, cfg.data)


def backbone_channels_present(cfg: Config, channels: list[str], nights: list[Night]) -> dict[str, list[str]]:
    """{recording: the backbone channels it has}; UsageError naming the nights that have none of them."""
    present = {
        n.recording_id: [c for c in channels if c in recording_columns(cfg.data, n.recording_id)] for n in nights
    }
    none = [rid for rid, found in present.items() if not found]
    if none:
        raise UsageError(
            f"--backbone {cfg.backbone}: reads channel(s) {', '.join(channels)}, and {len(none)} of "
            f"{len(present)} night(s) of --data {cfg.data} have none of them ({', '.join(none[:3])}"
            f"{' ...' if len(none) > 3 else ''}); use a backbone over channels the nights were parsed with"
        )
    return present


class WindowTokenModel(nn.Module):
    """finetune / scratch: raw windows {channel: (B, T, samples)} → tokenizer on the B x T epochs → per-second
    vectors (B, T x 30, D) → SecondsHead → (B, T x 30, 5) logits."""

    def __init__(self, tokenizer: SecondTokenizer, head: SecondsHead):
        super().__init__()
        self.tokenizer, self.head = tokenizer, head

    def forward(self, windows: dict[str, torch.Tensor]) -> torch.Tensor:
        batch, length = next(iter(windows.values())).shape[:2]
        vectors = self.tokenizer({c: x.flatten(0, 1) for c, x in windows.items()})  # (B x T, 30, D)
        return self.head(vectors.reshape(batch, length * EPOCH_S, -1))


def fit_tokens(
    cfg: Config, nights: dict[str, list[Night]], started: float
) -> tuple[EventDetector, dict[str, Any], list[str], dict[str, Any]]:
    """Train the per-second head (and, finetune / scratch, the encoders) of a token method; fill every night's
    `features` with its per-second vectors. Returns the detector (decoding not chosen yet), the train record,
    the names of the vector's columns and the extra files to write (finetune / scratch: encoder.pt)."""
    source = token_backbone(cfg)
    every = [n for split in ("train", "val", "test") for n in nights[split]]
    present = backbone_channels_present(cfg, source.channels, every)
    token_source = (
        cfg.token_source if cfg.token_source != "auto" else ("fusion" if source.kind == SYNTHSLEEPNET else "encoder")
    )
    if token_source == "fusion" and source.kind != SYNTHSLEEPNET:
        raise UsageError(f"--token-source fusion needs a SynthSleepNet backbone; {cfg.backbone} is a {source.kind}")
    read = list(cfg.token_channels) if cfg.token_channels else default_read_channels(source.channels)
    if not set(read) <= set(source.channels):
        raise UsageError(f"--token-channels {read}: not all channels the backbone reads ({source.channels})")
    lacking = {rid: [c for c in read if c not in found] for rid, found in present.items()}
    lacking = {rid: missing for rid, missing in lacking.items() if missing}
    if lacking:
        shown = "; ".join(f"{rid}: {', '.join(m)}" for rid, m in list(lacking.items())[:5])
        print(
            f"warning: {len(lacking)} night(s) lack read channels (zeros in their part of the vector): {shown}"
            f"{' ...' if len(lacking) > 5 else ''}",
            flush=True,
        )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    encoder = EpochEncoder(source.instantiate(), source.channels, mode=ENCODER_MODE[cfg.method])
    tokenizer = SecondTokenizer(encoder, token_source, read).to(device)
    sha = source.provenance.get("sha256") if cfg.method == "probe" else None  # trained encoders: never cached

    def encode(split_nights: list[Night]) -> None:
        with evaluating(tokenizer):
            vectors = night_tokens(
                tokenizer,
                cfg.data,
                [n.recording_id for n in split_nights],
                present,
                device,
                batch_epochs=cfg.batch_epochs,
                cache_dir=cfg.cache_dir,
                backbone_sha256=sha,
                progress=cfg.progress,
            )
        for night in split_nights:
            night.features = vectors[night.recording_id]  # (n_seconds, D)

    window_s = cfg.epochs_per_window * EPOCH_S
    train_nights = labelled_train_nights(nights["train"], cfg.label_fraction, cfg.seed)
    counts = np.bincount(
        np.concatenate([n.labels[n.labels >= 0] for n in train_nights]), minlength=len(RESPIRATORY_CLASSES)
    )
    check_two_classes(counts, "seconds", "--label-fraction")
    head = SecondsHead(tokenizer.dim, width=cfg.head_width, depth=cfg.head_depth, dropout=cfg.head_dropout)
    if cfg.method == "probe":
        encode(every)
    else:
        encode(nights["train"])  # the initial encoders' vectors: the head's input statistics only
    sample = np.random.default_rng([cfg.seed, 5])
    pooled = np.concatenate(
        [n.features[sample.choice(n.n_seconds, size=min(n.n_seconds, 20_000), replace=False)] for n in nights["train"]]
    )
    head.set_statistics(pooled)
    head.to(device)
    print(
        f"event_detection | {cfg.method} | backbone {source.name} ({source.kind}, {ENCODER_MODE[cfg.method]}) | "
        f"{token_source} tokens of {', '.join(read)} -> {tokenizer.dim}-d per second | head receptive field "
        f"{head.receptive_field_s} s | train {int(counts.sum())} labelled seconds (per class {counts.tolist()}) | "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )
    scorer = EventDetector(None, [], min_duration_s=cfg.min_duration_s)

    def val_score(probabilities: list[np.ndarray]) -> float:
        _, _, curve = select_decoding(scorer, nights["val"], probabilities)
        return max((c["score"] for c in curve if math.isfinite(c["score"])), default=float("nan"))

    def head_probabilities(vectors: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(vectors).to(device)[None]  # (1, n_seconds, D)
        return head(x)[0].float().softmax(dim=-1)[:, 1:].double().cpu().numpy()  # (n_seconds, 4)

    if cfg.method == "probe":
        model: nn.Module = head

        def batch_inputs(starts):
            out = np.zeros((len(starts), window_s, tokenizer.dim), dtype=np.float32)  # (B, S, D), zeros past the end
            for b, (i, first) in enumerate(starts):
                part = nights["train"][i].features[first : first + window_s]
                out[b, : part.shape[0]] = part
            return torch.from_numpy(out).to(device)

        def evaluate(_model):
            return val_score([head_probabilities(n.features) for n in nights["val"]])

        align = 1
    else:
        model = WindowTokenModel(tokenizer, head)
        channels = list(source.channels)
        usable = [i for i, n in enumerate(nights["train"]) if len(present[n.recording_id]) == len(channels)]
        if not usable:
            raise UsageError(
                f"--method {cfg.method}: no train night has every backbone channel ({', '.join(channels)})"
            )
        signals = {i: read_signals(cfg.data, nights["train"][i].recording_id, channels) for i in usable}
        train_nights = [train_nights[i] for i in usable]
        index = dict(enumerate(usable))

        def batch_inputs(starts):
            out = {
                c: np.zeros((len(starts), cfg.epochs_per_window, signals[usable[0]][c].shape[1]), np.float32)
                for c in channels
            }  # (B, T, samples) each, zeros past the end
            for b, (i, first) in enumerate(starts):
                for c in channels:
                    part = signals[index[i]][c][first // EPOCH_S : first // EPOCH_S + cfg.epochs_per_window]
                    out[c][b, : part.shape[0]] = part
            return {c: torch.from_numpy(x).to(device) for c, x in out.items()}

        def evaluate(_model):
            encode(nights["val"])
            return val_score([head_probabilities(n.features) for n in nights["val"]])

        align = EPOCH_S
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"training {trainable / 1e3:.1f} k weights for {cfg.steps} steps of {cfg.batch_windows} windows x "
        f"{cfg.epochs_per_window} epochs",
        flush=True,
    )
    result = train_steps(
        model,
        train_nights,
        batch_inputs,
        class_weights(counts, cfg.class_weights),
        evaluate,
        steps=cfg.steps,
        batch=cfg.batch_windows,
        window_s=window_s,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        eval_every=cfg.eval_every,
        seed=cfg.seed,
        device=device,
        align=align,
        log=lambda line: print(line, flush=True),
    )
    if cfg.method != "probe":
        encode(every)  # the selected encoders' vectors of every night
    names = [f"{token_source}:{c}:{k}" for c in read for k in range(tokenizer.token_dim)]
    detector = EventDetector(
        SecondsClassifier(head), names, min_duration_s=cfg.min_duration_s, hypopnea_rule=cfg.hypopnea_rule
    )
    record = {
        "n_recordings": len(nights["train"]),
        "n_seconds": int(counts.sum()),
        "class_counts": counts.tolist(),
        "recordings": [n.recording_id for n in nights["train"]],
        "backbone": source.provenance,
        "encoder_mode": ENCODER_MODE[cfg.method],
        "token_source": token_source,
        "token_channels": read,
        "token_dim": tokenizer.dim,
        "head": head.config,
        "receptive_field_s": head.receptive_field_s,
        "steps": cfg.steps,
        "batch_windows": cfg.batch_windows,
        "window_s": window_s,
        "lr": cfg.lr,
        "trainable_weights": trainable,
        "best_step": result.best_step,
        "best_val_score": result.best_score,
        "history": result.history,
        "train_seconds": result.seconds,
    }
    files = (
        {}
        if cfg.method == "probe"
        else {
            "encoder.pt": {
                "model_kind": "epoch_encoder",
                "model_config": encoder.to_config(),
                "model": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
            }
        }
    )
    return detector, record, names, files
