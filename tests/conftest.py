"""Suite-wide settings and fixtures.

`make test` runs two pytest workers on a 2-core machine, so each uses one torch thread (two threads per worker
oversubscribe the cores and slow the suite several-fold). `cohort_factory` builds the synthetic cohorts the test
modules share; `predict_runs` and `event_features_run` the tiny trained runs that the inference tests predict with
(`predict_argv`: the options of predict.py over `predict_runs`).
Each is built once per session and cached on disk (shared by the pytest-xdist workers).
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------- shared cohorts
def session_cache(tmp_path_factory) -> Path:
    """The session's pytest tmp base, above each pytest-xdist worker's own: what is built there is shared."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(root: Path, build: Callable[[Path], None], record: str) -> Path:
    """`build(root)` unless an earlier build finished (`root/done` holds `record`), under a file lock so that one
    worker builds and the others wait; a build that failed half-way is removed and redone. Returns `root`."""
    with FileLock(str(root) + ".lock"):
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)
            build(root)
            (root / "done").write_text(record + "\n")
    return root


@pytest.fixture(scope="session")
def cohort_factory(tmp_path_factory) -> Callable[..., Path]:
    """`make_cohort(nights, hours, seed, variations=None, **parse_options) -> Path`: a synthetic cohort
    (`dataset.synthetic.generate_cohort`) parsed by `dataset.data_parser.parse_cohort`, built once per set of
    options and cached on disk under the pytest tmp base (shared by the pytest-xdist workers, under a file
    lock). Returns the folder holding `src/` (EDF + XML) and `dst/` (the parsed cohort).

    The cohort is shared: a test must not write into it (copy it, as tests/test_bad_inputs_training.py does,
    or parse `src/` again into its own folder)."""
    cache = session_cache(tmp_path_factory) / "cohorts"
    cache.mkdir(parents=True, exist_ok=True)

    def make_cohort(
        nights: int, hours: float, seed: int, variations: dict[int, dict] | None = None, **parse_options: Any
    ) -> Path:
        from dataset import data_parser, synthetic

        options = {
            "nights": nights,
            "hours": hours,
            "seed": seed,
            "variations": variations or {},
            "parse": parse_options,
        }
        key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
        root = cache / f"n{nights}-h{hours:g}-s{seed}-{key}"

        def build(root: Path) -> None:
            synthetic.generate_cohort(root / "src", nights=nights, hours=hours, seed=seed, variations=variations)
            data_parser.parse_cohort(root / "src", root / "dst", **{"workers": 1, "progress": False, **parse_options})

        return built_once(root, build, json.dumps(options, sort_keys=True, default=str))

    return make_cohort


# --------------------------------------------------------------------------------------- shared trained runs
# A NeuroNet smaller than the tiny preset (14 frames, narrow CNN): a training step takes a fraction of a second.
SMALL = dict(frame_step_s=2.0, stem_channels=4, backbone_channels=(4, 8, 8, 16), frame_token_dim=32, encoder_depth=1)
RUN = ["--workers", "0", "--no-progress", "--n-boot", "0", "--hypnograms", "0", "--resume", "none"]


@pytest.fixture(scope="session")
def predict_runs(cohort_factory, tmp_path_factory) -> dict[str, Path]:
    """A 4-night cohort, two small backbones, and tiny runs: staging / apnea probes on a SynthSleepNet over
    eeg_c4 + eog_l, a hypopnea probe on a NeuroNet (eeg_c4), a fine-tuned (temporal) staging run on eeg_c4."""
    from downstream.fine_tuning import train as fine_tuning
    from downstream.linear_probing import train as linear_probing
    from models.neuronet import build_neuronet, neuronet_config
    from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config
    from utils.checkpoint import save_model_checkpoint, sha256_file

    data = cohort_factory(4, 0.8, 1) / "dst"
    names = ("stage", "apnea", "hypopnea", "temporal")

    def build(root: Path) -> None:
        torch.manual_seed(0)
        net = build_neuronet(neuronet_config("tiny", **SMALL))
        fusion = build_synthsleepnet(
            synthsleepnet_config("tiny", channels=("eeg_c4", "eog_l"), fusion_depth=1), {"eeg_c4": net, "eog_l": net}
        )
        backbones = {}
        for name, kind, model, metadata in (
            ("eeg", "neuronet", net, {"channels": ["eeg_c4"]}),
            ("fusion", "synthsleepnet", fusion, {}),
        ):
            backbones[name] = root / f"{name}.pt"
            save_model_checkpoint(
                backbones[name],
                kind,
                model.config.to_dict(),
                model.state_dict(),
                metadata=metadata,
                splits_sha256=sha256_file(data / "splits.json"),
            )
        out = {}
        for name, backbone, task in (
            ("stage", "fusion", "sleep_stage"),
            ("apnea", "fusion", "apnea"),
            ("hypopnea", "eeg", "hypopnea"),
        ):
            out[name] = root / name
            assert (
                linear_probing.main(
                    [
                        "--data",
                        str(data),
                        "--backbone",
                        str(backbones[backbone]),
                        "--task",
                        task,
                        "--out",
                        str(out[name]),
                        "--epochs",
                        "20",
                        "--batch-size",
                        "32",
                        *RUN,
                    ]
                )
                == 0
            )
        out["temporal"] = root / "temporal"
        assert (
            fine_tuning.main(
                [
                    "--data",
                    str(data),
                    "--backbone",
                    str(backbones["eeg"]),
                    "--task",
                    "sleep_stage",
                    "--out",
                    str(out["temporal"]),
                    "--epochs-per-window",
                    "8",
                    "--stride",
                    "8",
                    "--epochs",
                    "1",
                    "--max-steps",
                    "1",
                    "--batch-size",
                    "2",
                    *RUN,
                ]
            )
            == 0
        )

    root = built_once(session_cache(tmp_path_factory) / "predict_runs", build, ",".join(names))
    return {name: root / name for name in names}


@pytest.fixture(scope="session")
def predict_argv(predict_runs) -> Callable[..., list[str]]:
    """`predict_argv(edf, out, *more) -> argv`: downstream/predict.py's options predicting `edf` into `out` with
    the staging, apnea and hypopnea runs of `predict_runs`, no progress bars, then `more` (e.g. "--xml", XML)."""

    def argv(edf: Path, out: Path, *more: str) -> list[str]:
        tasks = {"--checkpoint": "stage", "--apnea": "apnea", "--hypopnea": "hypopnea"}
        runs = [item for flag, name in tasks.items() for item in (flag, str(predict_runs[name]))]
        return [*runs, "--edf", str(edf), "--out", str(out), "--no-progress", *more]

    return argv


@pytest.fixture(scope="session")
def event_features_run(cohort_factory, tmp_path_factory) -> Path:
    """A features event model (downstream/event_detection/train.py, 25 boosting iterations, no CIs) on the tiny
    6-night cohort: weak validation by construction (2 val nights). Shared: copy it before changing a file."""
    from downstream.event_detection import train as event_detection

    data = cohort_factory(6, 0.8, 0) / "dst"

    def build(root: Path) -> None:
        argv = [
            "--data",
            str(data),
            "--out",
            str(root / "run"),
            "--no-progress",
            "--n-boot",
            "0",
            "--hgb-max-iter",
            "25",
        ]
        assert event_detection.main(argv) == 0

    return built_once(session_cache(tmp_path_factory) / "event_features_run", build, "features") / "run"
