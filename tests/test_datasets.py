"""Streaming datasets (dataset/datasets.py) against Parquet files written with the docs/data.md §2.4 schema."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dataset.constants import CHANNELS, LABEL_EVENT_COLUMNS
from dataset.datasets import EpochDataset, SequenceDataset

# ---- a schema-faithful writer of the parser's output (docs/data.md §2.4), for fixtures and the loader benchmark ----


def write_recording(path: Path, n_epochs: int, channels: list[str], seed: int, unscored: bool = False) -> dict:
    """Write one recording's epoch table; return the columns written as numpy arrays."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {"epoch": np.arange(n_epochs, dtype=np.int32)}
    for spec in CHANNELS:  # canonical order
        if spec.name in channels:
            columns[spec.name] = rng.standard_normal((n_epochs, spec.epoch_samples), dtype=np.float32)
    stage = rng.integers(0, 5, n_epochs).astype(np.int8)
    stage[rng.random(n_epochs) < 0.1] = -1
    columns["stage"] = np.full(n_epochs, -1, np.int8) if unscored else stage
    for event in LABEL_EVENT_COLUMNS:  # an unscored night: flags -1, seconds NaN (as dataset.labels writes it)
        overlap = np.where(rng.random(n_epochs) < 0.3, rng.uniform(0.5, 30.0, n_epochs), 0.0).astype(np.float32)
        columns[event] = ((overlap >= 15.0) & (rng.random(n_epochs) < 0.9)).astype(np.int8)
        columns[f"{event}_s"] = overlap
        if unscored:
            columns[event][:] = -1
            columns[f"{event}_s"][:] = np.nan
    arrays = {}
    for name, values in columns.items():
        if values.ndim == 2:  # (n_epochs, samples) -> fixed_size_list<float32, samples>
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        else:
            arrays[name] = pa.array(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path, row_group_size=16, compression="none", use_dictionary=False)
    return columns


def write_cohort(root: Path, recordings: dict[str, dict], splits: dict[str, list[str]], seed: int = 0) -> dict:
    """recordings: id -> {"subject", "n_epochs", "channels", "unscored"?}; splits: name -> subject ids.

    Writes recordings/*.parquet, manifest.parquet and splits.json; returns id -> written columns.
    """
    written = {}
    for k, (rid, spec) in enumerate(sorted(recordings.items())):
        written[rid] = write_recording(
            root / "recordings" / f"{rid}.parquet",
            spec["n_epochs"],
            spec["channels"],
            seed * 1000 + k,
            spec.get("unscored", False),
        )
    manifest = {
        "recording_id": sorted(recordings),
        "subject_id": [recordings[r]["subject"] for r in sorted(recordings)],
        "status": ["ok"] * len(recordings),
        "n_epochs": [recordings[r]["n_epochs"] for r in sorted(recordings)],
        "channels": [",".join(recordings[r]["channels"]) for r in sorted(recordings)],
    }
    pq.write_table(pa.table(manifest), root / "manifest.parquet")
    by_split = {
        name: sorted(r for r in recordings if recordings[r]["subject"] in subs) for name, subs in splits.items()
    }
    (root / "splits.json").write_text(
        json.dumps({"seed": seed, "fractions": {"val": 0.1, "test": 0.1}, "subjects": splits, "recordings": by_split})
    )
    return written


EEG_EOG = ["eeg_c4", "eeg_c3", "eog_l"]
RECORDINGS = {
    "shhs1-100001": {"subject": "100001", "n_epochs": 70, "channels": EEG_EOG},
    "shhs2-100001": {"subject": "100001", "n_epochs": 45, "channels": EEG_EOG},
    "shhs1-100002": {"subject": "100002", "n_epochs": 64, "channels": EEG_EOG},
    "shhs1-100003": {"subject": "100003", "n_epochs": 33, "channels": ["eeg_c4", "eog_l"]},  # no eeg_c3
    "shhs1-100004": {"subject": "100004", "n_epochs": 12, "channels": EEG_EOG},  # shorter than a window
    "shhs1-100005": {"subject": "100005", "n_epochs": 40, "channels": EEG_EOG, "unscored": True},
    "shhs1-100006": {"subject": "100006", "n_epochs": 50, "channels": EEG_EOG},
    "shhs1-100007": {"subject": "100007", "n_epochs": 41, "channels": EEG_EOG},
}
SPLITS = {
    "pretrain": ["100001", "100002", "100003", "100004", "100005"],
    "train": ["100001", "100002"],
    "val": ["100006"],
    "test": ["100007"],
}
ALL = sorted(RECORDINGS)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("dst")
    return root, write_cohort(root, RECORDINGS, SPLITS)


