"""Event-level apnea and hypopnea detection: onsets, durations and types, scored per event and per night (AHI).

    python downstream/event_detection/train.py --data DST [--method features] [--hypopnea-rule 3a|4|all] \
        [--label-fraction 1.0] [--out DIR] [--seed 0]
    python downstream/event_detection/train.py --data DST --method probe|finetune|scratch --backbone RUN \
        [--token-source auto|fusion|encoder] [--token-channels ...] [--steps N] [--cache-dir DIR] ...

The per-epoch tasks (`--task apnea|hypopnea` of the other downstream scripts) say whether an epoch's midpoint is
in an event; scorers mark events with onsets and durations from airflow, the effort belts and SpO2. This task
predicts those events (docs/evaluation.md, "Events"):

- inputs: the respiratory channels `airflow`, `thor`, `abdo`, `spo2` of each night (10 Hz), as per-second
  features with context (`utils.features.respiratory_features`: flow and effort amplitude against the preceding
  2 min, thoraco-abdominal correlation, SpO2 drop below its baseline and the nadir 0-60 s AHEAD, since the SpO2
  lags the event by 20-30 s; values at lags of -30..+30 s). A night lacking a channel gets NaN features for it;
  the run stops with one error line when no night of the splits has any respiratory channel;
- targets: one class per second (`dataset.event_targets`: none, obstructive, central, mixed apnea, hypopnea);
- method `features`: scikit-learn `HistGradientBoostingClassifier` on seconds of the `train` nights
  (--label-fraction of their 30-s epochs, seeded, all seconds of a drawn epoch; then at most --max-train-seconds
  of them, seeded), per-second probabilities decoded into events by `utils.events.decode_events` (AASM 10-s
  minimum) with the threshold and merge gap that maximise the mean of the apnea and hypopnea event F1 on `val`
  ONLY; a second classifier, fitted on the scored hypopneas of `train`, says which predicted hypopneas count in
  the AHI under --hypopnea-rule (the scored AHI counts a hypopnea only with a desaturation or arousal, 3a/4);
- method `probe`: a FROZEN backbone (--backbone: a SynthSleepNet over channels that include respiratory ones, or a
  unimodal NeuroNet of one channel) gives per-frame tokens of every epoch, resampled to one vector per second
  (`downstream.event_detection.tokens`: by default the fusion tokens at the respiratory channels' frame positions,
  concatenated; computed once per night, cached under --cache-dir); a 1-D dilated-convolution head over the
  seconds (`downstream.event_detection.head.SecondsHead`, +-62 s of context, not causal: the SpO2 drop follows
  the event) is trained on random windows of --epochs-per-window epochs of the `train` nights (the seconds of the
  --label-fraction epochs labelled), class-weighted cross-entropy, for --steps optimizer steps; the step whose
  weights give the best val mean event F1 (scored every --eval-every steps) is kept. Decoding, the hypopnea
  qualifier (on event summaries of the per-second vectors instead of the features) and every metric are those
  of the features method;
- method `finetune`: the same, with new LoRA on the encoders (a SynthSleepNet's adapters and fusion train too)
  trained with the head on windows of raw epochs (fewer steps); `scratch`: the same architecture (from
  --backbone's config) from random weights, everything trained. A night lacking one of the read channels gets
  zeros there; a night with none of the backbone's channels is an input error (one `error:` line);
- `test` is scored once: event precision / recall / F1 per type, apnea family and any (one-to-one matching at
  IoU >= 0.2, pooled over nights, 95 % CIs by resampling test subjects), per-night AHI estimated against the
  scored AHI under the same rule, with SLEEP FROM THE SCORED HYPNOGRAM (this task has no stager; predict.py
  uses predicted sleep), their agreement (`utils.ahi.ahi_agreement`), and the epoch-level apnea and
  hypopnea AUROC (maximum per-second probability in the epoch against the epoch's midpoint label, comparable
  to the per-epoch tasks).

Outputs in --out (default runs/downstream/event_detection/<method>-<rule>-lf<fraction>-seed<seed>): config.json,
model.pkl (the `EventDetector`; token methods: its classifier is the trained head, and finetune / scratch also
write encoder.pt, the trained backbone as an `EpochEncoder` state and config), metrics.json, events.csv (predicted test events: recording_id, onset_s,
duration_s, type, probability, counted), results.md. Every file is written at the end (temp file + rename), so a
failed run leaves an earlier run's outputs as they were.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from torch import nn
from tqdm.auto import tqdm

from dataset.cohort import recording_path
from dataset.constants import EPOCH_S, RESP_CHANNELS
from dataset.event_targets import APNEA_CLASSES, HYPOPNEA_CLASS, RESPIRATORY_CLASSES, read_event_table
from dataset.scored_events import DEFAULT_HYPOPNEA_RULE, HYPOPNEA_RULES, qualifying_events
from dataset.splits import read_splits
from downstream.backbone import resolve_backbone
from downstream.event_detection.detector import (
    EventDetector,
    Night,
    event_summaries,
    load_night,
    present_channels,
    recording_columns,
)
from downstream.event_detection.head import SecondsClassifier, SecondsHead, TrainNight, train_steps
from downstream.event_detection.tokens import SecondTokenizer, default_read_channels, night_tokens
from downstream.leakage import LeakageError, assert_no_test_leakage
from downstream.results import json_safe
from downstream.training import class_weights
from models.heads import TOKEN_SOURCES, EpochEncoder
from utils.ahi import ahi_agreement, event_index
from utils.config import (
    ArgumentParser,
    Config,
    UsageError,
    check_out_dir,
    comma_list,
    fraction,
    non_negative_int,
    parse_config,
    positive_float,
    positive_int,
    probability,
    reported_errors,
    save_config,
)
from utils.distributed import resolve_device
from utils.engine import evaluating
from utils.events import EVENT_MIN_S, MATCH_IOU, event_detection_metrics, sum_detection_counts
from utils.features import respiratory_features
from utils.metrics import auroc_auprc, bootstrap_ci
from utils.sleep_stats import SLEEP_STAGES

METHODS = ("features", "probe", "finetune", "scratch")
TOKEN_METHODS = ("probe", "finetune", "scratch")  # per-second vectors from a backbone + the SecondsHead
ENCODER_MODE = {"probe": "frozen", "finetune": "lora", "scratch": "full"}  # models.heads.EpochEncoder modes
DEFAULT_STEPS = {"probe": 2000, "finetune": 300, "scratch": 300}  # optimizer steps unless --steps
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.801, 0.05), 2).tolist())  # decoding thresholds tried on val
MERGE_GAPS_S = (0.0, 3.0, 6.0, 10.0)  # merge gaps tried on val
DETECTION_KEYS = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea", "apnea", "any")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or YAML file of options (keys as in config.json); explicit flags win",
    )
    parser.add_argument("--data", type=Path, default=None, help="parsed cohort folder (data_parser's DST)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="features",
        help="features: gradient-boosted trees on per-second respiratory features; probe: frozen "
        "backbone tokens per second + a temporal conv head; finetune: the same with LoRA on the "
        "encoders; scratch: the same architecture from random weights",
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--hypopnea-rule",
        choices=HYPOPNEA_RULES,
        default=DEFAULT_HYPOPNEA_RULE,
        help="which scored hypopneas count in the AHI: 3a (>= 3 %% desaturation or arousal), 4 "
        "(>= 4 %% desaturation), all",
    )
    parser.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="fraction (0, 1] of the `train` nights' 30-s epochs whose seconds are used (seeded)",
    )
    parser.add_argument(
        "--max-train-seconds",
        type=positive_int,
        default=300_000,
        help="at most this many labelled seconds fitted (seeded subsample)",
    )
    parser.add_argument(
        "--epochs-per-window",
        type=positive_int,
        default=10,
        help="context of a prediction in 30-s epochs; the features method reads the whole night "
        "(context: its 2-min baselines and lags up to 60 s), so this is recorded only",
    )
    parser.add_argument("--min-duration-s", type=float, default=EVENT_MIN_S, help="shortest event decoded (AASM 10 s)")
    parser.add_argument(
        "--n-boot",
        type=non_negative_int,
        default=1000,
        help="bootstrap replicates (test subjects) for the CIs; 0 = none",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    model = parser.add_argument_group("gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)")
    model.add_argument("--hgb-max-iter", type=positive_int, default=200, help="boosting iterations")
    model.add_argument("--hgb-learning-rate", type=float, default=0.1)
    model.add_argument("--hgb-max-leaf-nodes", type=positive_int, default=31)
    model.add_argument("--hgb-min-samples-leaf", type=positive_int, default=40)
    tokens = parser.add_argument_group("token methods (probe, finetune, scratch)")
    tokens.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="pretraining run directory or checkpoint (SynthSleepNet or unimodal NeuroNet); scratch: "
        "its architecture only",
    )
    tokens.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="backbone channels read (default: all of a SynthSleepNet's; a NeuroNet's own)",
    )
    tokens.add_argument(
        "--token-source",
        choices=("auto", *TOKEN_SOURCES),
        default="auto",
        help="fusion: the SynthSleepNet's fusion output tokens at each read channel's frames; "
        "encoder: each channel's encoder tokens; auto: fusion for a SynthSleepNet",
    )
    tokens.add_argument(
        "--token-channels",
        type=comma_list,
        default=None,
        help="channels whose tokens make the per-second vector (default: the backbone's "
        "respiratory channels, else all of them)",
    )
    tokens.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps (default {DEFAULT_STEPS})")
    tokens.add_argument(
        "--batch-windows",
        type=positive_int,
        default=None,
        help="windows of --epochs-per-window epochs per step (default 16 probe, 4 finetune/scratch)",
    )
    tokens.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="AdamW peak learning rate (default 1e-3 probe, 3e-4 finetune/scratch); warmup, cosine",
    )
    tokens.add_argument("--weight-decay", type=float, default=0.01)
    tokens.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        help="steps between val scorings (model selection; default steps / 10)",
    )
    tokens.add_argument(
        "--class-weights",
        choices=("balanced", "none"),
        default="balanced",
        help="cross-entropy class weights over the labelled train seconds",
    )
    tokens.add_argument("--head-width", type=positive_int, default=64, help="channels of the temporal conv head")
    tokens.add_argument(
        "--head-depth",
        type=positive_int,
        default=5,
        help="dilated conv blocks (receptive field 1 + 4 x (2^depth - 1) s)",
    )
    tokens.add_argument("--head-dropout", type=probability, default=0.1)
    tokens.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="probe: keep each night's per-second vectors here (keyed by backbone file, channels "
        "and token layout) and reuse them",
    )
    tokens.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    tokens.add_argument("--batch-epochs", type=positive_int, default=64, help="epochs per batch when encoding")
    return parser


def parse_args(argv: list[str] | None) -> Config:
    """The options resolved once (the token methods' step budget, batch, lr and evaluation interval; the default
    --out), as a frozen Config: config.json records these values."""
    parser = build_parser()
    cfg = parse_config(parser, argv)
    if not cfg.data.is_dir() or not (cfg.data / "splits.json").is_file():
        raise UsageError(f"--data {cfg.data}: no parsed cohort with splits.json there (run dataset/data_parser.py)")
    if not 0 <= cfg.min_duration_s:
        parser.error(f"--min-duration-s must be >= 0, got {cfg.min_duration_s}")
    resolved: dict[str, Any] = {}
    if cfg.method in TOKEN_METHODS:
        if cfg.backbone is None:
            parser.error(
                f"--method {cfg.method} needs --backbone (a pretraining run or checkpoint"
                f"{'; scratch takes its architecture' if cfg.method == 'scratch' else ''})"
            )
        end_to_end = cfg.method != "probe"
        steps = cfg.steps or DEFAULT_STEPS[cfg.method]
        resolved = {
            "backbone": Path(cfg.backbone),
            "steps": steps,
            "batch_windows": cfg.batch_windows or (4 if end_to_end else 16),
            "lr": cfg.lr or (3e-4 if end_to_end else 1e-3),
            "eval_every": cfg.eval_every or max(1, steps // 10),
        }
    if cfg.out is None:
        resolved["out"] = (
            Path("runs")
            / "downstream"
            / "event_detection"
            / f"{cfg.method}-{cfg.hypopnea_rule}-lf{cfg.label_fraction:g}-seed{cfg.seed}"
        )
    cfg = cfg.replace(**resolved)
    check_out_dir(cfg.out)
    return cfg


# ---------------------------------------------------------------------------------------- data
def load_split_nights(cfg: Config) -> dict[str, list[Night]]:
    """Every night of train, val and test with features (the features method) and targets (UsageError when a
    split has no recording, or, for the features method, when no night has a respiratory channel)."""
    splits = read_splits(cfg.data / "splits.json")["recordings"]
    manifest_path = cfg.data / "manifest.parquet"
    if not manifest_path.is_file():
        raise UsageError(f"{manifest_path}: no manifest; run dataset/data_parser.py on --data")
    manifest = pd.read_parquet(manifest_path).set_index("recording_id")
    try:
        events = read_event_table(cfg.data)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    wanted = {split: sorted(splits.get(split, [])) for split in ("train", "val", "test")}
    for split, ids in wanted.items():
        if not ids:
            raise UsageError(f"{cfg.data / 'splits.json'}: split {split!r} has no recordings")
    every = sorted({r for ids in wanted.values() for r in ids})
    channels = {}
    for rid in every:
        try:
            channels[rid] = present_channels(cfg.data, rid)
        except OSError as err:
            raise UsageError(f"{cfg.data / 'recordings' / (rid + '.parquet')}: unreadable ({err})") from None
    with_features = cfg.method == "features"  # the token methods check the backbone's channels instead
    if with_features and not any(channels.values()):
        raise UsageError(
            f"--data {cfg.data}: no recording of train/val/test has a respiratory channel "
            f"({', '.join(RESP_CHANNELS)}); the event task reads them (parse with those channels)"
        )
    lacking = {rid: [c for c in RESP_CHANNELS if c not in found] for rid, found in channels.items()}
    lacking = {rid: missing for rid, missing in lacking.items() if missing}
    if lacking and with_features:
        shown = "; ".join(f"{rid}: {', '.join(m)}" for rid, m in list(lacking.items())[:5])
        print(
            f"warning: {len(lacking)} night(s) lack respiratory channels (their features are NaN): {shown}"
            f"{' ...' if len(lacking) > 5 else ''}",
            flush=True,
        )
    nights: dict[str, list[Night]] = {}
    bar = tqdm(total=len(every), desc="features" if with_features else "labels", unit="night", disable=not cfg.progress)
    for split, ids in wanted.items():
        nights[split] = []
        for rid in ids:
            row = manifest.loc[rid].to_dict()
            nights[split].append(load_night(cfg.data, rid, str(row.get("subject_id", rid)), events, row, with_features))
            bar.update()
    bar.close()
    return nights


def drawn_seconds(
    nights: list[Night], label_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled train seconds: a seeded `label_fraction` of the 30-s epochs of all nights, every second of a
    drawn epoch, as sorted global second indices (nights in order), and the nights' first epoch indices (n + 1,)."""
    offsets = np.cumsum([0] + [n.n_seconds // EPOCH_S for n in nights])  # epoch index ranges per night
    total = int(offsets[-1])
    drawn = np.sort(rng.choice(total, size=max(1, int(round(label_fraction * total))), replace=False))
    return (drawn[:, None] * EPOCH_S + np.arange(EPOCH_S)[None, :]).reshape(-1), offsets  # global second index


def training_seconds(
    nights: list[Night], label_fraction: float, max_seconds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) and classes (N,) of the train seconds: a seeded `label_fraction` of the 30-s epochs of
    all nights (every second of a drawn epoch), then at most `max_seconds` of those seconds (seeded)."""
    rng = np.random.default_rng(seed)
    seconds, offsets = drawn_seconds(nights, label_fraction, rng)
    if seconds.size > max_seconds:
        seconds = np.sort(rng.choice(seconds, size=max_seconds, replace=False))
    night_of = np.searchsorted(offsets * EPOCH_S, seconds, side="right") - 1
    features, labels = [], []
    for i, night in enumerate(nights):
        local = seconds[night_of == i] - offsets[i] * EPOCH_S
        features.append(night.features[local])
        labels.append(
            night.targets.respiratory[np.minimum(local, night.targets.n_seconds - 1)]
            if night.targets.n_seconds
            else np.zeros(local.size, np.int8)
        )
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def make_classifier(cfg: Config, max_iter: int | None = None) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=max_iter or cfg.hgb_max_iter,
        learning_rate=cfg.hgb_learning_rate,
        max_leaf_nodes=cfg.hgb_max_leaf_nodes,
        min_samples_leaf=cfg.hgb_min_samples_leaf,
        early_stopping=False,
        random_state=cfg.seed,
    )


def fit_qualifier(cfg: Config, nights: list[Night], detector: EventDetector) -> dict[str, Any]:
    """Fit `detector.qualifier` on the scored hypopneas of `nights`: does it count under the rule? Returns counts."""
    if cfg.hypopnea_rule == "all":
        return {"rule": "all", "note": "every hypopnea counts"}
    rows, labels = [], []
    for night in nights:
        scored = night.targets.events
        counted = {(e.onset_s, e.duration_s) for e in qualifying_events(scored, cfg.hypopnea_rule)}
        hypopneas = [e for e in scored if e.type == "hypopnea"]
        if hypopneas:
            rows.append(event_summaries(night.features, hypopneas))
            labels += [(e.onset_s, e.duration_s) in counted for e in hypopneas]
    y = np.asarray(labels, dtype=np.int64)
    summary = {"rule": cfg.hypopnea_rule, "n_hypopneas": int(y.size), "n_counted": int(y.sum())}
    if y.size == 0 or y.min() == y.max():
        detector.qualifier, detector.qualifier_constant = None, bool(y.size == 0 or y[0] == 1)
        summary["constant"] = detector.qualifier_constant
        return summary
    detector.qualifier = make_classifier(cfg, max_iter=100).fit(np.concatenate(rows), y)
    return summary


# ---------------------------------------------------------------------------------------- token methods
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


def labelled_train_nights(nights: list[Night], label_fraction: float, seed: int) -> list[TrainNight]:
    """Per-second classes of the train nights with -1 outside the drawn epochs (`drawn_seconds`, the features
    method's draw) and past the scored signal."""
    seconds, offsets = drawn_seconds(nights, label_fraction, np.random.default_rng(seed))
    out = []
    for i, night in enumerate(nights):
        local = seconds[(seconds >= offsets[i] * EPOCH_S) & (seconds < offsets[i + 1] * EPOCH_S)] - offsets[i] * EPOCH_S
        local = local[local < night.targets.n_seconds]
        labels = np.full(night.n_seconds, -1, dtype=np.int64)
        labels[local] = night.targets.respiratory[local]
        out.append(TrainNight(night.n_seconds, labels))
    return out


def read_signals(data_dir: Path, recording_id: str, channels: list[str]) -> dict[str, np.ndarray]:
    """{channel: (n_epochs, samples) float32} of a night's backbone channels, robust-scaled as parsed."""
    table = pq.read_table(recording_path(data_dir, recording_id), columns=channels, use_threads=False)
    return {
        c: table.column(c).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1).astype(np.float32)
        for c in channels
    }


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
        cfg.token_source if cfg.token_source != "auto" else ("fusion" if source.kind == "synthsleepnet" else "encoder")
    )
    if token_source == "fusion" and source.kind != "synthsleepnet":
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
    if np.count_nonzero(counts) < 2:
        raise UsageError(
            f"--data {cfg.data}: the training seconds hold one class only "
            f"({RESPIRATORY_CLASSES[int(np.argmax(counts))]}); raise --label-fraction"
        )
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


# ---------------------------------------------------------------------------------------- scoring
def night_detection(
    detector: EventDetector,
    night: Night,
    probabilities: np.ndarray,
    threshold: float | None = None,
    merge_gap_s: float | None = None,
) -> dict:
    predicted = detector.decode(probabilities, threshold, merge_gap_s)
    scored = [e for e in night.targets.events if e.type in RESPIRATORY_CLASSES[1:]]
    return event_detection_metrics(predicted, scored, min_iou=MATCH_IOU)


def select_decoding(
    detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray]
) -> tuple[float, float, list[dict]]:
    """(threshold, merge gap, curve) maximising the mean of the apnea and hypopnea event F1 over `nights`; among
    equal scores the threshold nearest 0.5, then the shortest merge gap."""
    curve, best = [], None
    for gap in MERGE_GAPS_S:
        for threshold in THRESHOLDS:
            pooled = sum_detection_counts(
                [night_detection(detector, n, p, threshold, gap) for n, p in zip(nights, probabilities)]
            )
            f1 = [pooled[k]["f1"] for k in ("apnea", "hypopnea") if k in pooled and math.isfinite(pooled[k]["f1"])]
            score = float(np.mean(f1)) if f1 else float("nan")
            curve.append(
                {
                    "threshold": threshold,
                    "merge_gap_s": gap,
                    "score": score,
                    "f1_apnea": pooled.get("apnea", {}).get("f1"),
                    "f1_hypopnea": pooled.get("hypopnea", {}).get("f1"),
                }
            )
            key = (score, -abs(threshold - 0.5), -gap)  # ties: the threshold nearest 0.5, then the shortest gap
            if math.isfinite(score) and (best is None or key > best[0]):
                best = (key, threshold, gap)
    if best is None:
        return detector.threshold, detector.merge_gap_s, curve
    return best[1], best[2], curve


