"""Objective components: the beta-weighted ELBO."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aezoo.inference import ENGINES
from aezoo.inference.objectives import LatentScale


@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_beta_scales_exactly_the_kl_term(tiny, beta):
    ae, (x,) = tiny("vae", n=16)
    losses = {}
    for b in (1.0, beta):
        pyro.set_rng_seed(3)  # the same z draws for both, so the reconstruction terms cancel
        losses[b] = ENGINES["svi"](beta=b).loss(ae, x, num_data=len(x)).item()
    loc, scale = ae.guide.encode(x)
    kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).mean().item()
    assert losses[beta] - losses[1.0] == pytest.approx((beta - 1) * kl, rel=1e-4, abs=1e-4)


def test_large_beta_collapses_the_latents(tiny):
    """With beta = 50 the KL dominates: q(z | x) is pushed onto the prior (posterior collapse)."""
    from aezoo.diagnostics import collapse_report

    ae, (x,) = tiny("vae", n=200)
    ENGINES["svi"](beta=50.0, epochs=30, batch_size=50, lr=1e-2, progress=False).fit(ae, x)
    report = collapse_report(ae, x)
    assert report.active_units["z"] == 0 and len(report.collapsed) == ae.config.z_dim


def test_latent_scale_rejects_non_positive_beta():
    with pytest.raises(ValueError, match="positive"):
        LatentScale(0.0)
    assert torch.isfinite(torch.tensor(LatentScale(2.0).beta))