def quiet(factory, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory(*args, **kwargs)


def test_items_match_written_signals_and_labels(cohort):
    root, written = cohort
    ds = quiet(EpochDataset, root, ALL, ["eeg_c4", "eog_l"], task="sleep_stage")
    expected = sum(int((written[r]["stage"] >= 0).sum()) for r in ALL)
    assert len(ds) == expected and ds.skipped == {"shhs1-100005": "no labelled epoch for task sleep_stage"}
    for index in np.random.default_rng(0).choice(len(ds), 40, replace=False).tolist() + [len(ds) - 1]:
        item = ds[index]
        columns = written[item["recording"]]
        assert item["eeg_c4"].shape == (3000,) and item["eeg_c4"].dtype == torch.float32
        np.testing.assert_array_equal(item["eeg_c4"].numpy(), columns["eeg_c4"][item["epoch"]])
        np.testing.assert_array_equal(item["eog_l"].numpy(), columns["eog_l"][item["epoch"]])
        assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
        assert int(item["label"]) == columns["stage"][item["epoch"]] >= 0
    np.testing.assert_array_equal(ds.labels, [int(ds[i]["label"]) for i in range(len(ds))])
    ds[3]["eeg_c4"].zero_()  # items are copies: editing one must not touch the row-group cache
    np.testing.assert_array_equal(ds[3]["eeg_c4"].numpy(), written[ds[3]["recording"]]["eeg_c4"][ds[3]["epoch"]])
    counts = ds.class_counts()
    assert counts.shape == (5,) and counts.sum() == len(ds)


def test_split_names_read_splits_json(cohort):
    root, _ = cohort
    ds = EpochDataset(root, "train", ["eeg_c4"])
    assert ds.recordings == ["shhs1-100001", "shhs1-100002", "shhs2-100001"]
    assert ds.subjects == ["100001", "100002"]
    assert len(ds) == 70 + 45 + 64  # no task: every epoch
    assert "label" not in ds[0]
    with pytest.raises(ValueError, match="unknown split"):
        EpochDataset(root, "training", ["eeg_c4"])
    with pytest.raises(ValueError, match="unknown channel"):
        EpochDataset(root, "train", ["C4"])


def test_event_tasks_and_label_rules(cohort):
    root, written = cohort
    ds = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="apnea")
    # a scored night keeps stage -1 epochs for event tasks; the unscored night has no labels at all
    assert "shhs1-100005" in ds.skipped and "no labelled epoch" in ds.skipped["shhs1-100005"]
    assert len(ds) == sum(RECORDINGS[r]["n_epochs"] for r in ALL if r != "shhs1-100005")
    assert set(np.unique(ds.labels)) <= {0, 1}
    for rule, truth in (
        ("midpoint", lambda c: c["hypopnea"] == 1),
        ("any", lambda c: c["hypopnea_s"] > 0),
        ("min_s:10", lambda c: c["hypopnea_s"] >= 10),
    ):
        hyp = quiet(EpochDataset, root, ["shhs1-100001"], ["eeg_c4"], task="hypopnea", label_rule=rule)
        np.testing.assert_array_equal(hyp.labels, truth(written["shhs1-100001"]).astype(np.int64))
    with pytest.raises(ValueError, match="label_rule"):
        EpochDataset(root, ALL, ["eeg_c4"], task="apnea", label_rule="min_s:abc")
    with pytest.raises(ValueError, match="event tasks only"):
        EpochDataset(root, ALL, ["eeg_c4"], task="sleep_stage", label_rule="any")


