"""The one tiling of a recording into windows of consecutive epochs (dataset/tiling.py; docs/data.md §2.6)."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.tiling import Tiling, Window


def owned_epochs(tiling: Tiling) -> list[int]:
    """Every epoch number some window owns, with repeats (epoch k of the recording is row k)."""
    epochs = np.arange(tiling.n_epochs)
    return [int(e) for window in tiling for e in window.take(epochs, -1)[window.owned]]


def context_sides(tiling: Tiling) -> np.ndarray:
    """(n_epochs,) for each epoch, the real rows on the shorter side of it in the window that owns it."""
    sides = np.full(tiling.n_epochs, -1)
    for window in tiling:
        for position in np.flatnonzero(window.owned):
            sides[window.start + position] = min(position, window.n_real - 1 - position)
    return sides


@pytest.mark.parametrize("step", [None, 1, 3, "half"])
@pytest.mark.parametrize("size", [1, 7, 20])
@pytest.mark.parametrize("windows, extra", [(0, 1), (1, -1), (1, 0), (1, 1), (3, 0), (3, 1), (4, 3)])
def test_every_epoch_owned_exactly_once(size, windows, extra, step):
    n = max(1, windows * size + extra)  # 1, n < W, n == W, n == W + 1, n = kW, n = kW + 1, ...
    step = max(1, size // 2) if step == "half" else step if step is None else min(step, size)
    tiling = Tiling(n, size, step)
    assert owned_epochs(tiling) == list(range(n))  # in order, each once
    for window in tiling:
        assert window.size == size and 0 <= window.start < max(n, 1) and window.stop <= n
        assert window.valid.sum() == window.n_real == min(size, n - window.start)
    if n > size:  # every window full; the last one ends at the recording end
        assert all(window.n_real == size for window in tiling) and tiling[len(tiling) - 1].stop == n
    # each epoch is owned where it is most central: no window holding it has more rows on its shorter side
    sides = context_sides(tiling)
    for window in tiling:
        for row in range(window.start, window.stop):
            assert sides[row] >= min(row - window.start, window.stop - 1 - row)


def most_central_owner(tiling: Tiling) -> np.ndarray:
    """(n_epochs,) the window each row belongs to by the rule itself, by brute force: the largest
    min(rows before, real rows after) among the windows holding it, ties to the earlier; -1 where none holds it."""
    owner = np.full(tiling.n_epochs, -1)
    best = np.full(tiling.n_epochs, -1)
    for index, window in enumerate(tiling):
        for row in range(window.start, window.stop):
            centrality = min(row - window.start, window.stop - 1 - row)
            if centrality > best[row]:
                owner[row], best[row] = index, centrality
    return owner


def test_ownership_is_the_most_central_window_for_every_geometry():
    for size in range(1, 13):
        for step in range(1, size + 4):  # steps beyond the size leave rows between windows (training windows)
            for n in range(1, 4 * size + 3):
                tiling = Tiling(n, size, step)
                owned = np.full(n, -1)
                for index, window in enumerate(tiling):
                    positions = np.flatnonzero(window.owned)
                    assert positions.size == 0 or np.array_equal(positions, np.arange(positions[0], positions[-1] + 1))
                    assert (owned[window.start + positions] == -1).all()  # nobody owns a row twice
                    owned[window.start + positions] = index
                np.testing.assert_array_equal(owned, most_central_owner(tiling), err_msg=f"{n=} {size=} {step=}")
                if step <= size:
                    assert (owned >= 0).all()


def test_edge_cases_give_the_expected_windows():
    short = Tiling(5, 8)  # n < W: one window at 0, padded at the end
    assert len(short) == 1 and short[0] == Window(0, 5, 8, 0, 5)
    assert short[0].valid.tolist() == [True] * 5 + [False] * 3 and short[0].owned.tolist() == short[0].valid.tolist()
    exact = Tiling(8, 8)  # n == W: one full window
    assert len(exact) == 1 and exact[0] == Window(0, 8, 8, 0, 8) and exact[0].owned.all()
    # n = 2W + 1: windows 0, 8 and one aligned to the end (start 9); of the rows 9..15 both of the last two hold,
    # 9..12 are more central in the window at 8, 13..15 in the one at 9 (ties to the earlier window)
    one_more = Tiling(17, 8)
    assert one_more.starts.tolist() == [0, 8, 9]
    assert one_more.owned_from.tolist() == [0, 0, 4] and one_more.owned_to.tolist() == [8, 5, 8]
    assert one_more[2].owned.tolist() == [False] * 4 + [True] * 4
    divides = Tiling(24, 8)  # W divides n: no end-aligned window, each window owns all of itself
    assert divides.starts.tolist() == [0, 8, 16] and divides.owned_from.tolist() == [0, 0, 0]
    assert divides.owned_to.tolist() == [8, 8, 8]


def test_half_overlapping_windows_give_every_epoch_context_on_both_sides():
    tiling = Tiling(100, 20, step=10)  # windows at 0, 10, ..., 80; each owns its middle half
    assert tiling.starts.tolist() == list(range(0, 81, 10))
    assert tiling.owned_from.tolist() == [0] + [5] * 8 and tiling.owned_to.tolist() == [15] * 8 + [20]
    sides = context_sides(tiling)
    inner = np.arange(100)
    inner = (inner >= 5) & (inner < 95)  # away from the recording ends
    assert sides[inner].min() == 5 and sides[:5].tolist() == [0, 1, 2, 3, 4]
    disjoint = context_sides(Tiling(100, 20))  # the same recording in disjoint windows: edges see one side only
    assert disjoint[inner].min() == 0


def test_training_windows_every_step_and_one_aligned_to_the_end():
    tiling = Tiling(50, 20, step=10)
    assert tiling.starts.tolist() == [0, 10, 20, 30]
    tail = Tiling(55, 20, step=10)  # 0, 10, 20, 30 cover 0..49; one more aligned to the end at 35
    assert tail.starts.tolist() == [0, 10, 20, 30, 35]
    gaps = Tiling(50, 10, step=15)  # windows further apart than their size: the rows between them are not owned
    assert gaps.starts.tolist() == [0, 15, 30, 40]
    assert owned_epochs(gaps) == [*range(10), *range(15, 25), *range(30, 50)]
    with pytest.raises(ValueError, match="must be >= 1"):
        Tiling(10, 0)
    with pytest.raises(ValueError, match="skips rows"):  # evaluation windows must cover every epoch
        Tiling.covering(50, 10, 15)


def test_window_pads_and_takes_rows():
    window = Window.within(6, 4, 8, owned_from=1)  # rows 6, 7 of 8 in a window of 4, owning from position 1
    assert (window.start, window.stop, window.n_real) == (6, 8, 2)
    signals = np.arange(16, dtype=np.float64).reshape(8, 2)
    taken = window.take(signals, 0.0, np.float32)
    assert taken.dtype == np.float32 and taken.tolist() == [[12, 13], [14, 15], [0, 0], [0, 0]]
    assert window.pad(signals[6:], -1, np.int64).tolist() == [[12, 13], [14, 15], [-1, -1], [-1, -1]]
    assert window.owned.tolist() == [False, True, False, False]


@pytest.mark.parametrize("stride", [None, 8])
def test_dataset_store_and_night_give_the_same_windows(tmp_path, stride):
    """SequenceDataset(tiling=True), VectorStore.tiles and NightWindows are one tiling: the same windows, epoch
    numbers, padding and owned positions, and the same signal in each window, disjoint or overlapping."""
    from dataset.datasets import SequenceDataset
    from downstream.cache import RecordingVectors, VectorStore
    from downstream.night_inference import NightWindows
    from tests.test_datasets import RECORDINGS, SPLITS, quiet, write_cohort

    written = write_cohort(tmp_path, RECORDINGS, SPLITS)
    recordings = sorted(RECORDINGS)
    size = 16
    windows = quiet(
        SequenceDataset, tmp_path, recordings, ["eeg_c4"], epochs_per_window=size, tiling=True, tiling_stride=stride
    )
    store = VectorStore(
        {
            r: RecordingVectors(written[r]["epoch"].astype(np.int64), np.zeros((RECORDINGS[r]["n_epochs"], 2)))
            for r in recordings
        }
    )
    owners, ids, owned = store.tiles(windows.recordings, size, stride)
    nights = []  # one night in memory at a time, as predict.py reads it
    for recording in windows.recordings:
        night = NightWindows(recording, {"eeg_c4": written[recording]["eeg_c4"]}, size, stride)
        nights += [night[i] for i in range(len(night))]
    assert len(windows) == len(owners) == len(nights) > len(recordings)  # some recordings have several windows
    for index, night in enumerate(nights):
        item = windows[index]
        assert item["recording"] == owners[index] == night["recording"]
        assert item["start_epoch"] == night["start_epoch"]
        np.testing.assert_array_equal(item["epoch_ids"].numpy(), ids[index])
        np.testing.assert_array_equal(night["epoch_ids"].numpy(), ids[index])
        np.testing.assert_array_equal(item["owned"].numpy(), owned[index])
        np.testing.assert_array_equal(night["owned"].numpy(), owned[index])
        np.testing.assert_array_equal(item["valid"].numpy(), night["valid"].numpy())
        np.testing.assert_array_equal(item["eeg_c4"].numpy(), night["eeg_c4"].numpy())


def test_comparison_rows_tell_evaluation_tilings_apart():
    from downstream.results import eval_stride

    windows = {"epochs_per_window": 20, "eval_stride": 10}
    assert eval_stride({"windows": windows}) == 10
    assert eval_stride({"windows": {"epochs_per_window": 20}}) == 20  # written before the stride was recorded
    assert eval_stride({"method": "linear_probe"}) is None
