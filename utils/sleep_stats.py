"""Sleep statistics of one night from its hypnogram (docs/evaluation.md §6), as a sleep report lists them.

Conventions (AASM scoring manual terms; yasa's `sleep_statistics` uses the same building blocks):
- The recording is assumed to start at lights off and end at lights on, so total recording time (TRT) is the
  whole hypnogram, unscored epochs included.
- Sleep = N1, N2, N3 or REM. Total sleep time (TST) counts sleep epochs only; unscored epochs (-1: movement,
  unscored, uncovered) are neither sleep nor wake: they are left out of TST and WASO and reported as
  `unscored_min`. Hence w_min + n1_min + n2_min + n3_min + rem_min + unscored_min = trt_min.
- Sleep onset = the first epoch of any sleep stage (AASM). Sleep onset latency (SOL) = time from the start of the
  recording to sleep onset. REM latency = time from sleep onset to the first REM epoch (the clinical
  convention; yasa's `Lat_REM` counts from the start of the recording instead).
- Sleep period time (SPT) = from sleep onset to the end of the last sleep epoch. WASO = wake within the SPT
  (so wake after the final awakening is not WASO). An awakening = a maximal run of consecutive wake epochs
  within the SPT of at least `min_awakening_epochs` epochs.
- Sleep efficiency (SE) = TST / TRT x 100 %; sleep maintenance efficiency = TST / SPT x 100 %.
- Stage percentages are of TST. Latencies are NaN when the stage never occurs; without any sleep there is no
  sleep period, so WASO and the number of awakenings are NaN too (undefined, not 0).
- The apnea-hypopnea index of a night is `utils.ahi`'s (`epoch_run_ahi`, `event_summary`).

Example (one value per 30 s; W W N1 N2 N2 W N2 REM REM W):
>>> s = sleep_statistics([0, 0, 1, 2, 2, 0, 2, 4, 4, 0])
>>> s["trt_min"], s["tst_min"], s["sol_min"], s["rem_latency_min"], s["waso_min"], s["n_awakenings"]
(5.0, 3.0, 1.0, 2.5, 0.5, 1)
"""

from __future__ import annotations

import numpy as np

from dataset.constants import SLEEP_STAGES, STAGE_NAMES, STAGE_UNSCORED
from utils.metrics import as_labels, event_runs

WAKE = STAGE_NAMES.index("W")
REM = STAGE_NAMES.index("REM")


def sleep_statistics(
    stages,
    epoch_s: float = 30.0,
    min_awakening_epochs: int = 1,
) -> dict:
    """Sleep statistics of one night.

    Args:
        stages: (n_epochs,) int hypnogram, 0..4 = W, N1, N2, N3, REM (dataset.constants.STAGE_NAMES),
            -1 = unscored. Epoch 0 is the start of the recording.
        epoch_s: epoch length in seconds.
        min_awakening_epochs: shortest wake run (epochs) counted as an awakening.

    Returns:
        dict, durations in minutes (`*_min`), ratios in percent (`*_pct`):
        trt_min, tst_min, spt_min, sleep_efficiency_pct, sleep_maintenance_efficiency_pct, sol_min,
        rem_latency_min, waso_min, n_awakenings, unscored_min, <stage>_min for every stage (w, n1, n2, n3,
        rem), <stage>_pct of TST for the sleep stages, nrem_min, nrem_pct, n_epochs, epoch_s.
    """
    hypno = as_labels(stages, "stages", len(STAGE_NAMES), allow_unscored=True)  # (n_epochs,) int64
    if hypno.size == 0:
        raise ValueError("stages: empty hypnogram")
    if epoch_s <= 0:
        raise ValueError(f"epoch_s must be positive, got {epoch_s}")
    to_min = epoch_s / 60.0
    nan = float("nan")
    sleep = np.isin(hypno, SLEEP_STAGES)  # (n_epochs,) bool
    wake = hypno == WAKE

    out: dict = {"n_epochs": int(hypno.size), "epoch_s": float(epoch_s)}
    out["trt_min"] = hypno.size * to_min
    out["tst_min"] = float(sleep.sum() * to_min)
    for code, name in enumerate(STAGE_NAMES):
        out[f"{name.lower()}_min"] = float(np.sum(hypno == code) * to_min)
    out["unscored_min"] = float(np.sum(hypno == STAGE_UNSCORED) * to_min)
    out["nrem_min"] = float(sum(out[f"{STAGE_NAMES[c].lower()}_min"] for c in SLEEP_STAGES if c != REM))
    tst = out["tst_min"]
    for code in SLEEP_STAGES:
        name = STAGE_NAMES[code].lower()
        out[f"{name}_pct"] = 100.0 * out[f"{name}_min"] / tst if tst > 0 else nan
    out["nrem_pct"] = 100.0 * out["nrem_min"] / tst if tst > 0 else nan
    out["sleep_efficiency_pct"] = 100.0 * tst / out["trt_min"]

    sleep_idx = np.flatnonzero(sleep)
    if sleep_idx.size:
        onset, last = int(sleep_idx[0]), int(sleep_idx[-1])
        period_wake = wake[onset : last + 1]  # wake within the sleep period
        rem_idx = np.flatnonzero(hypno == REM)
        out["sol_min"] = onset * to_min
        out["rem_latency_min"] = (int(rem_idx[0]) - onset) * to_min if rem_idx.size else nan
        out["spt_min"] = (last - onset + 1) * to_min
        out["waso_min"] = float(period_wake.sum() * to_min)
        out["n_awakenings"] = len(event_runs(period_wake, min_epochs=min_awakening_epochs))
        out["sleep_maintenance_efficiency_pct"] = 100.0 * tst / out["spt_min"]
    else:
        out.update(sol_min=nan, rem_latency_min=nan, spt_min=0.0, waso_min=nan, n_awakenings=nan)
        out["sleep_maintenance_efficiency_pct"] = nan

    return out