def test_label_fraction_exact_seeded_nested(cohort):
    root, _ = cohort
    full = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage")
    n_labelled = len(full)

    def keys(ds):
        return {(ds[i]["recording"], ds[i]["epoch"]) for i in range(len(ds))}

    five = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage", label_fraction=0.05, seed=3)
    assert len(five) == round(0.05 * n_labelled)
    again = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage", label_fraction=0.05, seed=3)
    other = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage", label_fraction=0.05, seed=4)
    assert keys(five) == keys(again) and keys(five) != keys(other)
    twenty = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage", label_fraction=0.2, seed=3)
    assert keys(five) < keys(twenty) <= keys(full)
    assert all(int(five[i]["label"]) >= 0 for i in range(len(five)))
    tiny = quiet(EpochDataset, root, ALL, ["eeg_c4"], task="sleep_stage", label_fraction=1e-6)
    assert len(tiny) == 1
    with pytest.raises(ValueError, match="label_fraction"):
        EpochDataset(root, ALL, ["eeg_c4"], label_fraction=0.0)


def test_n_subjects_keeps_whole_subjects(cohort):
    root, _ = cohort
    picks = [quiet(EpochDataset, root, "pretrain", ["eeg_c4"], n_subjects=2, seed=s).subjects for s in range(6)]
    assert all(len(p) == 2 for p in picks) and len({tuple(p) for p in picks}) > 1
    assert picks[0] == quiet(EpochDataset, root, "pretrain", ["eeg_c4"], n_subjects=2, seed=0).subjects
    for seed in range(6):
        ds = quiet(EpochDataset, root, "pretrain", ["eeg_c4"], n_subjects=2, seed=seed)
        if "100001" in ds.subjects:  # both nights of the subject come together
            assert {"shhs1-100001", "shhs2-100001"} <= set(ds.recordings)
    with pytest.raises(ValueError, match="n_subjects=9"):
        quiet(EpochDataset, root, "pretrain", ["eeg_c4"], n_subjects=9)


def test_the_draws_do_not_depend_on_the_channels_read(cohort):
    """A method reading eeg_c3 cannot use shhs1-100003 (no eeg_c3); its label and subject draws are those of a
    method reading eeg_c4 alone, less that night's share, so the two compare on the same epochs."""
    root, _ = cohort
    pretrain = sorted(r for r in RECORDINGS if RECORDINGS[r]["subject"] in SPLITS["pretrain"])
    for fraction in (0.05, 0.3):
        c4 = quiet(EpochDataset, root, pretrain, ["eeg_c4"], task="sleep_stage", label_fraction=fraction, seed=5)
        c3 = quiet(EpochDataset, root, pretrain, ["eeg_c3"], task="sleep_stage", label_fraction=fraction, seed=5)
        drawn = set(zip(*(part.tolist() for part in c4.sample_index())))
        assert set(zip(*(part.tolist() for part in c3.sample_index()))) == {
            (rid, e) for rid, e in drawn if rid != "shhs1-100003"
        }
        assert any(rid == "shhs1-100003" for rid, _ in drawn)
    by_seed = {}
    for seed in range(8):
        c4 = quiet(EpochDataset, root, "pretrain", ["eeg_c4"], task="sleep_stage", n_subjects=2, seed=seed)
        c3 = quiet(EpochDataset, root, "pretrain", ["eeg_c3"], task="sleep_stage", n_subjects=2, seed=seed)
        assert set(c3.subjects) == set(c4.subjects) - {"100003"}
        by_seed[seed] = c4.subjects
    assert any("100003" in subjects for subjects in by_seed.values())


