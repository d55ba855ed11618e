"""The trees' fit with a progress bar (downstream/trees.py): the same model as a plain fit, a bar, no output."""

import io
import sys
import threading

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from tqdm.auto import tqdm

from downstream.trees import _IterationReader, fit_trees


def data(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8))
    y = (x[:, 0] + x[:, 1] ** 2 + rng.normal(scale=0.5, size=n) > 1).astype(int) + (x[:, 2] > 1)
    return x, y


def trees() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=23, early_stopping=False, random_state=3)


def test_the_fit_with_a_bar_builds_the_trees_of_a_plain_fit(capsys):
    x, y = data()
    whole = trees().fit(x, y)
    shown = fit_trees(trees(), x, y, progress=True, desc="test trees")
    assert shown.n_iter_ == whole.n_iter_ == 23
    np.testing.assert_array_equal(shown.predict_proba(x), whole.predict_proba(x))
    assert shown.verbose == 0  # left as given
    out, err = capsys.readouterr()
    assert out == "" and "test trees" in err  # scikit-learn's report read, not shown; the bar on stderr


def test_the_bar_follows_the_iteration_reports():
    with tqdm(total=10, file=io.StringIO()) as bar:
        reader = _IterationReader(bar)
        reader.write("Binning 0.000 GB of training data: 0.003 s\n[1/10] ")
        assert bar.n == 0
        reader.write("1 tree, 3 leaves\n[4/10] ")
        assert bar.n == 3


def test_silent_without_progress(capsys):
    x, y = data(200)
    fit_trees(trees(), x, y, progress=False)
    assert capsys.readouterr() == ("", "")


def test_off_the_main_thread_the_fit_is_plain(capsys):
    """stdout is the process's: a fit in another thread shows no bar and leaves stdout alone."""
    x, y = data(200)
    stdout, done = sys.stdout, []
    thread = threading.Thread(target=lambda: done.append(fit_trees(trees(), x, y, progress=True)))
    thread.start()
    thread.join()
    assert done[0].n_iter_ == 23 and sys.stdout is stdout
    assert capsys.readouterr() == ("", "")
