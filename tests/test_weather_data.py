"""The weather-like field (shapes, mask rate, seeding, its space-time correlation) and Healing MNIST's missingness."""

from __future__ import annotations

import math

import pytest
import torch

from aezoo import data
from aezoo.data.weather import weather_field


def test_weather_field_shapes_mask_rate_and_seeding():
    a = weather_field(40, T=30, side=5, p_missing=0.5, seed=3)
    assert a.x.shape == a.mask.shape == a.truth.shape == (40, 30, 25) and a.mask.dtype == torch.bool
    assert (a.x[~a.mask] == 0).all() and torch.isfinite(a.truth).all()
    # missing completely at random: the missing fraction is within 4.5 binomial sds of p (failure rate < 1e-5)
    n = a.mask.numel()
    assert abs((~a.mask).float().mean().item() - 0.5) < 4.5 * math.sqrt(0.25 / n)
    b, c = weather_field(40, T=30, side=5, p_missing=0.5, seed=3), weather_field(40, T=30, side=5, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask) and not torch.equal(a.truth, c.truth)
    # observed entries are the truth plus N(0, 0.1^2) noise
    resid = (a.x - a.truth)[a.mask]
    assert abs(resid.std().item() - 0.1) < 4.5 * 0.1 / math.sqrt(2 * len(resid))


def test_weather_field_is_smooth_in_time_and_space():
    f = weather_field(200, T=30, side=5, wave_amplitude=0.0, noise=0.0, p_missing=0.0, seed=0).truth
    # Matern-3/2 with lengthscale 5 days: corr at lag 1 = (1 + r) exp(-r), r = sqrt(3) / 5 = 0.95; RBF in space
    # (lengthscale 0.4, neighbours 0.25 apart): exp(-0.5 (0.25 / 0.4)^2) = 0.82. With 200 x 29 x 25 pairs the
    # sample correlations' sd is ~0.01 (dependent pairs), so 0.05 is > 5 sd.
    r = math.sqrt(3) / 5
    lag1 = torch.corrcoef(torch.stack([f[:, 1:].reshape(-1), f[:, :-1].reshape(-1)]))[0, 1]
    assert abs(lag1 - (1 + r) * math.exp(-r)) < 0.05
    grid = f.reshape(200, 30, 5, 5)
    nb = torch.corrcoef(torch.stack([grid[..., 1:].reshape(-1), grid[..., :-1].reshape(-1)]))[0, 1]
    assert abs(nb - math.exp(-0.5 * (0.25 / 0.4) ** 2)) < 0.05
    assert abs(f.var().item() - 1.0) < 0.15


def test_weather_field_registry_and_errors():
    ds = data.load("weather_field", train_size=8, test_size=4)
    assert ds.train.shape == (8, 30, 25) and ds.test_truth.shape == (4, 30, 25)
    assert ds.train_covariates["mask"].shape == (8, 30, 25)
    with pytest.raises(ValueError, match="p_missing"):
        weather_field(2, p_missing=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        weather_field(0)


def test_healing_mnist_missingness_is_fortuins_rate_at_random():
    # Fortuin et al.'s HMNIST as the brief states it: 60% of the pixels missing at random, T = 10 frames of a digit
    # rotating per sequence. The missing fraction lies within 4.5 binomial sds of 0.6 (failure rate < 1e-5), and
    # missingness does not depend on the pixel's brightness (MCAR), within the same tolerance per group.
    try:
        s = data.healing_mnist("test", n=20, cache=False)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert s.x.shape == s.mask.shape == (20, 10, 784)
    for group in (s.truth > 0.5, s.truth <= 0.5):
        m = (~s.mask)[group].float()
        assert abs(m.mean().item() - 0.6) < 4.5 * math.sqrt(0.24 / len(m))
    # each sequence rotates: consecutive truth frames differ
    assert ((s.truth[:, 1:] - s.truth[:, :-1]).abs().sum((-1)) > 0).float().mean() > 0.9
