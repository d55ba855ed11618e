"""utils.metrics and utils.ahi: equality with scikit-learn, subject bootstrap, AHI event counting, ICC and agreement."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from dataset.constants import STAGE_NAMES, STAGE_UNSCORED
from utils.ahi import SEVERITY_NAMES, ahi_agreement, count_events, estimate_ahi, event_count_scale, severity_class
from utils.metrics import (
    auroc_auprc,
    bootstrap_ci,
    classification_metrics,
    cohen_kappa,
    evaluate,
    event_runs,
    icc,
)


def _random_labels(seed: int, n_classes: int, n: int = 400, drop_pred_class: int | None = None):
    """Random truth, a prediction right ~60 % of the time, and tied scores (rounded to 0.05)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, n_classes, n))
    if drop_pred_class is not None:  # this class is never predicted
        y_pred = np.where(y_pred == drop_pred_class, (drop_pred_class + 1) % n_classes, y_pred)
    score = np.round(np.clip(0.5 * y_true + 0.6 * rng.random(n), 0, 1) / 0.05) * 0.05  # (n,) with ties
    return y_true, y_pred, score


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_classes", [5, 2])
def test_classification_metrics_equal_sklearn(seed, n_classes):
    y_true, y_pred, score = _random_labels(seed, n_classes, drop_pred_class=seed % n_classes)
    got = classification_metrics(y_true, y_pred, n_classes, y_prob=score)
    labels = list(range(n_classes))
    assert got["n"] == y_true.size
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert got["kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred), abs=1e-12)
    per_class = skm.f1_score(y_true, y_pred, labels=labels, average=None)
    assert list(got["per_class_f1"].values()) == pytest.approx(per_class.tolist(), abs=1e-12)
    assert got["per_class_f1"][got["class_names"][seed % n_classes]] == 0.0  # never predicted, but scored
    assert got["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    if n_classes == 5:
        assert got["class_names"] == list(STAGE_NAMES)
        assert "auroc" not in got and "sensitivity" not in got
    else:
        assert got["sensitivity"] == pytest.approx(skm.recall_score(y_true, y_pred), abs=1e-12)
        assert got["specificity"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=0), abs=1e-12)
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y_true, score), abs=1e-12)
        assert got["auprc"] == pytest.approx(skm.average_precision_score(y_true, score), abs=1e-12)
        two_column = classification_metrics(y_true, y_pred, 2, y_prob=np.stack([1 - score, score], 1))
        assert two_column["auroc"] == got["auroc"] and two_column["auprc"] == got["auprc"]


def test_class_absent_from_truth_and_prediction_is_nan_not_zero():
    y_true = np.array([0, 0, 1, 2, 2, 2, 4])
    y_pred = np.array([0, 1, 1, 2, 0, 2, 4])  # class 3 (N3) in neither
    got = classification_metrics(y_true, y_pred, 5)
    assert math.isnan(got["per_class_f1"]["N3"])
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))


def test_unscored_epochs_are_left_out():
    y_true, y_pred, score = _random_labels(7, 2)
    masked = y_true.copy()
    masked[::5] = STAGE_UNSCORED
    keep = masked != STAGE_UNSCORED
    got = classification_metrics(masked, y_pred, 2, y_prob=score)
    ref = classification_metrics(y_true[keep], y_pred[keep], 2, y_prob=score[keep])
    assert got == ref and got["n"] == keep.sum()


def test_degenerate_binary_inputs_give_nan_not_crash():
    got = classification_metrics([1, 1, 1], [1, 0, 1], 2, y_prob=[0.9, 0.2, 0.8])
    assert math.isnan(got["auroc"]) and math.isnan(got["specificity"])
    assert got["sensitivity"] == pytest.approx(2 / 3)
    assert got["auprc"] == pytest.approx(1.0)
    auroc, auprc = auroc_auprc([0, 0], [0.1, 0.7])
    assert math.isnan(auroc) and math.isnan(auprc)
    assert math.isnan(classification_metrics([0, 0], [0, 0], 2)["kappa"])


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_weighted_kappa_equals_sklearn(weights):
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    b[:120] = a[:120]
    assert cohen_kappa(a, b, 4, weights) == pytest.approx(skm.cohen_kappa_score(a, b, weights=weights))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="y_pred.*\\[5\\]"):
        classification_metrics([0, 1], [0, 5], 5)
    with pytest.raises(ValueError, match="y_prob"):
        classification_metrics([0, 1], [0, 1], 2, y_prob=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="unknown task"):
        evaluate([0], [0], None, [0], "spindles", n_boot=0)


