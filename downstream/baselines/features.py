"""Gradient-boosted trees on per-epoch vectors (docs/evaluation.md §5): the hand-crafted feature baseline (band
powers and signal statistics per channel), or, with --backbone, a frozen pretrained backbone's epoch vectors.

    python downstream/baselines/features.py --data DST --task sleep_stage|apnea|hypopnea \
        [--label-fraction 0.01|0.05|1.0] [--train-subjects N] [--channels eeg_c4,eog_l,...] [--out DIR] \
        [--backbone RUN [--pooling mean|channel|channel_stats]]

Same splits, label fractions, leakage guard, test tiling and outputs as the linear probe and fine-tuning
(the `downstream` library modules), so its row in `downstream/evaluate.py`'s table is directly comparable:

- features: `utils.features.epoch_features` of each 30-s epoch of every --channels channel (log and relative
  band powers, spectral edge, standard deviation, kurtosis, zero crossings, line length; heart rate for ECG);
  with --neighbour-epochs K also those of the K epochs before and after it (`downstream.cache.neighbour_vectors`,
  as the linear probe's --neighbour-epochs gives its head);
- with --backbone (a unimodal or multimodal pretraining run or checkpoint, as the linear probe takes): the
  frozen backbone's pooled vector of each epoch instead of the features (`downstream.data.encode_store`, in
  fp32 on --device: the linear probe's vectors, and with --cache-dir its cache of a probe run without --amp;
  with --pooling channel a SynthSleepNet's per-channel vectors, C x D, cached under a key of their own),
  so the trees and the probe's MLP head can be compared on one representation, and the features and the
  backbone with one classifier (method `backbone_hgb`);
- model: scikit-learn `HistGradientBoostingClassifier`, fitted on the `train` epochs at --label-fraction /
  --train-subjects (the same draw as the other methods). With --class-weights balanced its probabilities are
  re-weighted by the balanced class weights N / (C x n_c) and renormalised (a prior shift: the Bayes-optimal
  counterpart of class-weighted fitting; scikit-learn's own sample-weighted fit spends ~10 s per fit in its
  weighted binning whatever the data size, so it is not used); inputs binned into --hgb-max-bins (255);
- model selection on `val` only: the number of boosting iterations is the one whose staged `val`
  predictions score best on --select-metric; the fitted model is then cut to that many iterations, the model
  a fit with that many gives (the fit is deterministic without early stopping; `first_iterations`);
- `test` predicted once (every epoch exactly once).

Outputs in --out (default runs/downstream/<method>/<task>-lf<fraction>-seed<seed>, method features_hgb or
backbone_hgb): config.json, model.pkl (pickled estimator), metrics.json (with the `val` curve),
predictions.parquet, confusion_matrix.png, results.md (and hypnogram PNGs for staging). The folder is written
whole at the end (staged beside it, then swapped in): a run that fails or is killed leaves an earlier run in
--out as it was, and a finished one keeps the earlier config as config.<n>.json.
"""

from __future__ import annotations

import argparse
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from dataset.constants import EPHYS_CHANNELS, TASKS
from downstream.backbone import BackboneSource, resolve_backbone
from downstream.cache import VectorStore, cache_key, encode_recordings
from downstream.data import (
    apply_epochs,
    check_two_classes,
    encode_store,
    epoch_dataset,
    night_context,
    recordings_to_store,
    stored_features,
    val_split,
    window_dataset,
)
from downstream.leakage import assert_no_test_leakage
from downstream.options import (
    SELECT_METRICS,
    add_neighbour_args,
    add_pooling_args,
    add_task_args,
    check_pooling,
    check_run_folder,
    parse_downstream,
)
from downstream.predictions import predict_stored_epochs
from downstream.results import BACKBONE_HGB, FEATURES_HGB, attach_context
from downstream.runs import report, run_info, train_summary
from downstream.training import class_weights, selection_scores
from downstream.trees import fit_trees
from models.heads import EpochEncoder
from utils import features as features_module
from utils.checkpoint import sha256_file, staged_run_folder
from utils.config import (
    CONFIG_HISTORY_HELP,
    ArgumentParser,
    Config,
    UsageError,
    bounded,
    comma_list,
    mark_required,
    non_negative_float,
    non_negative_int,
    path_arg,
    positive_float,
    positive_int,
    reported_errors,
    save_config,
    script_prog,
)
from utils.distributed import resolve_device
from utils.features import epoch_features

