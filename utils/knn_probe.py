"""Model-selection monitor for self-supervised pretraining: a PCA + k-NN probe on the frozen representation.

The encoder (`model.encode(x)` -> pooled (B, D), tokens) embeds a seeded, capped subsample of labelled
`train`-split epochs and of `val`-split epochs (never `test`: docs/training.md §4); a standardise -> PCA -> k-NN
classifier is fitted on train and scored on val with macro-F1 and Cohen's kappa. The cost is bounded by the
caps (default 4000 train / 2000 val epochs), the encoding runs under `torch.no_grad` in eval mode, and each
submodule's train/eval flag is restored afterwards.

Targets (`--monitor-target`): `stage` (5 classes W/N1/N2/N3/REM), `wake_sleep` (stage 0 vs 1-4), `apnea`,
`hypopnea` (binary midpoint labels). Epochs without a label (-1) are left out.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from dataset.cohort import UnreadableRecording
from dataset.constants import STAGE_NAMES
from utils.checkpoint import unwrap_model
from utils.config import Config, UsageError, positive_int
from utils.engine import evaluating
from utils.interrupt import quiet_worker
from utils.metrics import cohen_kappa


@dataclass(frozen=True)
class ProbeTarget:
    """What the probe predicts: the dataset `task` whose labels are read, and the class names after mapping."""

    name: str
    task: str
    class_names: tuple[str, ...]
    wake_vs_sleep: bool = False  # map stages 0 -> 0 (wake), 1-4 -> 1 (sleep)

    def map_labels(self, labels: np.ndarray) -> np.ndarray:
        """Dataset labels -> probe classes; -1 (unlabelled) stays -1."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.wake_vs_sleep:
            return np.where(labels < 0, -1, (labels > 0).astype(np.int64))
        return labels


PROBE_TARGETS: dict[str, ProbeTarget] = {
    "stage": ProbeTarget("stage", "sleep_stage", STAGE_NAMES),
    "wake_sleep": ProbeTarget("wake_sleep", "sleep_stage", ("wake", "sleep"), wake_vs_sleep=True),
    "apnea": ProbeTarget("apnea", "apnea", ("no apnea", "apnea")),
    "hypopnea": ProbeTarget("hypopnea", "hypopnea", ("no hypopnea", "hypopnea")),
}


def probe_target(name: str) -> ProbeTarget:
    if name not in PROBE_TARGETS:
        raise ValueError(f"unknown probe target {name!r}; choose one of {', '.join(PROBE_TARGETS)}")
    return PROBE_TARGETS[name]


def add_knn_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The monitor's options (a `monitor` group) for scripts that use it."""
    group = parser.add_argument_group("monitor (k-NN probe on train -> val for model selection)")
    group.add_argument(
        "--monitor-target", choices=tuple(PROBE_TARGETS), default="stage", help="what the probe predicts"
    )
    group.add_argument(
        "--monitor-metric",
        choices=("auto", "knn_kappa", "knn_f1", "knn_auroc"),
        default="auto",
        help="metric that selects best.pt; auto: knn_auroc for a binary target, else knn_kappa",
    )
    group.add_argument(
        "--no-monitor",
        dest="monitor",
        action="store_false",
        help="skip the probe, which runs by default (best.pt then follows the training loss)",
    )
    group.add_argument("--knn-k", type=positive_int, default=10, help="neighbours")
    group.add_argument("--knn-pca", type=positive_int, default=50, help="PCA components (capped by the data)")
    group.add_argument(
        "--knn-max-train", type=positive_int, default=4000, help="train-split epochs used (seeded subsample)"
    )
    group.add_argument(
        "--knn-max-val", type=positive_int, default=2000, help="val-split epochs used (seeded subsample)"
    )
    return parser


