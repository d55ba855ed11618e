"""Windows of consecutive epochs over one recording (docs/data.md §2.6).

`Tiling(n_epochs, size, step)` gives windows of `size` rows starting every `step` rows (default `size`); when they
leave a tail uncovered, one more window aligned to the recording end covers it. A recording shorter than `size`
gives one window at 0, padded at the end. Every row is `owned` by exactly one window: the one in which it is most
central (the most epochs on its shorter side; ties to the earlier window), so a temporal model predicts each epoch
with as much context on both sides as the windows give. With `step` == `size` (the disjoint evaluation tiling) that
only matters where the end-aligned window overlaps the one before it; with `step` == `size` // 2 every epoch
away from the recording ends is predicted with about a quarter window on each side (at least 5 epochs in windows
of 20).

Every consumer of windows (`SequenceDataset`, the frozen-vector store, one night in memory) builds its items from a
`Window`: which rows it reads, which positions are real (`valid`) and which it owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def window_starts(n_epochs: int, epochs_per_window: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows over a recording of n_epochs: (first row of each window, first position it owns, the position
    after the last one it owns), each (n_windows,) int64.

    Windows start every `step` rows; when they leave a tail uncovered, a final window is aligned to the recording
    end. A recording shorter than the window gives one window starting at 0 (padded by the caller). Each row is
    owned by the window in which it is most central: the largest min(rows before it, real rows after it) in that
    window, ties to the earlier window. Owned positions are contiguous, and with step <= size every row is owned
    exactly once (with step > size, as training windows may be, the rows between windows are owned by none).
    """
    size = int(epochs_per_window)
    if n_epochs <= size:
        starts = np.zeros(1, dtype=np.int64)
    else:
        starts = np.arange(0, n_epochs - size + 1, int(step), dtype=np.int64)
        if int(starts[-1]) + size < n_epochs:  # final window aligned to the recording end
            starts = np.append(starts, n_epochs - size)
    # With n > size every window is full, so a row is most central in the window whose centre is nearest: between
    # consecutive windows the owner changes past the midpoint of their centres (a tie stays with the earlier one),
    # clipped to each window's own rows. With n <= size there is one window, owning every real row.
    stops = np.minimum(starts + size, n_epochs)  # (W,) one past each window's last real row
    cuts = (starts[:-1] + starts[1:] + size - 1) // 2 + 1  # (W - 1,) first row the later of two windows owns
    low = np.maximum(starts, np.concatenate([[0], cuts]))  # (W,) first owned row
    high = np.minimum(stops, np.concatenate([cuts, [n_epochs]]))  # (W,) one past the last owned row
    owns = high > low  # a window may own nothing (steps far below the size)
    owned_from = np.where(owns, low - starts, 0).astype(np.int64)
    owned_to = np.where(owns, high - starts, 0).astype(np.int64)
    return starts, owned_from, owned_to


@dataclass(frozen=True)
class Window:
    """Rows [start, stop) of a recording in a window of `size` positions (stop - start <= size; the positions
    after them are padding), owning its positions [owned_from, owned_to) (default: every real one)."""

    start: int
    stop: int
    size: int
    owned_from: int = 0
    owned_to: int | None = None

    @classmethod
    def within(cls, start: int, size: int, n_epochs: int, owned_from: int = 0, owned_to: int | None = None) -> Window:
        """The window of `size` positions starting at row `start` of a recording of `n_epochs` rows."""
        end = None if owned_to is None else int(owned_to)
        return cls(int(start), min(int(start) + int(size), int(n_epochs)), int(size), int(owned_from), end)

    @property
    def n_real(self) -> int:
        return self.stop - self.start

    @property
    def valid(self) -> np.ndarray:
        """(size,) bool: a real epoch (False at padding)."""
        return np.arange(self.size) < self.n_real

    @property
    def owned(self) -> np.ndarray:
        """(size,) bool: the positions this window predicts (real, and central here rather than elsewhere)."""
        positions = np.arange(self.size)
        end = self.size if self.owned_to is None else self.owned_to
        return self.valid & (positions >= self.owned_from) & (positions < end)

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
    disjoint tiling); with step <= size every row is owned by exactly one window. `starts`, `owned_from`,
    `owned_to`: (n_windows,) int64."""

    def __init__(self, n_epochs: int, size: int, step: int | None = None):
        if size < 1 or (step is not None and step < 1):
            raise ValueError(f"Tiling: window size ({size}) and step ({step}) must be >= 1")
        self.n_epochs, self.size = int(n_epochs), int(size)
        self.step = self.size if step is None else int(step)
        self.starts, self.owned_from, self.owned_to = window_starts(self.n_epochs, self.size, self.step)

    @classmethod
    def covering(cls, n_epochs: int, size: int, step: int | None = None) -> Tiling:
        """The evaluation tiling: every row owned by exactly one window. ValueError for a step longer than the
        window, which would leave rows between windows unpredicted."""
        if step is not None and step > size:
            raise ValueError(f"Tiling: an evaluation step ({step}) longer than the window ({size}) skips rows")
        return cls(n_epochs, size, step)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, index: int) -> Window:
        return Window.within(
            int(self.starts[index]), self.size, self.n_epochs, int(self.owned_from[index]), int(self.owned_to[index])
        )

    def __iter__(self) -> Iterator[Window]:
        return (self[i] for i in range(len(self)))