def epoch_scores(night: Night, probabilities: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per-epoch scores of the per-second apnea (sum of the apnea types) and hypopnea probabilities: "max" over
    the epoch's 30 s, and "midpoint": the mean of the two seconds around its midpoint (14 and 15 s), which is
    what the midpoint label asks (an epoch with an event only in its first or last seconds is labelled 0)."""
    n_epochs = night.stage.shape[0]
    usable = min(n_epochs * EPOCH_S, probabilities.shape[0]) // EPOCH_S * EPOCH_S
    blocks = probabilities[:usable].reshape(-1, EPOCH_S, probabilities.shape[1])  # (epochs, 30, 4)
    per_second = {
        "apnea": blocks[:, :, [c - 1 for c in APNEA_CLASSES]].sum(axis=2),
        "hypopnea": blocks[:, :, HYPOPNEA_CLASS - 1],
    }  # (epochs, 30) each
    middle = slice(EPOCH_S // 2 - 1, EPOCH_S // 2 + 1)
    return {task: {"max": p.max(axis=1), "midpoint": p[:, middle].mean(axis=1)} for task, p in per_second.items()}


def detection_ci(per_night: list[dict], subjects: list[str], n_boot: int, seed: int) -> dict[str, list[float]]:
    """95 % CIs of the pooled event F1 per key, resampling subjects (their nights' tp/fp/fn) with replacement."""
    if n_boot < 1 or len(set(subjects)) < 2:
        return {}
    counts = np.array(
        [[[night.get(k, {}).get(c, 0) for c in ("tp", "fp", "fn")] for k in DETECTION_KEYS] for night in per_night],
        dtype=np.float64,
    )  # (nights, keys, 3)

    def f1(_, sample: np.ndarray) -> np.ndarray:
        tp, fp, fn = sample.sum(axis=0).T
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), np.nan)

    _, low, high = bootstrap_ci(counts, counts, np.asarray(subjects), f1, n_boot=n_boot, seed=seed)
    return {k: [float(lo), float(hi)] for k, lo, hi in zip(DETECTION_KEYS, low, high)}