def subsample_indices(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of `min(n, cap)` of range(n) (all of them when cap <= 0 or cap >= n)."""
    if cap <= 0 or cap >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def pooled_representation(model: nn.Module, signal: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, D) pooled vector of `model.encode(signal)` (first element when it returns (pooled, tokens))."""
    encoded = unwrap_model(model).encode(signal)
    return encoded[0] if isinstance(encoded, (tuple, list)) else encoded


@torch.no_grad()
def encode_dataset(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    input_key: str | Sequence[str] = "signal",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled representations (N, D) float32 and labels (N,) int64 of every item (items need `input_key`
    and `label`), in eval mode; the model's train/eval flags are restored afterwards. `input_key`: one key, whose
    (B, samples) tensor the model encodes (a single-channel encoder), or channel names, whose
    {channel: (B, samples)} dict it encodes (a multichannel model). `progress`: a bar over the batches."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=quiet_worker,
    )
    features, labels = [], []
    with evaluating(model):
        for batch in tqdm(loader, desc="k-NN probe: encode", unit="batch", leave=False, disable=not progress):
            if "label" not in batch:
                raise KeyError("k-NN probe: dataset items carry no 'label' (build the dataset with a task)")
            if isinstance(input_key, str):
                signal = batch[input_key].to(device, non_blocking=True)  # (B, 3000) at 100 Hz
            else:
                signal = {ch: batch[ch].to(device, non_blocking=True) for ch in input_key}  # (B, 3000 or 300) each
            features.append(pooled_representation(model, signal).float().cpu().numpy())  # (B, D)
            labels.append(np.asarray(batch["label"], dtype=np.int64))
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features), np.concatenate(labels)


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    k: int = 10,
    pca_dim: int = 50,
) -> np.ndarray:
    """Standardise -> PCA -> k-NN fitted on (train_x, train_y); the predicted classes (N_val,) of val_x.

    Feature arrays are (N, D); labels (N,) class indices >= 0.
    """
    return _knn(train_x, train_y, k, pca_dim).predict(val_x)


def knn_vote_fractions(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    k: int = 10,
    pca_dim: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """As `knn_predict`, but the share of the k neighbours in each class: (classes (C,), fractions (N_val, C))."""
    classifier = _knn(train_x, train_y, k, pca_dim)
    return classifier.classes_, classifier.predict_proba(val_x)


def _knn(train_x: np.ndarray, train_y: np.ndarray, k: int, pca_dim: int):
    if len(np.unique(train_y)) < 2:
        raise ValueError(f"k-NN probe: the train epochs hold {len(np.unique(train_y))} class(es); need at least 2")
    n_components = max(1, min(pca_dim, train_x.shape[0] - 1, train_x.shape[1]))
    classifier = make_pipeline(
        StandardScaler(),
        PCA(n_components=n_components, random_state=0),
        KNeighborsClassifier(n_neighbors=min(k, train_x.shape[0])),
    )
    return classifier.fit(train_x, train_y)


def classification_scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and Cohen's kappa of predicted vs true class indices (N,); kappa is NaN (undefined,
    quietly) when both hold one and the same class, e.g. a val sample of one stage."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    n_classes = int(max(true.max(initial=0), predicted.max(initial=0))) + 1
    return {
        "accuracy": float(accuracy_score(true, predicted)),
        "f1": float(f1_score(true, predicted, average="macro")),
        "kappa": cohen_kappa(true, predicted, n_classes),
    }


def knn_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int = 10,
    pca_dim: int = 50,
) -> dict[str, float]:
    """Standardise -> PCA -> k-NN fitted on (train_x, train_y), scored on val: accuracy, macro-F1, kappa.

    Feature arrays are (N, D); labels (N,) class indices >= 0.
    """
    return classification_scores(val_y, knn_predict(train_x, train_y, val_x, k, pca_dim))