def test_pool_channels_and_missing_channel(cohort):
    root, written = cohort
    with pytest.warns(UserWarning, match="skipped 1 of 8 recordings"):
        both = EpochDataset(root, ALL, ["eeg_c4", "eeg_c3"])
    assert both.skipped == {"shhs1-100003": "missing channel(s) eeg_c3"}
    pooled = EpochDataset(root, ALL, ["eeg_c4", "eeg_c3"], pool_channels=True)  # 100003 gives its eeg_c4
    n_c4 = sum(RECORDINGS[r]["n_epochs"] for r in ALL)
    n_c3 = sum(RECORDINGS[r]["n_epochs"] for r in ALL if "eeg_c3" in RECORDINGS[r]["channels"])
    assert len(pooled) == n_c4 + n_c3 and pooled.skipped == {}
    for index in (0, 1, len(pooled) - 1, 500):
        item = pooled[index]
        assert set(item) == {"recording", "epoch", "channel", "signal"} and item["signal"].shape == (3000,)
        np.testing.assert_array_equal(
            item["signal"].numpy(), written[item["recording"]][item["channel"]][item["epoch"]]
        )
    with pytest.raises(ValueError, match=r"'ecg'.*" + str(root).replace("\\", "\\\\")):
        EpochDataset(root, ALL, ["eeg_c4", "ecg"])
    # no recording left: the error itself says why each was skipped (the warning is filtered by the scripts)
    with pytest.raises(ValueError, match=r"2 skipped \(1 x missing channel\(s\) eeg_c3; 1 x no labelled epoch"):
        quiet(EpochDataset, root, ["shhs1-100003", "shhs1-100005"], ["eeg_c4", "eeg_c3"], task="sleep_stage")


def test_sequence_windows_stay_inside_recordings(cohort):
    root, written = cohort
    ds = quiet(SequenceDataset, root, ALL, ["eeg_c4", "eog_l"], task="sleep_stage", epochs_per_window=20, stride=10)
    assert "shhs1-100005" in ds.skipped  # unscored: no labelled window
    seen = {r: np.zeros(RECORDINGS[r]["n_epochs"], bool) for r in ds.recordings}
    for index in range(len(ds)):
        item = ds[index]
        columns, valid = written[item["recording"]], item["valid"].numpy()
        ids = item["epoch_ids"].numpy()[valid]
        assert item["eeg_c4"].shape == (20, 3000) and item["label"].shape == (20,)
        np.testing.assert_array_equal(ids, np.arange(item["start_epoch"], item["start_epoch"] + valid.sum()))
        assert ids[-1] < RECORDINGS[item["recording"]]["n_epochs"]
        np.testing.assert_array_equal(item["eog_l"].numpy()[valid], columns["eog_l"][ids])
        assert not item["eeg_c4"].numpy()[~valid].any()
        np.testing.assert_array_equal(item["label"].numpy()[valid], columns["stage"][ids])
        assert (item["label"].numpy()[~valid] == -1).all()
        seen[item["recording"]][ids] = True
    assert all(s.all() for s in seen.values())  # the end-aligned last window reaches every epoch
    short = [ds[i] for i in range(len(ds)) if ds[i]["recording"] == "shhs1-100004"]
    assert len(short) == 1 and int(short[0]["valid"].sum()) == 12
    with pytest.warns(UserWarning, match="shorter than 20"):
        no_pad = SequenceDataset(root, ["shhs1-100004", "shhs1-100006"], ["eeg_c4"], pad_last=False)
    assert no_pad.recordings == ["shhs1-100006"] and "shhs1-100004" in no_pad.skipped
    assert len(no_pad) == 4  # starts 0, 10, 20 and the end-aligned 30 of 50 epochs


def test_tiling_predicts_every_epoch_once(cohort):
    root, _ = cohort
    ds = quiet(SequenceDataset, root, ALL, ["eeg_c4"], epochs_per_window=16, tiling=True)
    owned = [
        (item["recording"], int(e))
        for item in (ds[i] for i in range(len(ds)))
        for e in item["epoch_ids"][item["owned"]].tolist()
    ]
    expected = [(r, e) for r in ds.recordings for e in range(RECORDINGS[r]["n_epochs"])]
    assert sorted(owned) == sorted(expected) and len(owned) == len(set(owned))
    assert ds.skipped == {} and len(ds.recordings) == len(RECORDINGS)


