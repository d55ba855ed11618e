"""Windows of consecutive epochs over one recording (docs/data.md §2.6).

`Tiling(n_epochs, size)` is the evaluation tiling: windows of `size` rows start at 0, size, 2·size, ... and, when
`size` does not divide the recording, one more window aligned to the recording end covers the remainder; its first
positions overlap the previous window and are not `owned` there (the earlier window, which saw more left context,
keeps them), so every row is owned by exactly one window. A recording shorter than `size` gives one window at 0,
padded at the end. With `step` < `size` (training windows) the windows overlap and only the rows of the final,
end-aligned window that no earlier window covered are owned by it.

Every consumer of windows (`SequenceDataset`, the frozen-vector store, one night in memory) builds its items from a
`Window`: which rows it reads, which positions are real (`valid`) and which it owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def window_starts(n_epochs: int, epochs_per_window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows over a recording of n_epochs: (first epoch row of each window, first position it owns).

    Windows start every `step` rows; when they leave a tail uncovered, a final window is aligned to the recording
    end and owns only the rows no earlier window covered (so with step == epochs_per_window — the tiling used at
    test and inference time — every epoch is owned by exactly one window). A recording shorter than the window
    gives one window starting at 0 (padded by the caller).
    """
    size = int(epochs_per_window)
    if n_epochs <= size:
        starts = np.zeros(1, dtype=np.int64)
    else:
        starts = np.arange(0, n_epochs - size + 1, int(step), dtype=np.int64)
    owned_from = np.zeros(starts.shape, dtype=np.int64)
    covered = int(starts[-1]) + size
    if covered < n_epochs:  # final window aligned to the recording end
        owned_from = np.append(owned_from, covered - (n_epochs - size))
        starts = np.append(starts, n_epochs - size)
    return starts, owned_from


@dataclass(frozen=True)
class Window:
    """Rows [start, stop) of a recording in a window of `size` positions (stop - start <= size; the positions
    after them are padding), owning its positions from `owned_from` on."""

    start: int
    stop: int
    size: int
    owned_from: int = 0

    @classmethod
    def within(cls, start: int, size: int, n_epochs: int, owned_from: int = 0) -> Window:
        """The window of `size` positions starting at row `start` of a recording of `n_epochs` rows."""
        return cls(int(start), min(int(start) + int(size), int(n_epochs)), int(size), int(owned_from))

    @property
    def n_real(self) -> int:
        return self.stop - self.start

    @property
    def valid(self) -> np.ndarray:
        """(size,) bool: a real epoch (False at padding)."""
        return np.arange(self.size) < self.n_real

    @property
    def owned(self) -> np.ndarray:
        """(size,) bool: the positions this window predicts (real and not owned by an earlier window)."""
        return self.valid & (np.arange(self.size) >= self.owned_from)

    def pad(self, rows: np.ndarray, fill: float | int, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The window's rows (n_real, ...) as (size, ...), `fill` at padding."""
        out = np.full((self.size, *rows.shape[1:]), fill, dtype=rows.dtype if dtype is None else dtype)
        out[: self.n_real] = rows
        return out

    def take(self, values: np.ndarray, fill: float | int, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The window's rows of a whole recording's array (n_epochs, ...) as (size, ...), `fill` at padding."""
        return self.pad(values[self.start : self.stop], fill, dtype)


class Tiling:
    """The windows of `size` rows over a recording of `n_epochs` rows, every `step` rows (default `size`: the
    evaluation tiling, every row owned exactly once). `starts` and `owned_from` are (n_windows,) int64."""

    def __init__(self, n_epochs: int, size: int, step: int | None = None):
        if size < 1 or (step is not None and step < 1):
            raise ValueError(f"Tiling: window size ({size}) and step ({step}) must be >= 1")
        self.n_epochs, self.size = int(n_epochs), int(size)
        self.starts, self.owned_from = window_starts(self.n_epochs, self.size, self.size if step is None else step)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, index: int) -> Window:
        return Window.within(int(self.starts[index]), self.size, self.n_epochs, int(self.owned_from[index]))

    def __iter__(self) -> Iterator[Window]:
        return (self[i] for i in range(len(self)))
