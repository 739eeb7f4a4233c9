"""The noise control's matched noise: each tensor moves by the trained model's relative distance."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from w2sg_noise_control import add_matched_noise, relative_distances  # noqa: E402


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4))


def test_matched_noise_moves_every_tensor_as_far_as_the_trained_model():
    base, trained = _model(0), _model(0)
    with torch.no_grad():
        trained[0].weight.add_(0.01 * torch.randn_like(trained[0].weight))
        trained[1].bias.mul_(1.5)
    distances, overall = relative_distances(base, trained)
    assert distances["0.bias"] == 0.0 and distances["1.weight"] == 0.0
    assert distances["1.bias"] == pytest.approx(0.5, rel=1e-5) and 0 < overall < 0.5
    noisy = _model(0)
    add_matched_noise(noisy, distances, torch.Generator().manual_seed(0))
    again, overall_again = relative_distances(base, noisy)
    assert again == pytest.approx(distances, rel=1e-4, abs=1e-7)
    assert overall_again == pytest.approx(overall, rel=1e-4)
    assert not torch.equal(noisy[0].weight, trained[0].weight)  # the same size, another direction
