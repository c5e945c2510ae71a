"""GPPVAE: the sparse-GP prior over z against its exact marginal, covariate correlation, training on rotated MNIST."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from aezoo import data
from aezoo.data.rotated import rotate
from aezoo.models import gppvae


def prior_draws(ae, c: torch.Tensor, num_draws: int) -> torch.Tensor:
    """``(S, B, D_z)`` draws of z from the model's prior at covariates ``c`` ``(B,)`` (u then z | u)."""
    x = torch.zeros(len(c), ae.config.x_dim)
    with torch.no_grad(), pyro.plate("draws", num_draws, dim=-2):
        tr = poutine.trace(ae.model).get_trace(x, c)
    return tr.nodes["z"]["value"]


def pooled_covariance(z: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` covariance across data, pooling the ``D_z`` i.i.d. channels: ``(S, B, D_z)`` -> ``S D_z`` draws."""
    flat = z.permute(0, 2, 1).reshape(-1, z.shape[1])
    return flat.T @ flat / len(flat)  # the prior mean is 0


@pytest.mark.parametrize("kernel", ["rbf", "periodic"])
def test_prior_of_z_with_inducing_points_at_the_data_is_the_full_gp(kernel):
    # With the inducing points at the data's covariates, Q_nn = K_nn (up to the 1e-4 jitter), so
    # integrating u out gives z[:, l] ~ N(0, K_nn + noise I).
    cfg = gppvae.Config(x_dim=3, z_dim=4, hidden_dims=(4,), kernel=kernel, num_inducing=6, lengthscale=1.5,
                        covariate_range=(0.0, 4.0), noise=0.05)
    ae = gppvae.build(cfg)
    c = ae.model.prior.inducing.squeeze(-1)  # (6,): the data sit on the inducing points
    S = 20000
    cov = pooled_covariance(prior_draws(ae, c, S))
    K = ae.model.prior.kernel(c.unsqueeze(-1)) + cfg.noise * torch.eye(len(c))
    # Each entry is a mean of S D_z = 80,000 products of Gaussians: standard error
    # sqrt((K_ij^2 + K_ii K_jj) / (S D_z)) <= sqrt(2) 1.05 / sqrt(80,000) = 0.0053; allow 5 of them.
    se = ((K**2 + K.diagonal()[:, None] * K.diagonal()[None, :]) / (S * cfg.z_dim)).sqrt()
    assert ((cov - K).abs() / se).max() < 5.0
    assert (cov - K).abs().max() < 0.03


def test_prior_of_z_with_few_inducing_points_is_fitc():
    # With inducing points away from the data the marginal is Q_nn + diag(K_nn - Q_nn) + noise I,
    # Q_nn = K_nu (K_uu + jitter I)^-1 K_un: exact variances, shrunk covariances.
    cfg = gppvae.Config(x_dim=3, z_dim=4, hidden_dims=(4,), kernel="rbf", num_inducing=3, lengthscale=1.0,
                        covariate_range=(0.0, 4.0), noise=0.05)
    ae = gppvae.build(cfg)
    c = torch.tensor([0.5, 1.0, 1.5, 3.0])
    S = 20000
    cov = pooled_covariance(prior_draws(ae, c, S))
    k, u = ae.model.prior.kernel, ae.model.prior.inducing
    K = k(c.unsqueeze(-1))
    K_nu = k(c.unsqueeze(-1), u)
    Q = K_nu @ torch.linalg.solve(k(u) + cfg.jitter * torch.eye(len(u)), K_nu.T)
    fitc = Q + torch.diag(K.diagonal() - Q.diagonal()) + cfg.noise * torch.eye(len(c))
    se = ((fitc**2 + fitc.diagonal()[:, None] * fitc.diagonal()[None, :]) / (S * cfg.z_dim)).sqrt()
    assert ((cov - fitc).abs() / se).max() < 5.0
    assert (fitc - K - cfg.noise * torch.eye(len(c))).abs().max() > 0.1  # a different answer than the full GP


def test_close_covariates_are_more_correlated_than_far_ones():
    cfg = gppvae.Config(x_dim=3, z_dim=4, hidden_dims=(4,))  # periodic on [0, 2 pi), 16 inducing points
    ae = gppvae.build(cfg)
    c = torch.tensor([0.0, 0.2, math.pi, 2 * math.pi - 0.2])
    cov = pooled_covariance(prior_draws(ae, c, 5000))
    corr = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
    # exact values: k(0.2) / (1 + noise) = 0.89, k(pi) / (1 + noise) = exp(-2) / 1.1 = 0.12;
    # the MC standard error of each is below 0.01 (20,000 pooled draws)
    assert corr[0, 1] > 0.8 and corr[0, 3] > 0.8  # near, and near across the wrap-around at 2 pi
    assert corr[0, 2] < 0.25
    assert corr[0, 1] > corr[0, 2] + 0.5


def test_svi_on_rotated_mnist_lowers_the_loss(engine):
    try:
        ds = data.load("rotated_mnist", "static", train_size=256, test_size=16)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    angles = ds.train_covariates["c"]
    assert angles.shape == (256,) and ((angles >= 0) & (angles < 2 * math.pi)).all()
    cfg = gppvae.Config(z_dim=4, hidden_dims=(64,), num_inducing=8)
    ae = gppvae.build(cfg)
    result = engine("svi", epochs=6, batch_size=64, lr=1e-2).fit(ae, ds.train, angles)
    losses = result.losses
    assert torch.isfinite(losses).all()
    assert losses[-1] < losses[0] - 50  # nats per image; starts near 545 (784 Bernoulli pixels at p = 1/2)


def test_particles_and_missing_covariates():
    cfg = gppvae.Config(x_dim=3, z_dim=2, hidden_dims=(4,), num_inducing=4)
    ae = gppvae.build(cfg)
    x, c = gppvae.example_data(cfg, 5)
    with pyro.plate("particles", 7, dim=-2):
        tr = poutine.trace(ae.model).get_trace(x, c)
    assert tr.nodes["u"]["value"].shape == (7, 1, 4, 2) and tr.nodes["z"]["value"].shape == (7, 5, 2)
    tr.compute_log_prob()
    assert tr.nodes["z"]["log_prob"].shape == (7, 5)
    for call in (lambda: poutine.trace(ae.model).get_trace(x), lambda: ae.validate(x)):  # a required covariate
        with pytest.raises(ValueError, match="covariate 'c'"):
            call()
    with pytest.raises(ValueError, match="covariates of shape"):
        ae.validate(x, c[:3])


def test_rotate_by_zero_and_half_turn():
    img = torch.rand(2, 28 * 28)
    torch.testing.assert_close(rotate(img, torch.zeros(2)), img, atol=1e-5, rtol=0)
    half = rotate(img, torch.full((2,), math.pi)).reshape(2, 28, 28)
    torch.testing.assert_close(half, img.reshape(2, 28, 28).flip(-1, -2), atol=1e-4, rtol=0)