def auroc_with_ci(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    keep = labels >= 0
    labels, scores, groups = labels[keep], scores[keep], groups[keep]
    auroc, auprc = auroc_auprc(labels, scores)
    out = {"auroc": auroc, "auprc": auprc, "n_epochs": int(labels.size), "n_positive": int(labels.sum())}
    if n_boot and labels.size and np.unique(groups).size >= 2:
        _, low, high = bootstrap_ci(labels, scores, groups, lambda y, s: auroc_auprc(y, s)[0], n_boot=n_boot, seed=seed)
        out["auroc_ci"] = [low, high]
    return out


def evaluate_split(
    detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray], rule: str, n_boot: int, seed: int
) -> tuple[dict[str, Any], list[dict]]:
    """Event detection, per-night AHI and epoch AUROC of one split at the detector's decoding settings."""
    per_night, ahi_rows, event_rows = [], [], []
    epoch = {"apnea": ([], {"max": [], "midpoint": []}, []), "hypopnea": ([], {"max": [], "midpoint": []}, [])}
    for night, prob in zip(nights, probabilities):
        predicted = detector.decode(prob)
        scored = night.targets.events
        per_night.append(event_detection_metrics(predicted, [e for e in scored if e.type in RESPIRATORY_CLASSES[1:]]))
        counted = detector.counted(predicted, night.features)
        sleep = np.isin(night.stage, SLEEP_STAGES)  # (n_epochs,) scored sleep
        ahi_rows.append(
            {
                "recording_id": night.recording_id,
                "subject_id": night.subject_id,
                "ahi_estimated": event_index(counted, sleep),
                "ahi_scored": event_index(qualifying_events(scored, rule), sleep),
                "n_predicted_apneas": sum(e.type != "hypopnea" for e in predicted),
                "n_predicted_hypopneas": sum(e.type == "hypopnea" for e in predicted),
                "n_counted_hypopneas": sum(e.type == "hypopnea" for e in counted),
                "n_scored_apneas": sum(e.type.endswith("apnea") for e in scored),
                "n_scored_hypopneas": sum(e.type == "hypopnea" for e in scored),
                "sleep_h": float(sleep.sum() * EPOCH_S / 3600),
                "channels": ",".join(night.channels),
            }
        )
        counted_ids = {id(e) for e in counted}
        event_rows += [
            {
                "recording_id": night.recording_id,
                "onset_s": e.onset_s,
                "duration_s": e.duration_s,
                "type": e.type,
                "probability": e.probability,
                "counted": id(e) in counted_ids,
            }
            for e in predicted
        ]
        for task, scores in epoch_scores(night, prob).items():
            size = scores["max"].size
            epoch[task][0].append(night.epoch_labels[task][:size].astype(np.int64))
            for kind, score in scores.items():
                epoch[task][1][kind].append(score)
            epoch[task][2].append(np.full(size, night.subject_id, dtype=object))
    subjects = [n.subject_id for n in nights]
    pooled = sum_detection_counts(per_night)
    ci = detection_ci(per_night, subjects, n_boot, seed)
    for key, bounds in ci.items():
        if key in pooled:
            pooled[key]["f1_ci"] = bounds
    estimated = [r["ahi_estimated"] for r in ahi_rows]
    reference = [r["ahi_scored"] for r in ahi_rows]
    result = {
        "n_recordings": len(nights),
        "n_subjects": len(set(subjects)),
        "events": pooled,
        "ahi": {
            "hypopnea_rule": rule,
            "sleep": "scored hypnogram",
            "per_night": ahi_rows,
            "agreement": ahi_agreement(estimated, reference),
        },
        "epoch": {},
    }
    for task, (labels, scores, groups) in epoch.items():
        labels, groups = np.concatenate(labels), np.concatenate(groups)
        result["epoch"][task] = auroc_with_ci(labels, np.concatenate(scores["max"]), groups, n_boot, seed)
        midpoint = auroc_with_ci(labels, np.concatenate(scores["midpoint"]), groups, n_boot, seed)
        result["epoch"][task].update({f"{k}_midpoint": v for k, v in midpoint.items() if k.startswith("au")})
        result["epoch"][task]["score"] = "max per-second probability in the epoch (_midpoint: at its midpoint)"
    return result, event_rows


