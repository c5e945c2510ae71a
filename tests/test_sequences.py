"""Sequence models: state-space priors against dense Gaussians, the Kalman guide, masking, data.

All exactness checks run in float64 with tolerance 1e-8 (relative and absolute): the compared
quantities are the same Gaussian computed two ways (Kalman message passing vs dense linear
algebra), so only rounding separates them.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.contrib.gp import kernels
from torch import nn

from aezoo import data
from aezoo.guides.structured import KalmanGuide
from aezoo.models import MODELS, gp_vae, markov_gp_vae, svae
from aezoo.sequence import dense_gp_prior, impute, kernel, matern_prior, matern_ssm

TOL = {"rtol": 1e-8, "atol": 1e-8}
# Pyro's isotropic kernels use r = sqrt(r^2 + 1e-12), so k(0) is off by ~1e-6 relative (Exponential,
# Matern): comparisons with them get 1e-5; kernel matrices with jitter 1e-3 amplify that in log densities.
KERNEL_TOL = {"rtol": 1e-5, "atol": 1e-5}
SEQUENCE_MODELS = ("svae", "gp_vae", "markov_gp_vae")


def dense_lds_cov(T: int, A, Q, C, R, P0) -> torch.Tensor:
    """Covariance ``(T D_z, T D_z)`` of ``z`` (time-major) for ``h_0 ~ N(0, P0)``, ``h_t = A h_{t-1} + w``,
    ``z_t = C h_t + v`` (t = 1..T), by brute force: ``Cov(h_t, h_s) = A^(t-s) Var(h_s)`` for t >= s."""
    var, V = P0, []
    for _ in range(T):
        var = A @ var @ A.T + Q
        V.append(var)
    D = C.shape[0]
    cov = torch.zeros(T * D, T * D, dtype=A.dtype)
    for t in range(T):
        for s in range(t + 1):
            block = C @ torch.linalg.matrix_power(A, t - s) @ V[s] @ C.T + (R if s == t else 0)
            cov[t * D:(t + 1) * D, s * D:(s + 1) * D] = block
            cov[s * D:(s + 1) * D, t * D:(t + 1) * D] = block.T
    return cov


def random_svae(T_unused: int = 0, z_dim: int = 2, state_dim: int = 3, seed: int = 0) -> svae.Model:
    torch.manual_seed(seed)
    model = svae.Model(svae.Config(x_dim=4, z_dim=z_dim, state_dim=state_dim)).double()
    with torch.no_grad():
        model.A.copy_(0.5 * torch.randn(state_dim, state_dim, dtype=torch.float64))
        model.C.normal_()
        model.q_raw.normal_()
        model.r_raw.normal_()
    return model


def lds_matrices(model: svae.Model):
    q2 = (torch.nn.functional.softplus(model.q_raw) + 1e-3) ** 2
    r2 = (torch.nn.functional.softplus(model.r_raw) + 1e-3) ** 2
    S = model.cfg.state_dim
    return model.A, torch.diag(q2), model.C, torch.diag(r2), torch.eye(S, dtype=torch.float64)


# -- priors ------------------------------------------------------------------------------------------


@torch.no_grad()
def test_lds_prior_log_density_equals_the_dense_normal():
    T, model = 6, random_svae()
    x = torch.zeros(3, T, 4, dtype=torch.float64)
    prior = model.z_prior(x)
    dense = dist.MultivariateNormal(torch.zeros(T * 2, dtype=torch.float64), dense_lds_cov(T, *lds_matrices(model)))
    z = torch.randn(5, T, 2, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), dense.log_prob(z.reshape(5, -1)), **TOL)


@pytest.mark.parametrize("nu, cls", [(0.5, kernels.Exponential), (1.5, kernels.Matern32), (2.5, kernels.Matern52)])
def test_markov_gp_covariance_is_the_matern_kernel(nu, cls):
    T, ell, var, jitter = 7, 2.5, 1.7, 1e-3
    A, Q, P = matern_ssm(nu, ell, var, dtype=torch.float64)
    C = torch.eye(1, A.shape[0], dtype=torch.float64)
    cov = dense_lds_cov(T, A, Q, C, jitter * torch.eye(1, dtype=torch.float64), P)
    t = torch.arange(T, dtype=torch.float64)
    K = cls(1, torch.tensor(var, dtype=torch.float64), torch.tensor(ell, dtype=torch.float64))(t).detach()
    torch.testing.assert_close(cov, K + jitter * torch.eye(T, dtype=torch.float64), **KERNEL_TOL)
    # the GaussianHMM with D_z = 3 channels has the same density as the dense GP prior (time-major layout)
    like = torch.zeros((), dtype=torch.float64)
    markov = matern_prior(T, 3, nu, ell, var, jitter, like)
    name = {0.5: "matern12", 1.5: "matern32", 2.5: "matern52"}[nu]
    dense = dense_gp_prior(T, 3, kernel(name, ell, var), jitter, like)
    z = torch.randn(4, T, 3, dtype=torch.float64)
    torch.testing.assert_close(markov.log_prob(z), dense.log_prob(z), rtol=1e-4, atol=1e-4)


def test_cauchy_kernel_is_gp_vae_s():
    t = torch.arange(5.0)
    k = kernel("cauchy", 2.0, 1.5)(t).detach()
    torch.testing.assert_close(k, 1.5 / (1 + (t[:, None] - t) ** 2 / 4.0), rtol=1e-6, atol=1e-6)


# -- the structured guide is the exact Kalman smoother ------------------------------------------------


class LinearPotentials(nn.Module):
    """The exact likelihood potentials of ``x_t = C z_t + N(0, r^2 I)`` when ``C^T C`` is diagonal."""

    def __init__(self, C: torch.Tensor, r: float) -> None:
        super().__init__()
        self.C, self.r = C, r

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs[..., : self.C.shape[0]]
        ctc = (self.C**2).sum(0)  # (D_z,): C^T C is diagonal
        loc = x @ self.C / ctc
        precision = (ctc / self.r**2).expand(loc.shape)
        return torch.cat([loc, torch.log(torch.expm1(precision))], -1)  # softplus^-1


@torch.no_grad()
def test_kalman_guide_with_linear_gaussian_emissions_is_the_exact_posterior():
    T, D_z, D_x, r = 5, 2, 4, 0.7
    model = random_svae(z_dim=D_z)
    C = torch.linalg.qr(torch.randn(D_x, D_z, dtype=torch.float64))[0] * torch.tensor([1.5, 0.6], dtype=torch.float64)
    guide = KalmanGuide("z", LinearPotentials(C, r), model.z_prior)
    x = torch.randn(1, T, D_x, dtype=torch.float64)
    mask = torch.ones(1, T, D_x, dtype=torch.bool)
    mask[0, 2] = False  # a missing frame: no evidence there
    q = guide.posterior(x, mask)

    # q's mean and covariance from its (quadratic) log density: gradient and Hessian at 0
    def log_q(flat):
        return q.log_prob(flat.reshape(1, T, D_z)).sum()

    zero = torch.zeros(T * D_z, dtype=torch.float64)
    with torch.enable_grad():
        precision = -torch.autograd.functional.hessian(log_q, zero)
        grad = torch.autograd.functional.jacobian(log_q, zero)
    q_cov = torch.linalg.inv(precision)
    q_mean = q_cov @ grad

    # the exact posterior by dense Gaussian conditioning on the observed frames
    prior_cov = dense_lds_cov(T, *lds_matrices(model))
    G = torch.block_diag(*[C] * T)  # (T D_x, T D_z)
    keep = mask[0].reshape(-1)
    G, xs = G[keep], x[0].reshape(-1)[keep]
    S = G @ prior_cov @ G.T + r**2 * torch.eye(len(xs), dtype=torch.float64)
    gain = prior_cov @ G.T @ torch.linalg.inv(S)
    torch.testing.assert_close(q_mean, gain @ xs, **TOL)
    torch.testing.assert_close(q_cov, prior_cov - gain @ G @ prior_cov, **TOL)


# -- missing data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", SEQUENCE_MODELS)
def test_unobserved_entries_do_not_enter_the_loss(model_name, tiny, engine):
    ae, (x, mask) = tiny(model_name, n=6)
    mask = mask.clone()
    mask[1, 3] = False  # a whole missing frame too
    eng = engine("svi")

    def loss(values):
        torch.manual_seed(3)
        return eng.loss(ae, values, mask, num_data=len(values))

    changed = x.where(mask, torch.randn_like(x) * 10)
    assert not torch.equal(changed, x)
    assert torch.equal(loss(x), loss(changed))
    observed = x.clone()
    observed[mask] += 1.0
    assert not torch.equal(loss(x), loss(observed))


@pytest.mark.parametrize("model_name", SEQUENCE_MODELS)
def test_sequence_models_reject_a_bad_mask(model_name, tiny):
    ae, (x, mask) = tiny(model_name, n=4)
    with pytest.raises(ValueError, match="mask"):
        ae.validate(x, mask.float())
    with pytest.raises(ValueError, match=r"\(B, T, 6\)"):
        ae.validate(x[:, 0], mask[:, 0])


def test_the_structured_guide_samples_match_its_shapes(tiny):
    for name in SEQUENCE_MODELS:
        ae, (x, mask) = tiny(name, n=3)
        z = ae.guide(x, mask)
        assert z.shape == (3, 5, 2)
        assert MODELS[name].Config().seq_len > 0


# -- data ---------------------------------------------------------------------------------------------


def test_lds_video_is_seeded_and_masks_frames():
    a, b = data.lds_video(30, T=8, seed=1), data.lds_video(30, T=8, seed=1)
    assert a.x.shape == a.mask.shape == a.truth.shape == (30, 8, 16) and a.latents.shape == (30, 8, 2)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask)
    assert (a.x[~a.mask] == 0).all() and a.mask[:, 0].any(-1).all()
    assert (~a.mask.any(-1)).any(), "some whole frames are missing"
    # the known dynamics: h_t - A h_{t-1} is the process noise (std 0.1)
    A = a.params["A"]
    resid = a.latents[:, 1:] - a.latents[:, :-1] @ A.T
    assert abs(resid.std().item() - 0.1) < 0.01  # 420 draws: standard error of the std ~0.0035


def test_healing_mnist_is_cached_and_rotates(tmp_path, monkeypatch):
    pytest.importorskip("numpy")
    try:
        data.mnist_path()
    except FileNotFoundError:
        pytest.skip("MNIST file not installed")
    monkeypatch.setenv("AEZOO_CACHE", str(tmp_path))
    seqs = data.healing_mnist("test", n=12, T=4)
    assert seqs.x.shape == seqs.mask.shape == seqs.truth.shape == (12, 4, 784) and seqs.labels.shape == (12,)
    assert len(list(tmp_path.glob("healing_mnist_test_*.pt"))) == 1
    again = data.healing_mnist("test", n=12, T=4)
    assert torch.equal(seqs.x, again.x) and torch.equal(seqs.mask, again.mask)
    observed = seqs.mask.float().mean().item()
    assert abs(observed - 0.4) < 0.01  # 37,632 pixels: standard error 0.0025
    assert 0 <= seqs.x.min() and seqs.x.max() <= 1 and (seqs.x[~seqs.mask] == 0).all()
    # the digit rotates: consecutive frames differ, yet keep about the same ink
    ink = seqs.truth.sum(-1)
    assert not torch.allclose(seqs.truth[:, 0], seqs.truth[:, 1])
    assert ((ink[:, 1:] - ink[:, :1]).abs() / ink[:, :1]).max() < 0.25
    ds = data.load("healing_mnist", train_size=5, test_size=3)
    assert ds.train.shape == (5, 10, 784) and ds.test_covariates["mask"].shape == (3, 10, 784)


def test_markov_and_dense_gp_vae_share_the_prior_for_matern_kernels():
    cfg_d = gp_vae.Config(kernel="matern32", lengthscale=3.0)
    cfg_m = markov_gp_vae.Config(nu=1.5, lengthscale=3.0)
    x = torch.zeros(2, 9, 16, dtype=torch.float64)
    dense, markov = gp_vae.Model(cfg_d).double().z_prior(x), markov_gp_vae.Model(cfg_m).double().z_prior(x)
    z = torch.randn(3, 9, 2, dtype=torch.float64)
    torch.testing.assert_close(dense.log_prob(z), markov.log_prob(z), rtol=1e-4, atol=1e-4)
    assert math.isfinite(dense.log_prob(z).sum().item())


@pytest.mark.parametrize("model_name", SEQUENCE_MODELS)
def test_imputation_learns_the_missing_entries(model_name, tiny, engine):
    # After a short fit on the LDS video, the imputed missing pixels beat filling in the observed mean.
    # KL warm-up matters: without it svae's learned prior shrinks and z collapses (measured: error /
    # baseline 1.01 after 120 epochs); with it, at 40 epochs: svae ~0.10, gp_vae ~0.64, markov_gp_vae ~0.22.
    ae, (x, mask) = tiny(model_name, n=64, seq_len=10, hidden_dims=(32,))
    engine("svi", epochs=40, batch_size=16, lr=1e-2, kl_warmup_epochs=20).fit(ae, x, mask)
    truth = data.lds_video(64, T=10, x_dim=6, p_missing=0.2, p_missing_frame=0.2, seed=0).truth
    filled = impute(ae, x, mask)
    assert torch.equal(filled[mask], x[mask])
    missing = ~mask
    err = (filled - truth)[missing].pow(2).mean()
    baseline = (x[mask].mean() - truth)[missing].pow(2).mean()
    assert err < 0.8 * baseline, (err, baseline)
