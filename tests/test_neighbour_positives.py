"""Temporal-neighbour positives for NeuroNet's contrastive loss (dataset/neighbours.py, docs/models.md §3.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.datasets import EpochDataset
from dataset.neighbours import NeighbourPairs
from models.neuronet import build_neuronet, neuronet_config


@pytest.fixture(scope="module")
def pooled(cohort_factory) -> EpochDataset:
    dst = cohort_factory(nights=6, hours=0.8, seed=0) / "dst"
    return EpochDataset(dst, "pretrain", ["eeg_c3", "eeg_c4"], pool_channels=True)


def test_positive_is_the_same_channel_one_epoch_away(pooled):
    pairs = NeighbourPairs(pooled)
    assert len(pairs) == len(pooled) and pairs.channels == pooled.channels
    torch.manual_seed(0)
    sides = set()
    for index in range(0, len(pooled), 7):
        item = pairs[index]
        candidates = {step: pooled.pooled_signal(index, step) for step in (-1, 1)}
        match = [
            step
            for step, signal in candidates.items()
            if signal is not None and np.array_equal(item["positive"].numpy(), signal)
        ]
        assert match, f"item {index}: the positive is not the same channel at epoch +-1"
        sides.add(match[0])
        assert torch.equal(item["signal"], pooled[index]["signal"])  # the anchor is unchanged
    assert sides == {-1, 1}  # both sides are drawn
    assert pooled.pooled_signal(0, -len(pooled)) is None  # outside its recording


def test_neighbour_pairs_need_pooled_channels(cohort_factory):
    dst = cohort_factory(nights=6, hours=0.8, seed=0) / "dst"
    with pytest.raises(ValueError, match="pool_channels"):
        NeighbourPairs(EpochDataset(dst, "pretrain", ["eeg_c3"], pool_channels=False))


def test_forward_with_identical_positives_is_the_published_loss():
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config("fast")).eval()
    epochs = torch.randn(4, 3000)
    same = model(epochs, generator=torch.Generator().manual_seed(5))
    paired = model(epochs, generator=torch.Generator().manual_seed(5), positives=epochs.clone())
    for key in ("loss", "recon_1", "recon_2", "contrastive"):
        assert torch.allclose(same[key], paired[key], atol=1e-5), key
    other = model(epochs, generator=torch.Generator().manual_seed(5), positives=torch.randn(4, 3000))
    assert not torch.allclose(same["contrastive"], other["contrastive"])


def test_unknown_positive_pair_is_refused():
    with pytest.raises(ValueError, match="positive_pair"):
        neuronet_config("tiny", positive_pair="next-night")


def test_shifted_positive_is_the_window_moved_across_the_epoch_boundary(pooled):
    pairs = NeighbourPairs(pooled, max_shift=1000)
    torch.manual_seed(1)
    seen_signs = set()
    recordings, epochs = pooled.sample_index()
    own = recordings == recordings[0]
    ends = [int(np.flatnonzero(own & (epochs == epochs[own].min()))[0])] * 3  # first epoch: only a later window
    ends += [int(np.flatnonzero(own & (epochs == epochs[own].max()))[0])] * 3  # last epoch: only an earlier one
    for index in [*ends, *range(0, len(pooled), 5)]:
        item = pairs[index]
        signal, positive = item["signal"].numpy(), item["positive"].numpy()
        assert positive.shape == signal.shape and positive.dtype == np.float32
        before, after = pooled.pooled_signal(index, -1), pooled.pooled_signal(index, 1)
        span = np.concatenate([x for x in (before, signal, after) if x is not None])
        offset = 0 if before is None else signal.size
        # the positive is a window of the three-epoch span, at most 1000 samples from the epoch, never itself
        starts = [s for s in range(offset - 1000, offset + 1001) if 0 <= s <= span.size - signal.size]
        found = [s - offset for s in starts if np.array_equal(span[s : s + signal.size], positive)]
        assert found and 0 < abs(found[0]) <= 1000, f"item {index}: not a shifted window"
        seen_signs.add(np.sign(found[0]))
        assert torch.equal(item["signal"], pooled[index]["signal"])
    assert seen_signs == {-1, 1}


def test_shift_is_checked(cohort_factory):
    for seconds in (30.0, 0.001):  # one epoch or more; less than one sample
        with pytest.raises(ValueError, match="positive_shift_s"):
            neuronet_config("fast", positive_pair="shift", positive_shift_s=seconds)
    paired = build_neuronet(neuronet_config("fast", positive_pair="shift")).train()
    with pytest.raises(ValueError, match="needs `positives`"):  # never silently the published views
        paired(torch.randn(4, 3000))
    paired.eval()(torch.randn(4, 3000))  # evaluation losses need no pair
    dst = cohort_factory(nights=6, hours=0.8, seed=0) / "dst"
    with pytest.raises(ValueError, match="max_shift"):
        NeighbourPairs(EpochDataset(dst, "pretrain", ["eeg_c3"], pool_channels=True), max_shift=0)