TEST_WINDOW = 20  # test epochs are read in tiles of 20 consecutive epochs (I/O only)


def build_features_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=script_prog(__file__),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mark_required(parser, "data", "task")
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help="JSON or YAML file of options (keys as in config.json); explicit flags win; an unknown "
        "key or a bad value is an error",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", type=path_arg, default=None, help="parsed cohort folder (data_parser's DST; holds splits.json)"
    )
    data.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="comma-separated canonical channel names (a recording lacking one is skipped); default: the six "
        "electrophysiology channels, or with --backbone the channels it was trained on",
    )
    data.add_argument(
        "--backbone",
        type=path_arg,
        default=None,
        help="pretraining run directory or checkpoint (NeuroNet or SynthSleepNet): the trees read its frozen "
        "epoch vectors instead of the hand-crafted features",
    )
    data.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes reading epochs")
    data.add_argument(
        "--batch-size", type=positive_int, default=256, help="epochs per batch of feature extraction or encoding"
    )
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=path_arg, default=None, help=f"run directory; {CONFIG_HISTORY_HELP}")
    run.add_argument(
        "--cache-dir",
        type=path_arg,
        default=None,
        help="keep the features (or --backbone vectors) of every recording used here and reuse them in later "
        "runs (the key names the channels and the feature code's or the backbone file's SHA-256)",
    )
    run.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the label draws (--label-fraction, --train-subjects) and the trees",
    )
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    run.add_argument(
        "--device",
        default="auto",
        help="where --backbone encodes: auto (CUDA when present), cpu, cuda or cuda:N (the hand-crafted features "
        "are computed on the CPU)",
    )
    model = parser.add_argument_group("gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)")
    model.add_argument(
        "--hgb-max-iter", type=positive_int, default=300, help="boosting iterations fitted (selected on val)"
    )
    model.add_argument(
        "--hgb-learning-rate",
        type=positive_float,
        default=0.1,
        help="shrinkage of each tree's contribution (absolute; no batch scaling here)",
    )
    model.add_argument("--hgb-max-leaf-nodes", type=bounded(int, low=2), default=31, help="leaves per tree at most")
    model.add_argument(
        "--hgb-min-samples-leaf", type=positive_int, default=20, help="training epochs per leaf at least"
    )
    model.add_argument("--hgb-l2", type=non_negative_float, default=0.0, help="L2 regularisation")
    model.add_argument(
        "--hgb-max-bins",
        type=bounded(int, low=2, high=255),
        default=255,
        help="histogram bins per input (fewer fit faster on thousands of inputs but need more iterations; "
        "benchmarks/README.md, 'Trees on the frozen vectors')",
    )
    add_task_args(parser)
    add_neighbour_args(parser)
    add_pooling_args(parser)
    return parser


