"""GON's gradient origin and the unscented autoencoder's sigma points and Fréchet penalty, against exact answers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aezoo.guides.unscented import sigma_points, unscented_moments
from aezoo.inference.terms.frechet import Frechet, w2_squared
from aezoo.models import gon, unscented_ae
from tests.conftest import SMALL_CONFIGS


def small_gon(**overrides) -> gon.Config:
    return dataclasses.replace(gon.Config(), **{**SMALL_CONFIGS["gon"], **overrides})


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_gon_gradient_matches_finite_differences(likelihood):
    ae = gon.build(small_gon(likelihood=likelihood)).double()
    x = gon.example_data(ae.config, 3, seed=1)[0].double()
    grad = gon.origin_gradient(ae.model, x)
    eps = 1e-6
    eye = torch.eye(ae.config.z_dim, dtype=torch.float64)
    with torch.no_grad():
        fd = torch.stack([(ae.model.x_dist(eps * e.expand(3, -1)).log_prob(x)
                           - ae.model.x_dist(-eps * e.expand(3, -1)).log_prob(x)) / (2 * eps) for e in eye], -1)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)  # central differences: O(eps^2) error


def test_vgon_guide_is_differentiable_in_the_decoder():
    ae = gon.build(small_gon()).double()
    x = gon.example_data(ae.config, 4, seed=2)[0].double()
    loc, scale = ae.guide.encode(x)
    decoder = list(ae.model.decoder.parameters())
    grads = torch.autograd.grad((loc.sum() + scale.sum()), decoder, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # the last layer's bias reaches g too
    names = [n for n, _ in ae.named_parameters()]
    assert len(names) == len(set(names)) and not any(n.startswith("guide.model") for n in names)
    counts = gon.parameter_counts(small_gon())
    assert counts["gon"] < counts["vae"] and counts["gon"] == sum(p.numel() for p in ae.parameters())


def test_plain_gon_codes_are_the_gradient():
    ae = gon.build(small_gon(variational=False)).double()
    x = gon.example_data(ae.config, 4, seed=3)[0].double()
    torch.testing.assert_close(ae.guide(x), gon.origin_gradient(ae.model, x))


@pytest.mark.parametrize("kappa", [0.0, 1.0, 2.5])
def test_sigma_points_are_exact_for_a_linear_decoder(kappa):
    torch.manual_seed(0)
    b, d, e = 3, 4, 5
    loc, scale = torch.randn(b, d, dtype=torch.float64), torch.rand(b, d, dtype=torch.float64) + 0.1
    a, bias = torch.randn(e, d, dtype=torch.float64), torch.randn(e, dtype=torch.float64)
    points, weights = sigma_points(loc, scale, kappa)
    assert points.shape == (2 * d + 1, b, d)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    mean, cov = unscented_moments(points @ a.T + bias, weights)
    torch.testing.assert_close(mean, loc @ a.T + bias)
    torch.testing.assert_close(cov, a @ torch.diag_embed(scale**2) @ a.T)


def test_frechet_is_the_closed_form_w2_between_diagonal_gaussians():
    loc, scale = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]])
    # W2^2 = |m1 - m2|^2 + sum (s1 - s2)^2 for commuting (diagonal) covariances: 1 + 4 + 0.25 + 4
    assert w2_squared(loc, scale).item() == pytest.approx(9.25)
    assert w2_squared(loc, scale, torch.tensor([1.0, 0.0]), 2.0).item() == pytest.approx(4 + 2.25 + 1)


def test_frechet_term_reads_the_guide_and_refuses_point_masses():
    cfg = dataclasses.replace(unscented_ae.Config(), **SMALL_CONFIGS["unscented_ae"])
    ae = unscented_ae.build(cfg)
    (x,) = unscented_ae.example_data(cfg, 5)
    loc, scale = ae.guide.encode(x)
    torch.testing.assert_close(Frechet()(ae, (x,), 5, None, None), w2_squared(loc, scale).mean())
    exact = unscented_ae.unscented_log_likelihood(ae, x)
    assert exact.shape == (5,) and torch.isfinite(exact).all()
    with pytest.raises(ValueError, match="does not apply"):
        Frechet().check(gon.build(small_gon(variational=False)), x)
