"""Learned GP hyper-parameters (gp_vae, markov_gp_vae, gppvae) and the SVGP-VAE guide's closed-form posterior."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.contrib.gp import kernels

from aezoo.inference import ENGINES
from aezoo.models import gp_vae, gppvae, markov_gp_vae
from aezoo.priors import SparseGPPrior
from aezoo.sequence import dense_gp_prior, matern_prior, matern_ssm


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_matern_state_space_is_differentiable_in_the_hyper_parameters(nu):
    def matrices(ell, var):
        return matern_ssm(nu, ell, var, dtype=torch.float64)

    ell, var = torch.tensor(2.5, dtype=torch.float64, requires_grad=True), torch.tensor(0.7, dtype=torch.float64,
                                                                                       requires_grad=True)
    assert torch.autograd.gradcheck(matrices, (ell, var))  # autograd against finite differences
    A, Q, _ = matrices(ell, var)
    (A.sum() + Q.sum()).backward()
    assert ell.grad.abs() > 0 and var.grad.abs() > 0


def test_learned_lengthscale_recovers_the_generating_one():
    # Draw S sequences from a Matern-3/2 GP (dense covariance, pyro.contrib.gp) with known lengthscale
    # and variance; fit both by maximum marginal likelihood of markov_gp_vae's prior (the state-space
    # form, PyroParams), and compare to the truth in units of the estimator's standard error from the
    # observed Fisher information (asymptotically normal MLE): |error| < 4 SE fails with probability
    # ~6e-5 when the code is right; the SE (0.016 in log lengthscale here) makes the check sharp.
    # Seeds 0-4 gave z-scores -0.4, 0.3, -0.9, 1.7, -0.3 for the lengthscale (spread ~1, as the SE says).
    torch.manual_seed(0)
    T, S, ell_true, var_true = 40, 150, 3.0, 1.3
    like = torch.zeros((), dtype=torch.float64)
    k = kernels.Matern32(1, torch.tensor(var_true), torch.tensor(ell_true)).double().requires_grad_(False)
    z = dense_gp_prior(T, 1, k, 1e-3, like).sample((S,))  # (S, T, 1)
    cfg = markov_gp_vae.Config(x_dim=2, z_dim=1, hidden_dims=(2,), nu=1.5, lengthscale=1.0, variance=0.5)
    model = markov_gp_vae.Model(cfg).double()
    hypers = [model.lengthscale_unconstrained, model.variance_unconstrained]
    opt = torch.optim.LBFGS(hypers, lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -model.z_prior(z).log_prob(z).sum()
        loss.backward()
        return loss

    opt.step(closure)
    ell_hat, var_hat = model.lengthscale.item(), model.variance.item()

    def neg_log_lik(theta):  # in (log lengthscale, log variance)
        return -matern_prior(T, 1, 1.5, theta[0].exp(), theta[1].exp(), 1e-3, like).log_prob(z).sum()

    theta_hat = torch.tensor([math.log(ell_hat), math.log(var_hat)], dtype=torch.float64)
    cov = torch.linalg.inv(torch.autograd.functional.hessian(neg_log_lik, theta_hat))
    se = cov.diagonal().sqrt()
    assert se[0] < 0.05  # the data pin the lengthscale down
    assert abs(math.log(ell_hat) - math.log(ell_true)) < 4 * se[0], (ell_hat, se)
    assert abs(math.log(var_hat) - math.log(var_true)) < 4 * se[1], (var_hat, se)


@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_svgp_posterior_is_the_exact_posterior_given_the_pseudo_observations(weight):
    # Linear-Gaussian pseudo-observations y_b = z_b + N(0, s2_b) under the sparse-GP prior: the dense
    # joint Gaussian of (u, z, y) gives p(u | y) and p(z_b | y) exactly; the guide's closed form must
    # match to 1e-6 in float64. Weight w repeats every datum's pseudo-observation (its z included) w times.
    torch.manual_seed(1)
    B, D = 7, 2
    prior = SparseGPPrior(D, "rbf", lengthscale=1.2, variance=0.8, num_inducing=5, covariate_range=(0.0, 4.0),
                          noise=0.05, learn=True).double()
    c = 4 * torch.rand(B, 1, dtype=torch.float64)
    y = torch.randn(B, D, dtype=torch.float64)
    s2 = 0.05 + torch.rand(B, D, dtype=torch.float64)
    q_u, q_z = gppvae.svgp_posterior(prior, c, y, s2, weight)
    with torch.no_grad():
        Z, k = prior.inducing, prior.kernel
        K = k(Z) + prior.jitter * torch.eye(len(Z), dtype=torch.float64)
        K_ub = k(Z, c)
        Q = K_ub.T @ torch.linalg.solve(K, K_ub)
        d = k(c, diag=True) - Q.diagonal() + prior.noise  # the FITC conditional variance of z_b given u
        for ch in range(D):
            cov_y = Q + torch.diag((d + s2[:, ch]) / weight)  # each y_bl seen w times, each copy A^T u + N(0, d + s2)
            mean_u = K_ub @ torch.linalg.solve(cov_y, y[:, ch])
            cov_u = K - K_ub @ torch.linalg.solve(cov_y, K_ub.T)
            torch.testing.assert_close(q_u.mean[:, ch], mean_u, atol=1e-6, rtol=0)
            torch.testing.assert_close(q_u.base.covariance_matrix[ch], cov_u, atol=1e-6, rtol=0)
            if weight == 1.0:  # q(z_b) = int q(z_b | u) q(u) du against p(z_b | y)
                cov_zy = Q + torch.diag(d)
                mean_z = cov_zy @ torch.linalg.solve(cov_y, y[:, ch])
                var_z = (Q + torch.diag(d)).diagonal() - (cov_zy * torch.linalg.solve(cov_y, cov_zy.T).T).sum(-1)
                # marginal of the guide: linear in u, so its moments follow from q(u)'s
                A = torch.linalg.solve(K, K_ub)  # (M, B)
                gain = s2[:, ch] / (d + s2[:, ch])
                m_guide = gain * (A.T @ q_u.mean[:, ch]) + (1 - gain) * y[:, ch]
                v_guide = gain**2 * (A.T @ q_u.base.covariance_matrix[ch] @ A).diagonal() + d * gain
                torch.testing.assert_close(m_guide, mean_z, atol=1e-6, rtol=0)
                torch.testing.assert_close(v_guide, var_z, atol=1e-6, rtol=0)
                u0 = q_u.mean.detach()
                torch.testing.assert_close(q_z(u0).mean[:, ch], m_guide, atol=1e-10, rtol=0)


def hyper_values(ae) -> dict[str, torch.Tensor]:
    """The kernel hyper-parameters (and gppvae's inducing inputs) as read by the model."""
    m = ae.model
    owner = m.prior.kernel if hasattr(m, "prior") else getattr(m, "kernel", m)
    out = {name: getattr(owner, name).detach().clone() for name in ("lengthscale", "variance")}
    if hasattr(m, "prior"):
        out["inducing"] = m.prior.inducing.detach().clone()
    return out


SMALL = {gp_vae: dict(x_dim=3, z_dim=2, hidden_dims=(4,), seq_len=6),
         markov_gp_vae: dict(x_dim=3, z_dim=2, hidden_dims=(4,), seq_len=6),
         gppvae: dict(x_dim=5, z_dim=2, hidden_dims=(4,), num_inducing=4)}


@pytest.mark.parametrize("module", [gp_vae, markov_gp_vae, gppvae], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("learn", [False, True])
def test_fixed_hyper_parameters_stay_and_learned_ones_move(module, learn):
    cfg = module.Config(**SMALL[module], learn_kernel=learn)
    torch.manual_seed(0)
    ae = module.build(cfg)
    data = module.example_data(cfg, 8)
    before = hyper_values(ae)
    ENGINES["svi"](epochs=1, batch_size=8, lr=1e-2, progress=False).fit(ae, *data)
    after = hyper_values(ae)
    for name in before:
        assert torch.equal(before[name], after[name]) != learn, name


@pytest.mark.parametrize("module", [gp_vae, markov_gp_vae, gppvae], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_hyper_parameter_priors_are_global_latents_with_map_guide_sites(module):
    cfg = module.Config(**SMALL[module], kernel_prior=0.5)
    ae = module.build(cfg)
    data = module.example_data(cfg, 4)
    guide_tr = poutine.trace(ae.guide).get_trace(*data)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data)
    hyper = [n for n in model_tr.nodes if n.endswith(("lengthscale", "variance"))]
    assert len(hyper) == 2
    for name in hyper:
        assert type(model_tr.nodes[name]["fn"]).__name__ == "LogNormal"
        assert type(guide_tr.nodes[name]["fn"]).__name__ == "Delta"
        assert model_tr.nodes[name]["value"].shape == ()  # global: outside the data plate
    model_tr.compute_log_prob()
    assert all(torch.isfinite(model_tr.nodes[n]["log_prob_sum"]) for n in hyper)
    before = {n: guide_tr.nodes[n]["value"].detach().clone() for n in hyper}
    ENGINES["svi"](epochs=2, batch_size=4, lr=1e-2, progress=False).fit(ae, *data)
    after = poutine.trace(ae.guide).get_trace(*data)
    assert all(not torch.equal(before[n], after.nodes[n]["value"]) for n in hyper)


def test_config_errors():
    with pytest.raises(ValueError, match="guide"):
        gppvae.Config(guide="exact")
    for module in (gp_vae, markov_gp_vae, gppvae):
        with pytest.raises(ValueError, match="kernel_prior"):
            module.Config(kernel_prior=-1.0)


def test_svgp_batch_scale_makes_q_u_depend_on_num_data():
    cfg = gppvae.Config(**SMALL[gppvae], svgp_batch_scale=True)
    ae = gppvae.build(cfg)
    x, c = gppvae.example_data(cfg, 4)
    with torch.no_grad():
        q_small, _ = ae.guide.posterior(x, c, num_data=4)
        q_large, _ = ae.guide.posterior(x, c, num_data=400)
    assert (q_large.variance < q_small.variance).all()  # 100 times the evidence: a sharper q(u)
    pyro.clear_param_store()
