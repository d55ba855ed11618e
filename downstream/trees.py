"""Gradient-boosted trees fitted with a progress bar: the feature baseline's and the event detector's
`HistGradientBoostingClassifier`, grown `chunk` boosting iterations at a time (warm start) so that a fit of many
minutes shows how far it is. Without early stopping or subsampling each iteration depends only on those before
it, so the chunked fit builds exactly the trees of one fit with the same `max_iter`.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from tqdm.auto import tqdm


def fit_trees(
    classifier: HistGradientBoostingClassifier,
    x: np.ndarray,
    y: np.ndarray,
    *,
    progress: bool,
    desc: str = "trees",
    chunk: int = 10,
) -> HistGradientBoostingClassifier:
    """`classifier.fit(x, y)`, in place and returned, with a tqdm bar over its boosting iterations (--no-progress:
    silent). The classifier must be unfitted and must not stop early (`early_stopping=False`); its `warm_start` is
    left as it was."""
    if classifier.get_params()["early_stopping"] is not False:
        raise ValueError("fit_trees grows a fixed number of iterations: set early_stopping=False")
    if hasattr(classifier, "n_iter_"):
        raise ValueError("fit_trees fits an unfitted classifier; this one is fitted already")
    total, warm = int(classifier.max_iter), classifier.warm_start
    with tqdm(total=total, desc=desc, unit="iteration", leave=False, disable=not progress) as bar:
        try:
            classifier.set_params(warm_start=True)
            for grown in range(min(chunk, total), total + chunk, chunk):
                classifier.set_params(max_iter=min(grown, total))
                classifier.fit(x, y)
                bar.update(classifier.n_iter_ - bar.n)
                if grown >= total:
                    break
        finally:
            classifier.set_params(max_iter=total, warm_start=warm)
    return classifier
