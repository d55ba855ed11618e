"""Hand-crafted per-epoch features of the feature baseline (docs/evaluation.md §5): band powers and simple statistics.

`epoch_features` takes 30-s epochs at 100 Hz, one (n_epochs, 3000) array per channel (as the parser writes them:
robust-scaled, so powers are relative to the night's median/IQR), and returns one row per epoch. Everything is
vectorised over epochs; an 8-h night of six channels takes a fraction of a second.

Per channel: log10 band powers (Welch, 4-s Hann windows, 50 % overlap) in BANDS, the same as fractions of the
0.5-49 Hz power, the 95 % spectral edge frequency (Hz), log10 standard deviation, excess kurtosis, zero crossings
per second, log10 line length (mean |Δx| per sample). For ECG channels, a crude heart rate from the
autocorrelation of the QRS energy envelope (bpm, whole epoch) plus its range and trend over three 10-s thirds.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window, hilbert

from dataset.constants import CHANNEL_BY_NAME, FS

BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta_slow", 0.5, 2.0),
    ("delta", 2.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 12.0),
    ("sigma", 12.0, 15.0),
    ("beta", 15.0, 30.0),
    ("gamma", 30.0, 49.0),
)
WELCH_S = 4.0  # Welch window length (s): 0.25 Hz resolution
EDGE = 0.95  # spectral edge: frequency below which this fraction of the 0.5-49 Hz power lies
HR_RANGE_BPM = (30.0, 200.0)
_EPS = 1e-12


def _is_ecg(name: str) -> bool:
    spec = CHANNEL_BY_NAME.get(name)
    return spec.modality == "ecg" if spec is not None else name.lower().startswith("ecg")


def heart_rate(ecg: np.ndarray, fs: float = FS) -> np.ndarray:
    """Crude heart rate (bpm) per row of `ecg` (n, samples): the first strong peak of the autocorrelation of
    the squared-derivative envelope between 30 and 200 bpm, refined by parabolic interpolation. NaN-free; rows
    without a clear rhythm give the rate of their strongest lag."""
    if len(ecg) == 0:
        return np.zeros(0)
    x = np.diff(ecg, axis=1) ** 2  # QRS energy, (n, samples - 1)
    x = _moving_average(x, 5)
    x = (x - x.mean(axis=1, keepdims=True)).astype(np.float32)
    lo, hi = int(fs * 60 / HR_RANGE_BPM[1]), int(fs * 60 / HR_RANGE_BPM[0])
    n_fft = sfft.next_fast_len(x.shape[1] + hi + 2, real=True)  # no circular wrap below lag hi + 2
    spec = sfft.rfft(x, n_fft, axis=1)
    ac = sfft.irfft(spec.real**2 + spec.imag**2, n_fft, axis=1)[:, : hi + 2].astype(np.float64)
    ac /= ac[:, :1] + _EPS
    window = ac[:, lo - 1 : hi + 2]  # lags lo-1 .. hi+1
    inner = window[:, 1:-1]
    local_max = (inner >= window[:, :-2]) & (inner >= window[:, 2:])
    strong = local_max & (inner >= 0.75 * inner.max(axis=1, keepdims=True))
    first = np.where(strong.any(axis=1), strong.argmax(axis=1), inner.argmax(axis=1))  # index into inner
    rows = np.arange(len(x))
    y0, y1, y2 = window[rows, first], window[rows, first + 1], window[rows, first + 2]
    denom = y0 - 2 * y1 + y2
    shift = np.where(np.abs(denom) > _EPS, 0.5 * (y0 - y2) / np.where(np.abs(denom) > _EPS, denom, 1.0), 0.0)
    lag = lo + first + np.clip(shift, -0.5, 0.5)
    return 60.0 * fs / lag


def welch_psd(x: np.ndarray, fs: float = FS) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Welch PSD (unit²/Hz) per row of x (n, samples): Hann windows of WELCH_S s, 50 % overlap,
    mean removed per window. Returns (freqs (n_freq,), psd (n, n_freq) float64)."""
    nperseg = int(WELCH_S * fs)
    window = get_window("hann", nperseg).astype(np.float32)
    segments = sliding_window_view(np.asarray(x, dtype=np.float32), nperseg, axis=1)[:, :: nperseg // 2]
    segments = segments - segments.mean(axis=2, keepdims=True)  # (n, n_windows, nperseg)
    spec = sfft.rfft(segments * window, axis=2)
    psd = (spec.real**2 + spec.imag**2).mean(axis=1, dtype=np.float64) / (fs * float((window**2).sum()))
    psd[:, 1 : -1 if nperseg % 2 == 0 else None] *= 2
    return sfft.rfftfreq(nperseg, 1 / fs), psd


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis (same length), via cumulative sums."""
    c = np.cumsum(np.pad(x, ((0, 0), (width // 2 + 1, width - width // 2 - 1)), mode="edge"), axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def channel_features(x: np.ndarray, fs: float = FS, ecg: bool = False) -> tuple[np.ndarray, list[str]]:
    """Features (n_epochs, F) and their names for one channel `x` (n_epochs, samples) at fs Hz."""
    x = np.asarray(x, dtype=np.float32)
    freqs, psd = welch_psd(x, fs)
    df = freqs[1] - freqs[0]
    powers = np.stack([psd[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) * df for _, lo, hi in BANDS], axis=1)
    in_band = (freqs >= BANDS[0][1]) & (freqs < BANDS[-1][2])
    total = psd[:, in_band].sum(axis=1) * df
    cumulative = np.cumsum(psd[:, in_band], axis=1) * df
    edge = freqs[in_band][np.minimum((cumulative < EDGE * total[:, None]).sum(axis=1), in_band.sum() - 1)]
    centred = x - x.mean(axis=1, keepdims=True)
    square = centred * centred
    var = square.mean(axis=1, dtype=np.float64)
    kurtosis = np.einsum("ij,ij->i", square, square, dtype=np.float64) / x.shape[1] / (var**2 + _EPS) - 3.0
    negative = centred < 0
    crossings = (negative[:, 1:] != negative[:, :-1]).sum(axis=1) / (x.shape[1] / fs)
    line_length = np.abs(np.diff(x, axis=1)).mean(axis=1, dtype=np.float64)
    columns = [
        np.log10(powers + _EPS),
        powers / (total[:, None] + _EPS),
        edge[:, None],
        np.log10(np.sqrt(var) + _EPS)[:, None],
        kurtosis[:, None],
        crossings[:, None],
        np.log10(line_length + _EPS)[:, None],
    ]
    names = (
        [f"logpow_{b}" for b, _, _ in BANDS]
        + [f"relpow_{b}" for b, _, _ in BANDS]
        + ["edge95_hz", "log_std", "kurtosis", "zero_cross_per_s", "log_line_length"]
    )
    if ecg:
        thirds = heart_rate(x[:, : x.shape[1] // 3 * 3].reshape(len(x) * 3, x.shape[1] // 3), fs).reshape(len(x), 3)
        columns += [
            heart_rate(x, fs)[:, None],
            (thirds.max(axis=1) - thirds.min(axis=1))[:, None],
            (thirds[:, 2] - thirds[:, 0])[:, None],
        ]
        names += ["hr_bpm", "hr_range_bpm", "hr_trend_bpm"]
    return np.concatenate(columns, axis=1), names


def epoch_features(signals: dict[str, np.ndarray], fs: float = FS) -> tuple[np.ndarray, list[str]]:
    """Hand-crafted features of every epoch.

    `signals` maps channel names (canonical, e.g. "eeg_c4", "ecg") to (n_epochs, 3000) arrays at `fs` (100 Hz);
    all must have the same number of epochs. Returns (features (n_epochs, F) float32, names) with names
    "<channel>_<feature>", channels in the order given. Heart-rate features are added for ECG channels.
    """
    if not signals:
        raise ValueError("epoch_features: no channels given")
    counts = {name: np.shape(x)[0] for name, x in signals.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"epoch_features: channels have different numbers of epochs: {counts}")
    blocks, names = [], []
    for name, x in signals.items():
        if np.ndim(x) != 2 or np.shape(x)[1] < int(WELCH_S * fs):
            raise ValueError(
                f"epoch_features: channel {name} has shape {np.shape(x)}, expected (n_epochs, samples"
                f" >= {int(WELCH_S * fs)})"
            )
        values, feature_names = channel_features(x, fs, ecg=_is_ecg(name))
        blocks.append(values)
        names += [f"{name}_{f}" for f in feature_names]
    features = np.concatenate(blocks, axis=1)
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), names


# --------------------------------------------------------------------------- respiratory features per second
# Scorers read an apnea or hypopnea as a drop of the flow amplitude against the preceding breaths, with effort
# kept (obstructive, often thoraco-abdominal paradox) or absent (central), followed 10-45 s later by the SpO2
# nadir. `respiratory_features` gives one row per second of those quantities, with past and future context.
RESP_BASELINE_S = 120  # the amplitude and SpO2 baselines look back this far (s)
RESP_LAGS_S: tuple[int, ...] = (-30, -20, -10, -5, 5, 10, 20, 30)  # context: value at t + lag
SPO2_BASELINE_PERCENTILE = 90.0  # SpO2 baseline: this percentile of the preceding RESP_BASELINE_S
SPO2_NADIR_WINDOWS_S: tuple[tuple[int, int], ...] = ((0, 20), (10, 45), (20, 60))  # future nadir windows [a, b) s
SPO2_VALID_PCT = (50.0, 100.0)  # SpO2 samples outside this range are artefacts (probe off: 0 %), and so is their second
# % comparisons allow this: above the EDF quantisation (a 16-bit 0-100 % header: 0.0015 % a step) and the float32
# storage round trip, below any oximeter's resolution (0.1 %)
SPO2_TOLERANCE_PCT = 0.01
AMPLITUDE_BASELINE_PERCENTILE = 75.0  # flow/effort baseline: this percentile of the preceding amplitudes
ENVELOPE_LAGS_S: tuple[int, ...] = (-4, -2, 2, 4)  # the sharp (Hilbert) flow envelope near t: event edges


def _second_sums(x: np.ndarray, fs: int, n_seconds: int) -> np.ndarray:
    """Per-second sums (n_seconds,) float64 of a signal at fs Hz (samples beyond n_seconds * fs dropped)."""
    return np.asarray(x[: n_seconds * fs], dtype=np.float64).reshape(n_seconds, fs).sum(axis=1)


def spo2_seconds(spo2_pct: np.ndarray, fs: int, n_seconds: int) -> np.ndarray:
    """Per-second SpO2 in % (n_seconds,) float64 from a signal in % at fs Hz: the mean of each second's samples;
    NaN for a second with any sample outside `SPO2_VALID_PCT` (an artefact: a second straddling a dropout's edge
    would otherwise read a fake low mean)."""
    samples = np.asarray(spo2_pct, dtype=np.float64)[: n_seconds * fs].reshape(n_seconds, fs)
    low, high = SPO2_VALID_PCT[0] - SPO2_TOLERANCE_PCT, SPO2_VALID_PCT[1] + SPO2_TOLERANCE_PCT
    artefact = ~np.all((samples >= low) & (samples <= high), axis=1)  # NaN samples fail the comparison too
    level = samples.mean(axis=1)
    level[artefact] = np.nan
    return level


def fill_artefacts(level: np.ndarray) -> np.ndarray:
    """`level` (n,) with its NaN seconds linearly interpolated from the valid ones (the ends held); unchanged
    when fewer than two seconds are valid."""
    valid = np.isfinite(level)
    if valid.sum() < 2 or valid.all():
        return level
    seconds = np.arange(level.size)
    return np.interp(seconds, seconds[valid], level[valid])


def _window_mean(values: np.ndarray, start: int, width: int) -> np.ndarray:
    """Mean of values[t + start : t + start + width] for every t (n,), the window clipped to the array (at least
    one value: the nearest end)."""
    n = values.shape[0]
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    t = np.arange(n)
    lo = np.clip(t + start, 0, n - 1)
    hi = np.clip(t + start + width, lo + 1, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _window_reduce(values: np.ndarray, start: int, width: int, reduce) -> np.ndarray:
    """reduce(values[t + start : t + start + width], axis=1) for every t; the array is edge-padded."""
    n = values.shape[0]
    pad_lo, pad_hi = max(0, -start), max(0, start + width)
    padded = np.pad(values, (pad_lo, pad_hi), mode="edge")
    windows = sliding_window_view(padded, width)  # (n + pad_lo + pad_hi - width + 1, width)
    first = pad_lo + start
    return reduce(windows[first : first + n], axis=1)


def _shift(values: np.ndarray, lag: int) -> np.ndarray:
    """values[t + lag] for every t, held at the ends."""
    index = np.clip(np.arange(values.shape[0]) + lag, 0, values.shape[0] - 1)
    return values[index]


def _amplitude(s1: np.ndarray, s2: np.ndarray, fs: int, width: int) -> np.ndarray:
    """Standard deviation of the signal over a centred `width`-s window, from per-second sums of x and x²."""
    mean = _window_mean(s1, -(width // 2), width) / fs
    square = _window_mean(s2, -(width // 2), width) / fs
    return np.sqrt(np.maximum(square - mean * mean, 0.0))


def _envelope(x: np.ndarray, fs: int, n_seconds: int) -> np.ndarray:
    """Per-second mean of the Hilbert envelope (instantaneous amplitude) of a breathing signal, after removing
    its 10-s moving average: follows the amplitude within a breath, where a windowed SD blurs event edges."""
    x = np.asarray(x, dtype=np.float64)[: n_seconds * fs]
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(x.size)
    lo, hi = np.clip(i - 5 * fs, 0, x.size), np.clip(i + 5 * fs, 1, x.size)
    centred = x - (c[hi] - c[lo]) / np.maximum(hi - lo, 1)
    envelope = np.abs(hilbert(centred, N=sfft.next_fast_len(x.size)))[: x.size]
    return _second_sums(envelope, fs, n_seconds) / fs


def _past_percentile(values: np.ndarray, q: float, width: int = RESP_BASELINE_S) -> np.ndarray:
    """q-th percentile of the `width` seconds before t (t excluded; edge-padded at the start)."""
    return _window_reduce(values, -width, width, lambda w, axis: np.percentile(w, q, axis=axis))


def respiratory_features(
    signals: dict[str, np.ndarray | None], n_seconds: int, fs: int = 10, spo2_scale: tuple[float, float] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Per-second respiratory features of one night.

    Args:
        signals: canonical name -> whole-night signal (n_seconds * fs,) at `fs` Hz, robust-scaled as the parser
            writes it, for any of "airflow", "thor", "abdo", "spo2"; a channel absent or None gives NaN columns
            (the column set never changes).
        n_seconds: rows of the output.
        spo2_scale: (median, IQR) of the night's SpO2 in % (the manifest's `median_spo2`, `iqr_spo2`): SpO2 is
            un-scaled to % before its drops are measured. None: drops in scaled units.

    Returns (features (n_seconds, F) float32, names). Per second t (amplitude = standard deviation over a
    centred window; ratio = log of the amplitude over the `AMPLITUDE_BASELINE_PERCENTILE`th percentile of the
    amplitudes of the preceding `RESP_BASELINE_S` s):
    flow: log amplitude (8 s), ratio (8 s and 4 s windows), minimum of the 4-s ratio over the previous and the
    next 10 s, maximum over the next 20 s (recovery breaths); effort: ratio of thor, abdo and their sum (a
    paradox cancels in the sum), thor-abdo correlation over 8 s (negative in paradox); SpO2 (%): level, drop
    below its baseline (`SPO2_BASELINE_PERCENTILE`th percentile of the preceding `RESP_BASELINE_S` s), baseline
    minus the nadir of each future window of `SPO2_NADIR_WINDOWS_S` (the SpO2 lags the event), mean |change| per
    second over 10 s (artefacts); the ratio of the Hilbert envelope of the flow and of the effort sum (sharp at
    event edges), the flow's at the lags `ENVELOPE_LAGS_S`; and the flow ratio, effort-sum ratio, correlation and
    SpO2 drop at every lag of `RESP_LAGS_S`.
    """
    nan = np.full(n_seconds, np.nan)
    present = {name: x for name, x in signals.items() if x is not None and np.size(x) >= n_seconds * fs}
    columns: dict[str, np.ndarray] = {}

    def sums(name: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(present[name], dtype=np.float64)[: n_seconds * fs]
        return _second_sums(x, fs, n_seconds), _second_sums(x * x, fs, n_seconds)

    def ratio(amplitude: np.ndarray) -> np.ndarray:
        return np.log((amplitude + _EPS) / (_past_percentile(amplitude, AMPLITUDE_BASELINE_PERCENTILE) + _EPS))

    if "airflow" in present:
        s1, s2 = sums("airflow")
        amp8, amp4 = _amplitude(s1, s2, fs, 8), _amplitude(s1, s2, fs, 4)
        ratio4 = ratio(amp4)
        columns.update(
            flow_log_amp=np.log(amp8 + _EPS),
            flow_ratio=ratio(amp8),
            flow_ratio4=ratio4,
            flow_min_past10=_window_reduce(ratio4, -10, 11, np.min),
            flow_min_next10=_window_reduce(ratio4, 0, 11, np.min),
            flow_max_next20=_window_reduce(ratio4, 0, 21, np.max),
        )
    else:
        columns.update(
            dict.fromkeys(
                ("flow_log_amp", "flow_ratio", "flow_ratio4", "flow_min_past10", "flow_min_next10", "flow_max_next20"),
                nan,
            )
        )
    for name in ("thor", "abdo"):
        columns[f"{name}_ratio"] = ratio(_amplitude(*sums(name), fs, 8)) if name in present else nan
    if "thor" in present and "abdo" in present:
        thor = np.asarray(present["thor"], dtype=np.float64)[: n_seconds * fs]
        abdo = np.asarray(present["abdo"], dtype=np.float64)[: n_seconds * fs]
        effort = thor + abdo
        columns["effort_sum_ratio"] = ratio(
            _amplitude(_second_sums(effort, fs, n_seconds), _second_sums(effort * effort, fs, n_seconds), fs, 8)
        )
        mean = {k: _window_mean(_second_sums(v, fs, n_seconds), -4, 8) / fs for k, v in (("t", thor), ("a", abdo))}
        moment = {
            k: _window_mean(_second_sums(v, fs, n_seconds), -4, 8) / fs
            for k, v in (("tt", thor * thor), ("aa", abdo * abdo), ("ta", thor * abdo))
        }
        cov = moment["ta"] - mean["t"] * mean["a"]
        var = np.maximum(moment["tt"] - mean["t"] ** 2, 0) * np.maximum(moment["aa"] - mean["a"] ** 2, 0)
        columns["thor_abdo_corr"] = cov / np.sqrt(var + _EPS)
    else:
        columns["effort_sum_ratio"], columns["thor_abdo_corr"] = nan, nan
    if "spo2" in present:
        if spo2_scale is not None and all(np.isfinite(spo2_scale)):
            # robust scaling undone: %; artefact seconds (a probe off) interpolated, as the ODI's baseline does,
            # so that a dropout to 0 % does not read as a 95 % desaturation
            spo2 = np.asarray(present["spo2"], dtype=np.float64) * spo2_scale[1] + spo2_scale[0]
            level = fill_artefacts(spo2_seconds(spo2, fs, n_seconds))
        else:
            level = _second_sums(np.asarray(present["spo2"], dtype=np.float64), fs, n_seconds) / fs
        baseline = _past_percentile(level, SPO2_BASELINE_PERCENTILE)
        columns.update(spo2_level=level, spo2_drop=baseline - level)
        for lo, hi in SPO2_NADIR_WINDOWS_S:
            columns[f"spo2_nadir_drop_{lo}_{hi}"] = baseline - _window_reduce(level, lo, hi - lo, np.min)
        columns["spo2_roughness"] = _window_mean(np.abs(np.diff(level, prepend=level[:1])), -5, 10)
    else:  # the same columns in the same order
        columns.update(spo2_level=nan, spo2_drop=nan)
        columns.update({f"spo2_nadir_drop_{lo}_{hi}": nan for lo, hi in SPO2_NADIR_WINDOWS_S})
        columns["spo2_roughness"] = nan
    effort_sum = present["thor"] + present["abdo"] if "thor" in present and "abdo" in present else None
    for name, x in (("flow_env_ratio", present.get("airflow")), ("effort_env_ratio", effort_sum)):
        columns[name] = ratio(_envelope(x, fs, n_seconds)) if x is not None else nan
    for lag in ENVELOPE_LAGS_S:
        columns[f"flow_env_ratio_lag{lag:+d}"] = _shift(columns["flow_env_ratio"], lag)
    for name in ("flow_ratio", "effort_sum_ratio", "thor_abdo_corr", "spo2_drop"):
        for lag in RESP_LAGS_S:
            columns[f"{name}_lag{lag:+d}"] = _shift(columns[name], lag)
    names = list(columns)
    return np.stack([columns[n] for n in names], axis=1).astype(np.float32), names