class KnnMonitor:
    """Callable monitor for `engine.fit`: `monitor(model, device) -> {"knn_kappa", "knn_f1", ...}`.

    `train_set` / `val_set` are labelled datasets of the `train` and `val` splits (items with `input_key` and
    `label`); the same seeded subsample is used at every call, so values are comparable across epochs.
    """

    def __init__(
        self,
        train_set: Dataset,
        val_set: Dataset,
        target: str | ProbeTarget = "stage",
        k: int = 10,
        pca_dim: int = 50,
        max_train: int = 4000,
        max_val: int = 2000,
        batch_size: int = 256,
        workers: int = 0,
        seed: int = 0,
        input_key: str | Sequence[str] = "signal",
        progress: bool = False,
    ):
        self.progress = progress  # a bar over each encoding (tens of minutes for preset B on a CPU)
        self.target = probe_target(target) if isinstance(target, str) else target
        self.k, self.pca_dim, self.batch_size, self.workers, self.input_key = k, pca_dim, batch_size, workers, input_key
        self.train_indices = subsample_indices(len(train_set), max_train, seed)
        self.val_indices = subsample_indices(len(val_set), max_val, seed + 1)
        self.train_set = Subset(train_set, self.train_indices.tolist())
        self.val_set = Subset(val_set, self.val_indices.tolist())

    def embed(self, model: nn.Module, device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"train": (x, y), "val": (x, y)} with unlabelled epochs removed and labels mapped to the target."""
        out = {}
        for split, subset in (("train", self.train_set), ("val", self.val_set)):
            x, y = encode_dataset(model, subset, device, self.batch_size, self.workers, self.input_key, self.progress)
            y = self.target.map_labels(y)
            keep = y >= 0
            out[split] = (x[keep], y[keep])
        return out

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        embedded = self.embed(model, device)
        (train_x, train_y), (val_x, val_y) = embedded["train"], embedded["val"]
        result: dict[str, Any] = {"knn_n_train": int(train_y.size), "knn_n_val": int(val_y.size)}
        if val_y.size == 0 or len(np.unique(train_y)) < 2:
            print(
                f"k-NN probe skipped: {train_y.size} labelled train epochs ({len(np.unique(train_y))} classes), "
                f"{val_y.size} labelled val epochs for target {self.target.name!r}",
                flush=True,
            )
            return result
        classes, fractions = knn_vote_fractions(train_x, train_y, val_x, self.k, self.pca_dim)  # (C,), (N_val, C)
        scores = classification_scores(val_y, classes[fractions.argmax(axis=1)])
        if len(self.target.class_names) == 2 and np.unique(val_y).size == 2:
            # threshold-free: with a rare positive class (apnea) the k-NN vote almost never says positive, so
            # kappa stays ~0 whatever the representation; the positive vote share still ranks epochs
            scores["auroc"] = float(roc_auc_score(val_y, fractions[:, list(classes).index(1)]))
        result.update({f"knn_{name}": value for name, value in scores.items()})
        return result


def build_knn_monitor(
    cfg: Config, train_set: Dataset, val_set: Dataset, input_key: str | Sequence[str] = "signal"
) -> KnnMonitor:
    """A KnnMonitor from the options of `add_knn_args` (+ the shared batch size, workers, seed)."""
    return KnnMonitor(
        train_set,
        val_set,
        target=cfg.monitor_target,
        k=cfg.knn_k,
        pca_dim=cfg.knn_pca,
        max_train=cfg.knn_max_train,
        max_val=cfg.knn_max_val,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        seed=cfg.seed,
        input_key=input_key,
        progress=getattr(cfg, "progress", False),
    )


def resolve_monitor_metric(cfg: Config) -> Config:
    """`cfg` with `--monitor-metric auto` made concrete: knn_auroc for a binary `--monitor-target`, else
    knn_kappa. Scripts resolve it right after parsing (on every rank: the engine's best.pt follows it), so
    config.json names the metric that selected best.pt."""
    if cfg.monitor_metric != "auto":
        return cfg
    binary = len(probe_target(cfg.monitor_target).class_names) == 2
    return cfg.replace(monitor_metric="knn_auroc" if binary else "knn_kappa")


def monitor_on_splits(
    cfg: Config,
    is_main: bool,
    open_split: Callable[..., Dataset],
    describe: Callable[[Dataset], str],
    input_key: str | Sequence[str] = "signal",
) -> KnnMonitor | None:
    """The pretraining monitor: a k-NN probe fitted on labelled `train` epochs and scored on `val` (never
    `test`), on rank 0 only. `open_split(cfg, split, task=...)` opens a split (raising UsageError when it has no
    usable epoch, which disables the monitor with a message; one raised from an unreadable recording file
    stops the run instead); `input_key` names the model's input in its items
    (`encode_dataset`).
    `cfg.monitor_metric` must be resolved (`resolve_monitor_metric`)."""
    if cfg.monitor_metric == "auto":
        raise ValueError("monitor_on_splits: resolve --monitor-metric auto first (resolve_monitor_metric)")
    target = probe_target(cfg.monitor_target)
    if not (cfg.monitor and is_main):
        return None
    try:
        train_set = open_split(cfg, "train", task=target.task)
        val_set = open_split(cfg, "val", task=target.task)
    except UsageError as err:
        if isinstance(err.__cause__, UnreadableRecording):  # a broken file is an error, not an empty split
            raise
        print(f"k-NN monitor disabled ({err}); best.pt follows the training loss", flush=True)
        return None
    print(
        f"k-NN monitor ({target.name}): train {describe(train_set)}; val {describe(val_set)}; "
        f"using at most {cfg.knn_max_train} / {cfg.knn_max_val}",
        flush=True,
    )
    return build_knn_monitor(cfg, train_set, val_set, input_key)


def summarize(result: Mapping[str, Any]) -> str:
    """'kappa 0.612  macro-F1 0.655  (n 4000 / 2000)' for printing."""
    if "knn_kappa" not in result:
        return "k-NN probe: no score"
    auroc = f"  AUROC {result['knn_auroc']:.3f}" if "knn_auroc" in result else ""
    return (
        f"kappa {result['knn_kappa']:.3f}  macro-F1 {result['knn_f1']:.3f}  accuracy {result['knn_accuracy']:.3f}"
        f"{auroc}  (train {result['knn_n_train']} / val {result['knn_n_val']})"
    )
