"""The trees' chunked fit (downstream/trees.py): the same model as one fit, a progress bar, refusals."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from downstream.trees import fit_trees


def data(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8))
    y = (x[:, 0] + x[:, 1] ** 2 + rng.normal(scale=0.5, size=n) > 1).astype(int) + (x[:, 2] > 1)
    return x, y


def trees(**params) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=23, early_stopping=False, random_state=3, **params)


def test_chunked_fit_builds_the_trees_of_one_fit(capsys):
    x, y = data()
    whole = trees().fit(x, y)
    chunked = fit_trees(trees(), x, y, progress=True, desc="test trees", chunk=5)
    assert chunked.n_iter_ == whole.n_iter_ == 23
    np.testing.assert_array_equal(chunked.predict_proba(x), whole.predict_proba(x))
    assert chunked.get_params()["max_iter"] == 23 and chunked.warm_start is False  # left as given
    assert "test trees" in capsys.readouterr().err  # the bar


def test_silent_without_progress(capsys):
    x, y = data(200)
    fit_trees(trees(), x, y, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("early_stopping", [True, "auto"])
def test_refuses_early_stopping(early_stopping):
    x, y = data(200)
    classifier = HistGradientBoostingClassifier(max_iter=5, early_stopping=early_stopping)
    with pytest.raises(ValueError, match="early_stopping=False"):
        fit_trees(classifier, x, y, progress=False)


def test_refuses_a_fitted_classifier():
    x, y = data(200)
    with pytest.raises(ValueError, match="fitted already"):
        fit_trees(trees().fit(x, y), x, y, progress=False)