# ---------------------------------------------------------------------------------------------- bootstrap
def _cohort(n_subjects: int, seed: int, epochs: int = 60):
    """Subjects whose own accuracy varies (Beta-distributed), as real test subjects do."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_subjects), epochs)
    y_true = rng.integers(0, 5, groups.size)
    p_correct = rng.beta(8, 3, n_subjects)[groups]
    y_pred = np.where(rng.random(groups.size) < p_correct, y_true, rng.integers(0, 5, groups.size))
    return y_true, y_pred, groups


def _accuracy(t, p):
    return float(np.mean(t == p))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_ci_contains_point_and_narrows_with_more_subjects(seed):
    widths = {}
    for n_subjects in (5, 80):
        y_true, y_pred, groups = _cohort(n_subjects, seed)
        point, low, high = bootstrap_ci(y_true, y_pred, groups, _accuracy, n_boot=300, seed=seed)
        assert point == pytest.approx(_accuracy(y_true, y_pred))
        assert low <= point <= high
        widths[n_subjects] = high - low
    assert widths[80] < 0.6 * widths[5]


def test_bootstrap_is_deterministic_under_seed_and_resamples_whole_subjects():
    y_true, y_pred, groups = _cohort(12, 4)
    first = bootstrap_ci(y_true, y_pred, groups, _accuracy, n_boot=200, seed=11)
    assert bootstrap_ci(y_true, y_pred, groups, _accuracy, n_boot=200, seed=11) == first
    assert bootstrap_ci(y_true, y_pred, groups, _accuracy, n_boot=200, seed=12) != first
    # Every subject is exactly half right: resampling whole subjects cannot move the accuracy, whereas
    # resampling epochs would.
    groups = np.repeat(np.arange(10), 8)
    y_true = np.zeros(80, dtype=int)
    y_pred = np.tile([0, 1, 0, 1, 1, 0, 1, 0], 10)
    shuffle = np.random.default_rng(0).permutation(80)  # epochs of a subject need not be adjacent
    for order in (np.arange(80), shuffle):
        point, low, high = bootstrap_ci(y_true[order], y_pred[order], groups[order], _accuracy, n_boot=100)
        assert point == low == high == 0.5
    # Unequal subject sizes: every replicate holds a multiset of whole subjects.
    sizes = np.array([1, 10, 100])
    groups = np.repeat(np.arange(3), sizes)
    seen = []
    bootstrap_ci(np.zeros(111), np.zeros(111), groups, lambda t, p: seen.append(t.size) or 0.0, n_boot=50)
    possible = {a + b + c for a in sizes for b in sizes for c in sizes}
    assert set(seen[1:]) <= possible and len(set(seen[1:])) > 3


def test_bootstrap_vector_metric_matches_scalar_runs():
    y_true, y_pred, groups = _cohort(15, 5)
    both = bootstrap_ci(y_true, y_pred, groups, lambda t, p: np.array([_accuracy(t, p), np.mean(p == 0)]), 100, 3)
    acc = bootstrap_ci(y_true, y_pred, groups, _accuracy, 100, 3)
    assert [both[i][0] for i in range(3)] == pytest.approx(list(acc))


@pytest.mark.parametrize("task", ["sleep_stage", "apnea"])
def test_evaluate_pooled_ci_and_per_recording(task):
    rng = np.random.default_rng(9)
    n_classes = 5 if task == "sleep_stage" else 2
    subjects = np.repeat(np.arange(20), 50)  # 20 subjects x 2 nights x 25 epochs
    recordings = subjects * 2 + np.tile(np.repeat([0, 1], 25), 20)
    y_true = rng.integers(0, n_classes, subjects.size)
    y_pred = np.where(rng.random(subjects.size) < 0.7, y_true, rng.integers(0, n_classes, subjects.size))
    y_true[:7] = STAGE_UNSCORED
    y_prob = np.clip(0.4 * y_true + 0.6 * rng.random(subjects.size), 0, 1) if n_classes == 2 else None
    out = evaluate(y_true, y_pred, y_prob, subjects, task, n_boot=200, recordings=recordings)

    keep = y_true != STAGE_UNSCORED
    names = STAGE_NAMES if n_classes == 5 else ("no_apnea", "apnea")
    assert out["pooled"] == classification_metrics(y_true, y_pred, n_classes, y_prob, class_names=names)
    assert out["n_epochs"] == keep.sum() and out["n_subjects"] == 20 and out["n_recordings"] == 40
    expected = {"accuracy", "macro_f1", "kappa"} | (
        {"sensitivity", "specificity", "auroc", "auprc"} if n_classes == 2 else set()
    )
    assert set(out["ci"]) == expected == set(out["per_recording"])
    for name, (low, high) in out["ci"].items():
        assert low <= out["pooled"][name] <= high, name
    per_rec_acc = [np.mean(y_true[m] == y_pred[m]) for r in range(40) for m in [keep & (recordings == r)]]
    assert out["per_recording"]["accuracy"]["median"] == pytest.approx(np.median(per_rec_acc))
    assert out["per_recording"]["accuracy"]["n"] == 40
    # evaluate's weighted-count bootstrap draws the same replicates as bootstrap_ci's concatenation.
    _, low, high = bootstrap_ci(y_true[keep], y_pred[keep], subjects[keep], _accuracy, n_boot=200)
    assert out["ci"]["accuracy"] == pytest.approx([low, high], abs=1e-12)
    if n_classes == 2:
        _, low, high = bootstrap_ci(
            y_true[keep], y_prob[keep], subjects[keep], lambda t, s: auroc_auprc(t, s)[0], n_boot=200
        )
        assert out["ci"]["auroc"] == pytest.approx([low, high], abs=1e-12)


def test_one_subject_has_no_bootstrap_interval():
    """Resampling one subject gives the point estimate every time: no interval, not a zero-width one."""
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    out = evaluate(y_true, y_pred, rng.random(200), np.zeros(200), "apnea", n_boot=50)
    assert out["n_subjects"] == 1 and set(out["ci"]) >= {"kappa", "auroc"}
    assert all(math.isnan(low) and math.isnan(high) for low, high in out["ci"].values())
    assert math.isfinite(out["pooled"]["kappa"])


# ---------------------------------------------------------------------------------------------- AHI
def test_event_runs_hand_count():
    assert event_runs([0, 1, 1, 0, 1, 0, 0, 1, 1, 1]) == [(1, 2), (4, 1), (7, 3)]
    assert event_runs([1, 1, 0, 1]) == [(0, 2), (3, 1)]
    assert event_runs([0, 0, 0]) == []
    assert event_runs([1, 0, 1, 1, 1], min_epochs=2) == [(2, 3)]
    assert event_runs(np.array([True, True, False])) == [(0, 2)]
    with pytest.raises(ValueError, match="0/1"):
        event_runs([0.2, 0.9, 0.4])


def test_estimate_ahi_known_pattern():
    n = 240  # 2 h of 30-s epochs
    sleep = np.ones(n, dtype=bool)
    sleep[:20] = False  # first 10 min awake -> 220 sleep epochs = 110 min
    apnea = np.zeros(n, dtype=int)
    hypopnea = np.zeros(n, dtype=int)
    apnea[5] = 1  # run in wake: excluded
    apnea[18:23] = 1  # starts in wake, runs into sleep: excluded
    apnea[30] = 1  # 1 event
    apnea[40:42] = 1  # 2 epochs = 60 s: 1 event
    apnea[50:55] = 1  # 5 epochs: ceil(5 / 2) = 3 events
    hypopnea[[100, 102]] = 1  # two runs split by a negative epoch: 2 events
    hypopnea[200:204] = 1  # 4 epochs: 2 events
    assert count_events(apnea, sleep) == 5 and count_events(hypopnea, sleep) == 4
    hours = 220 * 30 / 3600
    assert estimate_ahi(apnea, hypopnea, sleep) == pytest.approx(9 / hours)
    assert estimate_ahi(apnea, hypopnea, sleep, max_event_epochs=None) == pytest.approx(6 / hours)
    assert math.isnan(estimate_ahi(apnea, hypopnea, np.zeros(n, dtype=bool)))
    assert estimate_ahi(apnea, hypopnea, sleep, scales=(2.0, 0.5)) == pytest.approx((2.0 * 5 + 0.5 * 4) / hours)


def test_event_count_scale_corrects_what_epoch_labels_lose():
    """20-s events, one every other epoch, half of them missing the epoch midpoint: perfect epoch labels count
    half the events; the scale fitted on one night (scored / counted) makes another night's estimate exact."""
    from dataset.labels import midpoint_flags

    def night(n_epochs: int, offset: int) -> tuple[int, np.ndarray]:
        starts = np.array([30.0 * k + (0.0 if (k // 2 + offset) % 2 else 16.0) for k in range(0, n_epochs - 1, 2)])
        return starts.size, midpoint_flags(starts, starts + 20.0, n_epochs).astype(np.int64)

    n = 240
    sleep, zeros = np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64)
    n_fit, fit_labels = night(n, 0)
    scale = event_count_scale(n_fit, count_events(fit_labels, sleep))
    assert scale == pytest.approx(2.0)
    n_new, new_labels = night(n, 1)
    scored_ahi = n_new / (n * 30 / 3600)
    assert estimate_ahi(new_labels, zeros, sleep) == pytest.approx(scored_ahi / 2)
    assert estimate_ahi(new_labels, zeros, sleep, scales=(scale, 1.0)) == pytest.approx(scored_ahi)
    assert event_count_scale(30, 19) == 1.0 and event_count_scale(30, 20) == pytest.approx(1.5)  # too few: 1
    with pytest.raises(ValueError, match=">= 0"):
        event_count_scale(-1, 30)


@pytest.mark.parametrize(
    "ahi, expected", [(0.0, 0), (4.9, 0), (5.0, 1), (14.9, 1), (15.0, 2), (29.9, 2), (30.0, 3), (88.0, 3)]
)
def test_severity_boundaries(ahi, expected):
    assert severity_class(ahi) == expected
    assert SEVERITY_NAMES[expected] == ("normal", "mild", "moderate", "severe")[expected]


def test_calibrated_count_on_a_boundary_keeps_its_class():
    # 55 counted events x 24/22 scored per counted in 2 h of sleep is 30/h exactly, 29.999999999999996 in floats
    sleep = np.ones(240, dtype=bool)
    apnea = np.zeros(240, dtype=np.int64)
    apnea[::4][:55] = 1
    ahi = estimate_ahi(apnea, np.zeros(240, dtype=np.int64), sleep, scales=(24 / 22, 1.0))
    assert ahi == pytest.approx(30.0) and ahi < 30.0
    assert severity_class(ahi) == 3 and severity_class(np.array([ahi])).tolist() == [3]


def test_severity_of_arrays_and_nan():
    assert severity_class(np.array([4.9, 5.0, np.nan, 31.0])).tolist() == [0, 1, -1, 3]
    assert severity_class(float("nan")) == -1


def test_icc_shrout_fleiss_table_and_perfect_agreement():
    # Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. Published: ICC(2,1) = .29, ICC(3,1) = .71;
    # from their mean squares (BMS 11.24, JMS 32.49, EMS 1.02): .2897 and .7147.
    table = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc(table, "2,1") == pytest.approx(0.2897, abs=2e-4)
    assert icc(table, "3,1") == pytest.approx(0.7148, abs=2e-4)
    values = np.array([1.0, 4.0, 12.0, 33.0, 7.5])
    assert icc(np.stack([values, values], 1), "2,1") == pytest.approx(1.0)
    assert icc(np.stack([values, values], 1), "3,1") == pytest.approx(1.0)
    # A constant offset keeps consistency (3,1) perfect but lowers absolute agreement (2,1).
    shifted = np.stack([values, values + 10], 1)
    assert icc(shifted, "3,1") == pytest.approx(1.0) and icc(shifted, "2,1") < 0.9


def test_ahi_agreement():
    scored = np.array([1.0, 4.0, 6.0, 12.0, 20.0, 35.0, 50.0, 2.0])
    few = ahi_agreement(scored[:2] + 1, scored[:2])  # 2 nights: r would be 1.000, ICC meaningless
    assert np.isnan(few["pearson_r"]) and np.isnan(few["icc_2_1"]) and few["bland_altman"]["bias"] == 1.0
    assert np.isnan(ahi_agreement(scored, scored)["icc_2_1"])  # 8 nights < 10
    perfect = ahi_agreement(scored, scored, min_nights=2)
    assert perfect["pearson_r"] == pytest.approx(1.0) and perfect["icc_2_1"] == pytest.approx(1.0)
    assert perfect["severity_accuracy"] == 1.0 and perfect["severity_kappa"] == pytest.approx(1.0)
    assert perfect["mae"] == 0.0 and perfect["n"] == 8

    estimated = np.array([2.0, 6.0, 5.0, 16.0, 18.0, 28.0, np.nan, 1.0])  # last-but-one: no predicted sleep
    got = ahi_agreement(estimated, scored, min_nights=2)
    keep = np.isfinite(estimated)
    assert got["n"] == 7 and got["n_missing"] == 1
    assert got["mae"] == pytest.approx(np.mean(np.abs(estimated[keep] - scored[keep])))
    assert got["bias"] == pytest.approx(np.mean(estimated[keep] - scored[keep]))
    assert got["pearson_r"] == pytest.approx(np.corrcoef(estimated[keep], scored[keep])[0, 1])
    ref_cls, est_cls = severity_class(scored[keep]), severity_class(estimated[keep])
    assert got["severity_accuracy"] == pytest.approx(np.mean(ref_cls == est_cls))  # 3 of 7 agree
    assert got["severity_kappa"] == pytest.approx(skm.cohen_kappa_score(ref_cls, est_cls))
    assert got["severity_kappa_linear"] == pytest.approx(skm.cohen_kappa_score(ref_cls, est_cls, weights="linear"))
    assert np.sum(got["severity_confusion"]) == 7