def full_probabilities(
    probabilities: np.ndarray, classes: np.ndarray, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Columns of `predict_proba` (only the classes seen in training) → (N, n_classes), 0 for unseen classes;
    with `weights` (n_classes,) each column is multiplied by its class weight and the rows renormalised."""
    out = np.zeros((probabilities.shape[0], n_classes), dtype=np.float64)
    out[:, classes.astype(np.int64)] = probabilities
    if weights is not None:
        out *= weights[None, :]
        out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def make_classifier(cfg: argparse.Namespace, max_iter: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        max_bins=cfg.hgb_max_bins,
        learning_rate=cfg.hgb_learning_rate,
        max_leaf_nodes=cfg.hgb_max_leaf_nodes,
        min_samples_leaf=cfg.hgb_min_samples_leaf,
        l2_regularization=cfg.hgb_l2,
        early_stopping=False,
        random_state=cfg.seed,
    )


def first_iterations(
    classifier: HistGradientBoostingClassifier, n: int, refit: Callable[[], object]
) -> HistGradientBoostingClassifier:
    """`classifier` cut to its first `n` boosting iterations, in place: the trees a fit with max_iter=n builds
    are the first n of a longer fit (no early stopping, no subsampling: boosting is deterministic and each
    iteration depends only on those before it), so the cut model predicts exactly as that fit's. Without the
    estimator's per-iteration trees (another scikit-learn), `refit()` fits it again with max_iter=n."""
    predictors = getattr(classifier, "_predictors", None)
    if not isinstance(predictors, list) or len(predictors) < n:
        refit()
    else:
        del predictors[n:]
        classifier.set_params(max_iter=n)
    return classifier


def select_iterations(
    classifier: HistGradientBoostingClassifier,
    val_x: np.ndarray,
    val_y: np.ndarray,
    weights: np.ndarray | None,
    cfg: argparse.Namespace,
) -> tuple[int, float, list[float]]:
    """(best number of iterations, its val score, the val score after every iteration) by --select-metric."""
    n_classes, key = TASKS[cfg.task], f"val_{cfg.select_metric}"
    sign = 1.0 if SELECT_METRICS[cfg.select_metric] == "max" else -1.0
    curve, best, best_score = [], classifier.n_iter_, float("nan")
    for iteration, probabilities in enumerate(classifier.staged_predict_proba(val_x), start=1):
        full = full_probabilities(probabilities, classifier.classes_, n_classes, weights)
        score = float(selection_scores(val_y, full, cfg.task).get(key, float("nan")))
        curve.append(score)
        if math.isfinite(score) and (not math.isfinite(best_score) or sign * score > sign * best_score):
            best, best_score = iteration, score
    return best, best_score, curve


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, fit, select on val, evaluate on test, return 0. Bad input: one `error:` line on stderr and exit
    status 2, raised as SystemExit; nothing is written before the inputs are checked."""
    with reported_errors():
        return run(argv)


@dataclass
class Representation:
    """What the trees read of each epoch over `channels`, computed on `device`: the hand-crafted features
    (`source` None), or the vectors of a frozen backbone (`encoder`, its tokens pooled by its `pooling`)."""

    device: torch.device
    channels: list[str]
    source: BackboneSource | None = None
    encoder: EpochEncoder | None = None

    @property
    def encode(self) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """{channel: (n, samples)} -> (n, F)."""
        return hand_crafted if self.encoder is None else self.encoder

    @property
    def name(self) -> str:
        return f"backbone {self.source.name}" if self.source is not None else "hand-crafted features"

    def store(self, cfg: Config, recordings: list[str]) -> VectorStore:
        """Every epoch of `recordings`, computed once (cached under --cache-dir: the features under the feature
        code's key, a backbone's mean vectors under the linear probe's, its per-channel vectors under their own)."""
        if self.source is not None:
            return encode_store(cfg, self.encoder, self.source, self.channels, recordings, self.device)
        return encode_recordings(
            self.encode,
            cfg.data,
            recordings,
            self.channels,
            self.device,
            batch_epochs=cfg.batch_size,
            workers=cfg.workers,
            cache_dir=cfg.cache_dir,
            key=cache_key(sha256_file(features_module.__file__), self.channels, "hand-crafted"),
            progress=cfg.progress,
        )


def hand_crafted(signals: dict[str, torch.Tensor]) -> torch.Tensor:
    """`utils.features.epoch_features` of a batch: {channel: (n, 3000)} -> (n, F)."""
    return torch.from_numpy(epoch_features({ch: x.cpu().numpy() for ch, x in signals.items()})[0])


def representation(cfg: Config) -> Representation:
    """The features over --channels (default the six electrophysiology channels), or --backbone resolved as the
    linear probe resolves it, frozen in eval mode on --device."""
    if cfg.backbone is None:
        if cfg.pooling != "mean":
            raise UsageError(f"--pooling {cfg.pooling} pools a backbone's tokens: give --backbone")
        return Representation(torch.device("cpu"), list(cfg.channels or EPHYS_CHANNELS))
    wanted = argparse.Namespace(backbone=cfg.backbone, init="pretrained", model_args={}, channels=cfg.channels)
    source = resolve_backbone(wanted, cfg.data)
    device = resolve_device(cfg.device)
    check_pooling(cfg, source)
    encoder = EpochEncoder(source.instantiate(), source.channels, mode="frozen", pooling=cfg.pooling)
    return Representation(device, list(source.channels), source, encoder.to(device).eval())


def run(argv: list[str] | None) -> int:
    """`main` without the error reporting: input problems raise UsageError (or argparse's SystemExit)."""
    parser = build_features_parser()
    cfg = parse_downstream(parser, argv, lambda c: BACKBONE_HGB if c.backbone is not None else FEATURES_HGB)
    # --out is replaced whole; a run of this script names its method (an event detector's model.pkl proves nothing)
    check_run_folder(cfg.out, lambda record: record.get("method") in (FEATURES_HGB, BACKBONE_HGB), whole=True)
    assert_no_test_leakage(cfg.data)
    if cfg.channels is not None and not cfg.channels:
        raise UsageError("--channels: name at least one channel")
    inputs = representation(cfg)
    cfg = cfg.replace(channels=inputs.channels)  # config.json records the channels the run read
    channels, n_classes = inputs.channels, TASKS[cfg.task]
    train_set = epoch_dataset(cfg, "train", channels, training=True)
    val_set = epoch_dataset(cfg, val_split(cfg), channels)
    test_windows = window_dataset(cfg, "test", channels, TEST_WINDOW, tiling=True)
    assert_no_test_leakage(cfg.data, {"training": train_set.recordings, "model selection": val_set.recordings})
    counts = train_set.class_counts()
    check_two_classes(counts)
    started = time.monotonic()
    stored, whole_train = recordings_to_store(cfg, train_set, val_set, test_windows)
    store = night_context(inputs.store(cfg, stored), cfg)
    # the labelled train epochs: from the store, or, without it, only the selected epochs (at 1 % labels far
    # fewer than whole recordings)
    if whole_train:
        train = stored_features(store, train_set)
    else:
        train = apply_epochs(inputs.encode, train_set, channels, inputs.device, cfg)
    train_x, train_y = train.features.numpy(), train.labels.numpy()
    val = stored_features(store, val_set)
    val_x, val_y = val.features.numpy(), val.labels.numpy()
    print(
        f"{cfg.method} | task {cfg.task} | {inputs.name} | channels {', '.join(channels)} | train {train_x.shape} "
        f"(per class {counts.tolist()}) | val {val_x.shape} | inputs {time.monotonic() - started:.1f} s | fitting "
        f"{cfg.hgb_max_iter} boosting iterations ...",
        flush=True,
    )

    weights = class_weights(counts, cfg.class_weights)
    weights = None if weights is None else weights.numpy().astype(np.float64)  # (C,) prior-shift weights
    classifier = fit_trees(make_classifier(cfg, cfg.hgb_max_iter), train_x, train_y, progress=cfg.progress)
    best, best_score, curve = select_iterations(classifier, val_x, val_y, weights, cfg)
    if best != classifier.n_iter_:
        first_iterations(classifier, best, lambda: classifier.set_params(max_iter=best).fit(train_x, train_y))
    print(
        f"selected {best} of {cfg.hgb_max_iter} boosting iterations: val_{cfg.select_metric} {best_score:.4f} "
        f"({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    predictions = predict_stored_epochs(
        cfg,
        store,
        test_windows,
        channels,
        lambda x: torch.from_numpy(
            full_probabilities(classifier.predict_proba(x.numpy()), classifier.classes_, n_classes, weights)
        ),
    )
    predictions = attach_context(predictions, cfg.data)
    summary = train_summary(counts, train_set.recordings, train_set.subjects)
    night = {"night_norm": cfg.night_norm}  # how each night's vectors were standardised
    if inputs.source is not None:
        info = run_info(cfg, channels, summary, inputs.source)
        info.update(init="pretrained", pooling=cfg.pooling)
    else:
        info = run_info(cfg, channels, summary)
        info.update(init="n/a", backbone_name="none (hand-crafted features)")
    info.update(night)
    info["selection"] = {
        "metric": f"val_{cfg.select_metric}",
        "value": best_score,
        "checkpoint": "model.pkl",
        "iterations": best,
        "val_curve": curve,
        "class_balance": "prior shift by balanced class weights" if weights is not None else "none",
    }
    out = Path(cfg.out)
    with staged_run_folder(out) as stage:  # the run's folder appears whole or not at all: a failed run leaves the old
        save_config(cfg, stage / "config.json", keep_previous=True)
        with (stage / "model.pkl").open("wb") as handle:
            pickle.dump(classifier, handle)
        report(cfg, predictions, info, out_dir=stage)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
