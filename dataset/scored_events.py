"""Scored events as intervals, and the hypopnea rules of the scored AHI (docs/data.md, "Events").

An event is the half-open interval [onset_s, onset_s + duration_s) in seconds from the recording start.
Hypopnea rules (as NSRR's `ahi_a0h3a` / `ahi_a0h4`): every apnea counts; a hypopnea counts under "3a" when a
desaturation of >= 3 % begins during it or within `DESAT_WINDOW_S` after it ends, or an arousal begins during
it or within `AROUSAL_WINDOW_S` after it ends; under "4" when a desaturation of >= 4 % does; under "all"
always. The windows allow for the lag of the SpO2 signal behind the breathing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from dataset.constants import EPOCH_S

EVENT_MIN_S = 10.0  # AASM minimum duration of an apnea or hypopnea, seconds
DESAT_WINDOW_S = 30.0  # a desaturation may begin up to this long after the hypopnea ends (the SpO2 lag)
AROUSAL_WINDOW_S = 5.0  # an arousal may begin up to this long after the hypopnea ends
# a scored drop counts as 3 % (4 %) from 3 % (4 %) minus this: nadir and baseline are stored as float32 (about
# 4e-6 % apart near 65 %: 65.2 - 61.2 reads 3.9999962) and Profusion's baseline is rebuilt as nadir + drop, while
# scorers write drops to 0.1 % at best
DROP_ROUNDING_PCT = 1e-3
HYPOPNEA_RULES: tuple[str, ...] = ("3a", "4", "all")
DEFAULT_HYPOPNEA_RULE = "3a"  # AASM recommended rule: >= 3 % desaturation or an arousal
RESPIRATORY_EVENT_TYPES: tuple[str, ...] = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea")


class Event(NamedTuple):
    """One scored or predicted event: [onset_s, onset_s + duration_s) seconds from the recording start."""

    onset_s: float
    duration_s: float
    type: str
    probability: float = float("nan")  # mean model probability over the event; NaN for a scorer's event
    drop_pct: float = float("nan")  # SpO2 drop (baseline - nadir, %) of a desaturation, where known

    @property
    def end_s(self) -> float:
        return self.onset_s + self.duration_s


def events_per_hour(n_events: float, sleep_epochs: int, epoch_s: float = EPOCH_S) -> float:
    """`n_events` per hour of `sleep_epochs` epochs of sleep (the AHI's unit); NaN without sleep. Computed as
    n x 3600 / (epochs x epoch_s), one division of two whole numbers, so a night exactly on a severity boundary
    (81 events in 648 epochs: 15/h) is exactly on it, not a rounding error below."""
    seconds = sleep_epochs * epoch_s
    return float(n_events) * 3600.0 / seconds if seconds > 0 else float("nan")


def qualifying_events(events: Sequence[Event], rule: str = DEFAULT_HYPOPNEA_RULE) -> list[Event]:
    """The apneas and hypopneas that count towards the AHI under a hypopnea rule (module docstring).

    `events` holds respiratory events plus the night's `desaturation` events (with `drop_pct`) and `arousal`
    events. Every apnea counts. A desaturation without a known drop counts as >= 3 % (the scorer marked it)
    but not as >= 4 %. Returns the counted apneas and hypopneas in time order.
    """
    if rule not in HYPOPNEA_RULES:
        raise ValueError(f"hypopnea rule must be one of {HYPOPNEA_RULES}, got {rule!r}")
    min_drop = {"3a": 3.0, "4": 4.0}.get(rule)
    desats = [
        e
        for e in events
        if e.type == "desaturation"
        and (np.isnan(e.drop_pct) and min_drop == 3.0 or e.drop_pct >= (min_drop or 0.0) - DROP_ROUNDING_PCT)
    ]
    arousals = [e for e in events if e.type == "arousal"] if rule == "3a" else []
    counted = []
    for event in sorted(events, key=lambda e: e.onset_s):
        if event.type.endswith("apnea"):
            counted.append(event)
        elif event.type == "hypopnea":
            if (
                rule == "all"
                or any(event.onset_s <= d.onset_s < event.end_s + DESAT_WINDOW_S for d in desats)
                or any(event.onset_s <= a.onset_s < event.end_s + AROUSAL_WINDOW_S for a in arousals)
            ):
                counted.append(event)
    return counted