def test_dataloader_workers_and_distributed_sampler(cohort):
    root, _ = cohort
    ds = quiet(EpochDataset, root, "pretrain", ["eeg_c4", "eeg_c3"], task="sleep_stage")
    ds[0]  # open handles in the parent first: forked workers must not use them

    def collect(workers):
        batches = list(DataLoader(ds, batch_size=16, num_workers=workers))
        return torch.cat([b["eeg_c3"] for b in batches]), torch.cat([b["label"] for b in batches])

    (signals0, labels0), (signals2, labels2) = collect(0), collect(2)
    assert torch.equal(signals0, signals2) and torch.equal(labels0, labels2)
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == (len(ds) + 1) // 2
    assert set(parts[0]) | set(parts[1]) == set(range(len(ds)))
    if len(ds) % 2 == 0:
        assert not set(parts[0]) & set(parts[1])


def test_reader_reopens_files_after_fork(cohort):
    root, written = cohort
    ds = EpochDataset(root, ["shhs1-100002"], ["eeg_c4"])
    ds[0]
    assert len(ds.reader._files) == 1
    ds.reader._pid = -1  # as seen from a forked child: the parent's handles and cache are dropped
    item = ds[40]
    assert ds.reader._pid > 0 and len(ds.reader._cache) == 1
    np.testing.assert_array_equal(item["eeg_c4"].numpy(), written["shhs1-100002"]["eeg_c4"][40])


def test_bad_file_named_in_error(tmp_path):
    write_cohort(
        tmp_path,
        {"x-1": {"subject": "1", "n_epochs": 5, "channels": ["eeg_c4"]}},
        {"pretrain": ["1"], "train": [], "val": [], "test": []},
    )
    (tmp_path / "recordings" / "x-1.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="x-1.parquet"):
        EpochDataset(tmp_path, "pretrain", ["eeg_c4"])


def _parser_missing() -> str:
    """Why the parsed-cohort test cannot run ('' when dataset.synthetic and dataset.data_parser import)."""
    try:
        importlib.import_module("dataset.synthetic")
        importlib.import_module("dataset.data_parser")
    except ImportError as err:
        return f"synthetic cohort / parser not importable: {err}"
    return ""


@pytest.mark.skipif(bool(_parser_missing()), reason=_parser_missing() or "-")
def test_on_parsed_synthetic_cohort(tmp_path):
    from dataset.data_parser import parse_cohort
    from dataset.synthetic import generate_cohort, variation_plan

    plan = variation_plan(4, ["missing_eog_r", "unscored"])
    generate_cohort(tmp_path / "src", nights=4, hours=0.25, seed=0, variations=plan)
    parse_cohort(tmp_path / "src", tmp_path / "dst", workers=1, progress=False)
    dst = tmp_path / "dst"
    manifest = pq.read_table(dst / "manifest.parquet", columns=["recording_id", "status"]).to_pydict()
    recordings = sorted(r for r, status in zip(manifest["recording_id"], manifest["status"]) if status == "ok")
    assert len(recordings) == 4
    tables = {r: pq.read_table(dst / "recordings" / f"{r}.parquet") for r in recordings}
    lacking = [r for r in recordings if "eog_r" not in tables[r].column_names]
    assert len(lacking) == 1
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        ds = EpochDataset(dst, recordings, ["eeg_c4", "eog_r"], task="sleep_stage")
    assert list(ds.skipped) == lacking
    stages = {r: tables[r].column("stage").to_numpy() for r in ds.recordings}
    assert len(ds) == sum(int((s >= 0).sum()) for s in stages.values()) < sum(len(s) for s in stages.values())
    for index in (0, len(ds) // 2, len(ds) - 1):
        item = ds[index]
        table = tables[item["recording"]]
        row = table.column("epoch").to_pylist().index(item["epoch"])
        written = np.asarray(table.column("eog_r")[row].as_py(), np.float32)  # (3000,)
        np.testing.assert_array_equal(item["eog_r"].numpy(), written)
        assert int(item["label"]) == stages[item["recording"]][row] >= 0
    tiles = quiet(SequenceDataset, dst, recordings, ["eeg_c4"], epochs_per_window=20, tiling=True)
    owned = [
        (t["recording"], e) for t in (tiles[i] for i in range(len(tiles))) for e in t["epoch_ids"][t["owned"]].tolist()
    ]
    assert sorted(owned) == sorted((r, e) for r in recordings for e in tables[r].column("epoch").to_pylist())
