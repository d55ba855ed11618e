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

This script holds the options and the run's order; each step is a module of `downstream/event_detection/`:
`nights` (the split nights, their features and targets, the labelled train seconds), `features_method` (the
trees and the hypopnea qualifier), `token_methods` (probe / finetune / scratch), `selection` (the decoding chosen
on val), `scoring` (a split's event, AHI and epoch metrics), `report` (the files written).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from dataset.event_targets import RESPIRATORY_CLASSES
from dataset.scored_events import DEFAULT_HYPOPNEA_RULE, HYPOPNEA_RULES
from downstream.event_detection.features_method import fit_features, fit_qualifier
from downstream.event_detection.nights import load_split_nights
from downstream.event_detection.report import format_number, write_outputs
from downstream.event_detection.scoring import evaluate_split
from downstream.event_detection.selection import select_decoding
from downstream.event_detection.token_methods import DEFAULT_STEPS, TOKEN_METHODS, fit_tokens
from downstream.leakage import LeakageError, assert_no_test_leakage
from downstream.options import check_run_folder
from downstream.runs import cohort_processing
from models.heads import TOKEN_SOURCES
from utils.config import (
    ArgumentParser,
    Config,
    UsageError,
    check_cohort,
    check_out_dir,
    comma_list,
    fraction,
    non_negative_float,
    non_negative_int,
    parse_config,
    path_arg,
    positive_float,
    positive_int,
    probability,
    reported_errors,
)
from utils.events import EVENT_MIN_S, MATCH_IOU

METHODS = ("features", "probe", "finetune", "scratch")


# ---------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help="JSON or YAML file of options (keys as in config.json); explicit flags win",
    )
    parser.add_argument("--data", type=path_arg, default=None, help="parsed cohort folder (data_parser's DST)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="features",
        help="features: gradient-boosted trees on per-second respiratory features; probe: frozen "
        "backbone tokens per second + a temporal conv head; finetune: the same with LoRA on the "
        "encoders; scratch: the same architecture from random weights (predict.py --events reads features runs)",
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        default=None,
        help="run directory, replaced whole when the run ends (an earlier run there goes, files beside it too; "
        "default: runs/downstream/event_detection/<method>-<rule>-lf<fraction>-seed<seed>)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the model, sampling and bootstrap")
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
    parser.add_argument(
        "--min-duration-s", type=non_negative_float, default=EVENT_MIN_S, help="shortest event decoded (AASM 10 s)"
    )
    parser.add_argument(
        "--n-boot",
        type=non_negative_int,
        default=1000,
        help="bootstrap replicates (test subjects) for the CIs; 0 = none",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    model = parser.add_argument_group("gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)")
    model.add_argument("--hgb-max-iter", type=positive_int, default=200, help="boosting iterations")
    model.add_argument(
        "--hgb-learning-rate", type=positive_float, default=0.1, help="shrinkage of each boosting iteration"
    )
    model.add_argument("--hgb-max-leaf-nodes", type=positive_int, default=31, help="leaves per tree at most")
    model.add_argument(
        "--hgb-min-samples-leaf", type=positive_int, default=40, help="training seconds per leaf at least"
    )
    tokens = parser.add_argument_group("token methods (probe, finetune, scratch)")
    tokens.add_argument(
        "--backbone",
        type=path_arg,
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
    tokens.add_argument("--weight-decay", type=non_negative_float, default=0.01, help="AdamW weight decay")
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
    tokens.add_argument("--head-dropout", type=probability, default=0.1, help="dropout in the temporal conv head")
    tokens.add_argument(
        "--cache-dir",
        type=path_arg,
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
    check_cohort(cfg.data, "train")
    if not 0 <= cfg.min_duration_s:
        parser.error(f"--min-duration-s must be >= 0, got {cfg.min_duration_s}")
    resolved: dict[str, Any] = {}
    if cfg.method not in TOKEN_METHODS:  # the trees read none of them: config.json must not name them as used
        fresh = build_parser()  # its defaults: `parser`'s now hold a --config file's values
        group = next(g for g in fresh._action_groups if g.title.startswith("token methods"))
        given = [a.option_strings[0] for a in group._group_actions if getattr(cfg, a.dest) != a.default]
        if given:
            parser.error(f"{', '.join(given)}: only the token methods (probe, finetune, scratch) use them")
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
    # --out is replaced whole at the end (staged beside it): no symbolic link, nothing else kept in it
    check_run_folder(cfg.out, lambda record: record.get("task") == "event_detection", whole=True)
    if cfg.cache_dir is not None:
        check_out_dir(cfg.cache_dir, "--cache-dir")
    return cfg


# ---------------------------------------------------------------------------------------- main
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
        "processing": cohort_processing(cfg.data),  # predict.py processes a new night the same way
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
        "processing": metrics["processing"],
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
