"""The bidirectional temporal context end to end: padded windows of short recordings through the stored-vector
tiling, the training loss's mask, old checkpoints without a direction, and the comparison table's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from downstream.cache import RecordingVectors, VectorStore, predict_tiles
from downstream.results import context_direction
from downstream.training import ClassificationLoss
from models.heads import MLPHead
from models.mamba import ResidualMamba
from utils.config import config_differences


class ContextModel(torch.nn.Module):
    """A bidirectional context and head over 16-d vectors, as fine-tuning's phase 1 trains them."""

    def __init__(self):
        super().__init__()
        self.context = ResidualMamba(16, d_state=4, headdim=8, direction="bidirectional")
        self.head = MLPHead(16, 5, hidden=(8,))

    def forward(self, vectors, valid=None):
        return self.head(self.context(vectors, valid))


def test_short_recordings_are_predicted_as_if_unpadded():
    torch.manual_seed(3)
    model = ContextModel().eval()
    rng = np.random.default_rng(0)
    store = VectorStore(
        {
            "short": RecordingVectors(np.arange(5, dtype=np.int64), rng.standard_normal((5, 16)).astype(np.float32)),
            "long": RecordingVectors(np.arange(11, dtype=np.int64), rng.standard_normal((11, 16)).astype(np.float32)),
        }
    )
    seen = []

    def classify(vectors, valid):
        seen.append(valid.clone())
        return model(vectors, valid).softmax(dim=-1)

    predictions = predict_tiles(store, ["short", "long"], 8, classify, {}, 5)
    valid = torch.cat(seen)  # (windows, 8): the short night's one window is padded after 5 epochs
    assert valid.sum(dim=1).tolist() == [5, 8, 8]
    short = predictions.probabilities[predictions.recording == "short"]  # (5, C)
    with torch.no_grad():
        alone = model(torch.from_numpy(store.vectors_at("short", np.arange(5)))[None]).softmax(dim=-1)[0]
        unmasked = model(store.windows(["short"], torch.tensor([[0, 1, 2, 3, 4, -1, -1, -1]]))).softmax(dim=-1)
    np.testing.assert_allclose(short, alone.numpy(), atol=2e-6)
    assert np.abs(unmasked[0, :5].numpy() - alone.numpy()).max() > 1e-5  # the mask is what keeps it so


def test_the_training_loss_passes_the_mask_only_when_asked():
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, vectors, **kwargs):
            calls.append(kwargs)
            return torch.zeros(*vectors.shape[:2], 5, requires_grad=True)

    batch = {
        "vectors": torch.zeros(2, 4, 16),
        "label": torch.tensor([[0, 1, -1, -1], [2, 3, 4, -1]]),
        "valid": torch.tensor([[True, True, False, False], [True, True, True, False]]),
    }
    ClassificationLoss(None, input_key="vectors", valid_key="valid")(Recorder(), batch, torch.device("cpu"))
    ClassificationLoss(None, input_key="vectors")(Recorder(), batch, torch.device("cpu"))
    assert torch.equal(calls[0]["valid"], batch["valid"]) and calls[1] == {}


def test_runs_without_a_direction_are_forward_and_named_so():
    old = ResidualMamba(16, d_state=4, headdim=8, **{})  # a checkpoint's context config with no direction
    assert old.direction == "forward" and old.mamba_backward is None
    base = {"test": {"n_subjects": 1, "n_epochs": 3}, "task": "sleep_stage", "label_fraction": 1.0}
    assert context_direction({**base, "method": "fine_tune"}) == "forward"  # written before the option existed
    assert context_direction({**base, "method": "fine_tune", "context_direction": "bidirectional"}) == "bidirectional"
    assert context_direction({**base, "method": "linear_probe"}) is None
    assert context_direction({**base, "method": "scratch_finetune"}) == "forward"


def test_resume_errors_name_the_model_options_that_differ():
    saved = {"head": {"in_dim": 16}, "context": {"norm": "layer", "d_state": 16}}
    current = {"head": {"in_dim": 16}, "context": {"norm": "layer", "d_state": 16, "direction": "bidirectional"}}
    assert config_differences(saved, current) == "model differs: context.direction: (none) -> bidirectional"
    assert config_differences(saved, saved) == "" and config_differences(None, current) == ""
    many = config_differences({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 0, "b": 0, "c": 0, "d": 0}, limit=2)
    assert many == "model differs: a: 1 -> 0; b: 2 -> 0; 2 more"


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_both_directions_train(direction):
    torch.manual_seed(1)
    block = ResidualMamba(16, d_state=4, headdim=8, direction=direction)
    x = torch.randn(3, 6, 16)
    valid = torch.arange(6).expand(3, 6) < torch.tensor([[6], [4], [1]])
    block(x, valid).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())