# ---------------------------------------------------------------------------------------- outputs
def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def format_number(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def results_markdown(metrics: dict[str, Any]) -> str:
    test, val, train = metrics["test"], metrics["val"], metrics["train"]
    lines = [
        f"# Event detection ({metrics['method']}), hypopnea rule {metrics['hypopnea_rule']}",
        "",
        f"- train: {metrics['train']['n_seconds']} seconds of {metrics['train']['n_recordings']} nights "
        f"({100 * metrics['label_fraction']:g} % of the epochs); classes {metrics['train']['class_counts']}",
        *(
            [
                f"- per-second vectors: {metrics['features']} from {train['backbone']['name']} "
                f"({train['encoder_mode']}); head selected at step {train['best_step']} of {train['steps']} on val"
            ]
            if train.get("backbone")
            else []
        ),
        f"- decoding chosen on `val`: threshold {metrics['selection']['threshold']}, merge gap "
        f"{metrics['selection']['merge_gap_s']} s, minimum {metrics['selection']['min_duration_s']} s "
        f"(val mean F1 apnea/hypopnea {format_number(metrics['selection']['val_score'])})",
        f"- test: {test['n_recordings']} nights, {test['n_subjects']} subjects; AHI over scored sleep",
        "",
        "| events | precision | recall | F1 [95 % CI] | tp | fp | fn |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in DETECTION_KEYS:
        row = test["events"].get(key)
        if row:
            ci = row.get("f1_ci")
            ci_text = f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
            lines.append(
                f"| {key} | {format_number(row['precision'])} | {format_number(row['recall'])} | {format_number(row['f1'])}{ci_text} | "
                f"{row['tp']} | {row['fp']} | {row['fn']} |"
            )
    agreement = test["ahi"]["agreement"]
    ba = agreement["bland_altman"]
    lines += [
        "",
        "| epoch AUROC (midpoint label) | test: max score | test: midpoint score | val: max | val: midpoint |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {task} | "
        + " | ".join(
            format_number(split["epoch"][task].get(key)) for split in (test, val) for key in ("auroc", "auroc_midpoint")
        )
        + " |"
        for task in ("apnea", "hypopnea")
    ]
    lines += [
        "",
        f"AHI ({agreement['n']} nights): ICC(2,1) {format_number(agreement['icc_2_1'])}, Pearson r "
        f"{format_number(agreement['pearson_r'])}, severity κ {format_number(agreement['severity_kappa'])}, MAE "
        f"{format_number(agreement['mae'], 1)} /h, Bland-Altman bias {format_number(ba['bias'], 1)} /h "
        f"(limits {format_number(ba['loa_low'], 1)} to {format_number(ba['loa_high'], 1)})",
        "",
        "| night | AHI estimated | AHI scored |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['recording_id']} | {format_number(r['ahi_estimated'], 1)} | {format_number(r['ahi_scored'], 1)} |"
        for r in test["ahi"]["per_night"]
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    cfg: Config,
    detector: EventDetector,
    metrics: dict,
    event_rows: list[dict],
    files: dict[str, Any] | None = None,
) -> None:
    """Every output of a run, each written atomically; `files`: extra torch files (name -> object)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = json_safe(metrics)
    columns = ["recording_id", "onset_s", "duration_s", "type", "probability", "counted"]
    buffer = io.StringIO()
    pd.DataFrame(event_rows, columns=columns).to_csv(buffer, index=False, float_format="%.3f")
    for name, payload in (files or {}).items():
        _write_atomic(out / name, lambda p, payload=payload: torch.save(payload, p))
    _write_atomic(out / "model.pkl", lambda p: p.write_bytes(pickle.dumps(detector)))
    _write_atomic(out / "events.csv", lambda p: p.write_text(buffer.getvalue()))
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    _write_atomic(out / "results.md", lambda p: p.write_text(results_markdown(record)))
    save_config(cfg, out / "config.json")


# ---------------------------------------------------------------------------------------- main
def fit_features(
    cfg: Config, nights: dict[str, list[Night]], started: float
) -> tuple[EventDetector, dict[str, Any], list[str]]:
    """The features method: gradient-boosted trees on the train seconds. Returns the detector (decoding not
    chosen yet), the train record and the feature names."""
    train_x, train_y = training_seconds(nights["train"], cfg.label_fraction, cfg.max_train_seconds, cfg.seed)
    counts = np.bincount(train_y, minlength=len(RESPIRATORY_CLASSES))
    print(
        f"event_detection | {cfg.method} | train {train_x.shape} (per class {counts.tolist()}) | val "
        f"{len(nights['val'])} nights | features {time.monotonic() - started:.1f} s",
        flush=True,
    )
    if np.count_nonzero(counts) < 2:
        raise UsageError(
            f"--data {cfg.data}: the training seconds hold one class only "
            f"({RESPIRATORY_CLASSES[int(np.argmax(counts))]}); raise --label-fraction"
        )
    feature_names = respiratory_features({}, 1)[1]  # the column names (values of no channel: NaN)
    detector = EventDetector(
        make_classifier(cfg).fit(train_x, train_y),
        feature_names,
        min_duration_s=cfg.min_duration_s,
        hypopnea_rule=cfg.hypopnea_rule,
    )
    record = {
        "n_recordings": len(nights["train"]),
        "n_seconds": int(train_y.size),
        "class_counts": counts.tolist(),
        "recordings": [n.recording_id for n in nights["train"]],
    }
    return detector, record, feature_names


def run(cfg: Config) -> dict[str, Any]:
    started = time.monotonic()
    assert_no_test_leakage(cfg.data)
    nights = load_split_nights(cfg)
    assert_no_test_leakage(
        cfg.data,
        {
            "training": [n.recording_id for n in nights["train"]],
            "model selection": [n.recording_id for n in nights["val"]],
        },
    )
    files: dict[str, Any] = {}
    if cfg.method == "features":
        detector, train_record, feature_names = fit_features(cfg, nights, started)
    else:
        detector, train_record, feature_names, files = fit_tokens(cfg, nights, started)
    train_record["qualifier"] = fit_qualifier(cfg, nights["train"], detector)
    print(f"fitted ({time.monotonic() - started:.1f} s)", flush=True)

    val_prob = [detector.probabilities(n.features) for n in nights["val"]]
    detector.threshold, detector.merge_gap_s, curve = select_decoding(detector, nights["val"], val_prob)
    val_metrics, _ = evaluate_split(detector, nights["val"], val_prob, cfg.hypopnea_rule, 0, cfg.seed)
    val_score = max((c["score"] for c in curve if math.isfinite(c["score"])), default=float("nan"))
    print(
        f"decoding on val: threshold {detector.threshold}, merge gap {detector.merge_gap_s} s, mean event F1 "
        f"{val_score:.3f} ({time.monotonic() - started:.1f} s)",
        flush=True,
    )

    test_prob = [detector.probabilities(n.features) for n in nights["test"]]  # test scored once
    test_metrics, event_rows = evaluate_split(
        detector, nights["test"], test_prob, cfg.hypopnea_rule, cfg.n_boot, cfg.seed
    )
    metrics = {
        "method": cfg.method,
        "task": "event_detection",
        "data": str(Path(cfg.data).resolve()),
        "hypopnea_rule": cfg.hypopnea_rule,
        "label_fraction": cfg.label_fraction,
        "seed": cfg.seed,
        "match_iou": MATCH_IOU,
        "classes": list(RESPIRATORY_CLASSES),
        "features": feature_names
        if cfg.method == "features"
        else f"{train_record['token_source']} tokens of {', '.join(train_record['token_channels'])} per second "
        f"({len(feature_names)}-d)",
        "train": train_record,
        "selection": {
            "split": "val",
            "objective": "mean of the apnea and hypopnea event F1",
            "threshold": detector.threshold,
            "merge_gap_s": detector.merge_gap_s,
            "min_duration_s": detector.min_duration_s,
            "val_score": val_score,
            "curve": curve,
        },
        "val": val_metrics,
        "test": test_metrics,
        "seconds": time.monotonic() - started,
    }
    detector.info = {
        "hypopnea_rule": cfg.hypopnea_rule,
        "data": metrics["data"],
        "seed": cfg.seed,
        "method": cfg.method,
    }
    if cfg.method in TOKEN_METHODS:  # what turns a night into the detector's per-second vectors
        detector.info["tokens"] = {
            k: train_record[k] for k in ("backbone", "encoder_mode", "token_source", "token_channels", "token_dim")
        }
        detector.info["tokens"]["encoder_file"] = "encoder.pt" if files else None
    write_outputs(cfg, detector, metrics, event_rows, files)
    test = test_metrics["events"]
    agreement = test_metrics["ahi"]["agreement"]
    print(
        f"test ({test_metrics['n_subjects']} subjects): event F1 apnea {format_number(test.get('apnea', {}).get('f1'))} "
        f"hypopnea {format_number(test.get('hypopnea', {}).get('f1'))} | epoch AUROC apnea "
        f"{format_number(test_metrics['epoch']['apnea']['auroc'])} hypopnea {format_number(test_metrics['epoch']['hypopnea']['auroc'])}"
        f" | AHI ICC {format_number(agreement['icc_2_1'])} severity κ {format_number(agreement['severity_kappa'])} -> "
        f"{cfg.out}/metrics.json",
        flush=True,
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, fit, choose the decoding on val, score test once, write the outputs; 0 when done."""
    with reported_errors():
        cfg = parse_args(argv)
        try:
            run(cfg)
        except LeakageError as err:
            raise UsageError(str(err)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
