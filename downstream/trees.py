"""Gradient-boosted trees fitted with a progress bar: the feature baseline's and the event detector's
`HistGradientBoostingClassifier`. scikit-learn reports each boosting iteration as it starts (`verbose=2`: a
"[k/n]" line); that report is read, never shown, to move a tqdm bar, so the fit itself is the plain fit (the same
trees, no extra work but the report).
"""

from __future__ import annotations

import contextlib
import io
import re
import threading

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from tqdm.auto import tqdm

ITERATION = re.compile(r"\[(\d+)/\d+\]")  # scikit-learn's report of the iteration starting


class _IterationReader(io.TextIOBase):
    """A stdout stand-in that moves `bar` to the iterations done by the "[k/n]" reports written to it."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for started in ITERATION.findall(text):
            self.bar.update(max(int(started) - 1 - self.bar.n, 0))
        return len(text)


def fit_trees(
    classifier: HistGradientBoostingClassifier, x: np.ndarray, y: np.ndarray, *, progress: bool, desc: str = "trees"
) -> HistGradientBoostingClassifier:
    """`classifier.fit(x, y)`, returned, with a tqdm bar over its boosting iterations (--no-progress, or off the
    main thread: the plain fit). What scikit-learn prints while fitting is read for the bar, not shown (stdout is
    the process's: another thread's print during the fit would be read too); `verbose` is left as it was."""
    if not progress or threading.current_thread() is not threading.main_thread():
        return classifier.fit(x, y)
    verbose = classifier.verbose
    with tqdm(total=int(classifier.max_iter), desc=desc, unit="iteration", leave=False) as bar:
        try:
            classifier.set_params(verbose=2)
            with contextlib.redirect_stdout(_IterationReader(bar)):
                classifier.fit(x, y)
            bar.update(classifier.n_iter_ - bar.n)
        finally:
            classifier.set_params(verbose=verbose)
    return classifier
