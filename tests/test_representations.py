"""Mean against sampled representations (Bonheme & Grzes): closed form for Gaussian guides, passive units."""

from __future__ import annotations

import pyro
import pytest
import torch

from aezoo import data
from aezoo.diagnostics import active_units, representation_gap
from aezoo.diagnostics.representations import correlation
from aezoo.inference import ENGINES
from aezoo.models import MODELS


@pytest.fixture(scope="module")
def trained():
    with pyro.settings.context(module_local_params=True):
        ds = data.load("digits", "static")
        torch.manual_seed(0)
        ae = MODELS["vae"].build(MODELS["vae"].Config(x_dim=64, z_dim=10, hidden_dims=(64,)))
        ENGINES["svi"](epochs=30, batch_size=50, lr=3e-3, progress=False).fit(ae, ds.train)
    return ae, ds.test


def test_self_correlation_is_the_signal_share_of_a_gaussian_guide(trained):
    # z_u = mu_u(x) + sigma_u(x) eps: corr(mu_u, z_u) = sqrt(Var mu_u / (Var mu_u + E sigma_u^2)) exactly in
    # expectation; the estimate over N data has standard error about (1 - r^2) / sqrt(N): 4 of them (~6e-5)
    ae, x = trained
    pyro.set_rng_seed(1)
    gap = representation_gap(ae, x)
    with torch.no_grad():
        loc, scale = ae.guide.encode(x)
    signal = loc.var(0, unbiased=False)
    expected = (signal / (signal + scale.pow(2).mean(0))).sqrt()
    got = gap.self_correlation["z"]
    tol = 4 * (1 - expected.pow(2)) / (len(x) - 1) ** 0.5 + 0.01
    assert ((got - expected).abs() < tol).all(), (got, expected)


def test_weakly_active_units_show_the_largest_correlation_discrepancy(trained):
    ae, x = trained
    gap = representation_gap(ae, x)
    order = active_units(ae, x)["z"].variance.argsort()
    quiet, loud = order[:3], order[-3:]
    d = gap.discrepancy["z"]
    assert d[quiet].mean() > 1.5 * d[loud].mean()  # measured: 0.17 against 0.065
    assert gap.self_correlation["z"][quiet].max() < gap.self_correlation["z"][loud].min()


def test_correlation_matches_numpy_and_handles_constant_columns():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g, dtype=torch.float64)
    expected = np.corrcoef(a.T.numpy(), b.T.numpy())[:3, 3:]
    np.testing.assert_allclose(correlation(a, b).numpy(), expected, rtol=1e-6, atol=1e-9)
    assert correlation(torch.ones(5, 1, dtype=torch.float64), b[:5]).abs().max() == 0
    with pytest.raises(ValueError, match="two data points"):
        representation_gap(trained_stub(), torch.zeros(1, 64))


def trained_stub():
    return MODELS["vae"].build(MODELS["vae"].Config(x_dim=64, z_dim=2, hidden_dims=(4,)))
