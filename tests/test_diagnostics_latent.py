"""ELBO decomposition, KL per unit, active units, mutual information and collapse, against closed forms."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder
from aezoo.diagnostics import (
    active_units,
    collapse_report,
    elbo_decomposition,
    importance_estimate,
    kl_per_dimension,
    mutual_information,
    posterior_predictive,
)
from aezoo.guides import AmortizedNormal
from aezoo.inference import ENGINES
from aezoo.models import linear_gaussian as lg


def repeated(fn, reps: int = 20) -> tuple[float, float]:
    """Mean and standard error of ``reps`` independent runs of a scalar estimator."""
    values = torch.tensor([fn() for _ in range(reps)], dtype=torch.float64)
    return values.mean().item(), (values.std() / reps**0.5).item()


def test_kl_per_dimension_of_a_diagonal_guide_matches_monte_carlo(tiny):
    ae, (x,) = tiny("vae", n=20)
    ae, x = ae.double(), x.double()
    analytic = kl_per_dimension(ae, x)["z"]
    assert analytic.shape == (2,) and (analytic > 0).all()
    # Reference straight from the encoder: K draws per datum of log q(z_u|x) - log p(z_u) per unit.
    # The standard error of the data average is sqrt(sum_n Var_k / K) / N; 4 SE per unit: false
    # failure ~1e-4 for the two units.
    with torch.no_grad():
        loc, scale = ae.guide.encode(x)
        z = loc + scale * torch.randn(4000, *loc.shape, dtype=x.dtype, device=x.device)
        terms = (dist.Normal(loc, scale).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)).cpu()  # (K, N, D)
    se = (terms.var(0).sum(0) / len(terms)).sqrt() / len(x)
    assert ((analytic - terms.mean((0, 1))).abs() < 4 * se).all()
    mc = kl_per_dimension(ae, x, analytic=False, num_particles=4000)["z"]
    assert ((analytic - mc).abs() < 4 * se).all()


def test_kl_terms_sum_and_rec_minus_kl_is_the_elbo(tiny):
    ae, (x,) = tiny("vae", n=20)
    ae, x = ae.double(), x.double()
    dec = elbo_decomposition(ae, x, num_particles=50)
    assert dec.reconstruction.shape == dec.kl.shape == dec.elbo.shape == (20,)
    # For a factorised guide and prior the units' analytic KLs add up to the site's analytic KL.
    torch.testing.assert_close(kl_per_dimension(ae, x)["z"].sum(), dec.kl.mean())
    torch.testing.assert_close(dec.kl_per_site["z"], dec.kl)
    # rec - KL and the importance sampler's ELBO estimate the same mean; each side's standard
    # error comes from 20 independent runs. 5 SE of the difference: false failure ~1e-4 (t, 38 dof).
    rec_kl, se1 = repeated(lambda: elbo_decomposition(ae, x, num_particles=50).elbo.mean().item())
    iw, se2 = repeated(lambda: importance_estimate(ae, x, num_particles=50).elbo.mean().item())
    assert abs(rec_kl - iw) < 5 * math.hypot(se1, se2)
    assert set(json.loads(json.dumps(dec.to_dict()))) >= {"elbo", "reconstruction", "kl"}


def test_exact_linear_gaussian_guide_gives_closed_form_kls(linear_gaussian):
    ae, x = linear_gaussian(40)
    lg.set_exact_guide(ae)
    post = ae.model.exact_posterior(x)
    m, S = post.mean.detach(), post.covariance_matrix[0].detach()
    kl = 0.5 * (S.trace() + (m**2).sum(-1) - 2 - torch.logdet(S))  # KL(N(m, S) || N(0, I)) per datum
    # MVN guide vs Independent Normal prior: closed form through the Gaussian fallback.
    dec = elbo_decomposition(ae, x, num_particles=3)
    torch.testing.assert_close(dec.kl, kl.cpu(), atol=1e-10, rtol=0)
    # Monte Carlo KL: each particle's log p(x|z) - (log q - log p) is the exact log-weight log p(x).
    dec_mc = elbo_decomposition(ae, x, num_particles=3, analytic_kl=False)
    torch.testing.assert_close(dec_mc.elbo, ae.model.exact_log_marginal(x).detach().cpu(), atol=1e-10, rtol=0)
    # Per unit: KL of the marginals N(m_u, S_uu) against N(0, 1), averaged over data.
    marg = 0.5 * (S.diagonal() + m**2 - 1 - S.diagonal().log())
    torch.testing.assert_close(kl_per_dimension(ae, x)["z"], marg.mean(0).cpu(), atol=1e-10, rtol=0)


def ppca_data(seed: int, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Data ``(n, 6)`` whose sample covariance has eigenvalues near (4, 2.5, 0.4, 0.3, 0.2, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.tensor([4.0, 2.5, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    x = (torch.randn(n, 6, generator=g, dtype=torch.float64) * spectrum.sqrt()) @ rot.T + 1.0
    xc = x - x.mean(0)
    lam, U = torch.linalg.eigh(xc.T @ xc / n)  # the maximum-likelihood (1/n) sample covariance
    return x, lam.flip(0), U.flip(1)


def test_active_units_count_the_eigenvalues_above_sigma2_at_the_ppca_mle():
    # Tipping & Bishop: with sigma fixed the MLE is W = U_q (Lambda_q - sigma^2 I)^(1/2), a zero
    # column where the eigenvalue is <= sigma^2. With the exact guide, E[z_u | x] has variance
    # (lambda_u - sigma^2) / lambda_u over the data (0.6 and 0.75 here) or exactly 0: far from 0.01.
    sigma, perm = 1.0, [1, 3, 0, 2]  # latent unit perm[j] holds eigen-pair j
    x, lam, U = ppca_data(0)
    ae = lg.build(lg.Config(x_dim=6, z_dim=4, sigma=sigma)).double()
    W = torch.zeros(6, 4, dtype=torch.float64)
    for j in range(4):
        W[:, perm[j]] = U[:, j] * (lam[j] - sigma**2).clamp(min=0).sqrt()
    with torch.no_grad():
        ae.model.W.copy_(W)
        ae.model.mu.copy_(x.mean(0))
    lg.set_exact_guide(ae)
    expected = int((lam > sigma**2).sum())
    assert expected == 2
    units = active_units(ae, x)["z"]
    assert units.count == expected
    assert units.active.tolist() == [False, True, False, True]
    torch.testing.assert_close(units.variance[[1, 3]], (lam[:2] - 1) / lam[:2] * 1000 / 999, atol=1e-10, rtol=0)
    report = collapse_report(ae, x[:300])
    assert report.collapsed == ["z[0]", "z[2]"] and report.active_units == {"z": 2}
    assert json.loads(json.dumps(report.to_dict()))["collapsed"] == ["z[0]", "z[2]"]


def test_linear_vae_trained_with_fixed_sigma_collapses_the_small_eigen_directions():
    # A linear VAE with a diagonal guide (Lucas et al. 2019) trained by SVI: units beyond the
    # eigenvalues above sigma^2 collapse. Convergence, not Monte Carlo: over six seeds the
    # collapsed units reached activity <= 0.0033 and KL <= 0.0017, the active ones >= 0.58.
    x, lam, _ = ppca_data(1)
    cfg = lg.Config(x_dim=6, z_dim=4, sigma=1.0)
    torch.manual_seed(1)
    ae = Autoencoder(lg.Model(cfg), AmortizedNormal("z", nn.Linear(6, 8)), cfg, "linear_vae").double()
    svi = ENGINES["svi"]
    svi(epochs=20, batch_size=100, lr=0.03, progress=False).fit(ae, x)
    svi(epochs=10, batch_size=250, lr=0.003, progress=False).fit(ae, x)  # anneal
    report = collapse_report(ae, x[:300])
    assert report.active_units["z"] == int((lam > 1.0).sum()) == 2
    inactive = [f"z[{j}]" for j, a in enumerate(report.units["z"].active.tolist()) if not a]
    assert report.collapsed == inactive


def test_mutual_information_of_the_exact_guide_has_the_closed_form(linear_gaussian):
    # With q = p(z | x) and x drawn from the model, I_q(x; z) = I(x; z) = 0.5 log det(I + W^T W / s^2).
    ae, _ = linear_gaussian(1)
    lg.set_exact_guide(ae)
    W, mu, s = ae.model.W.detach(), ae.model.mu.detach(), ae.model.sigma.detach()
    x = torch.randn(1000, 2, dtype=W.dtype, device=W.device) @ W.T + mu + s * torch.randn_like(mu.expand(1000, 5))
    exact = 0.5 * torch.logdet(torch.eye(2, dtype=W.dtype, device=W.device) + W.T @ W / s**2).item()
    mi = mutual_information(ae, x, num_particles=4)
    assert mi.upper_bound == math.log(1000)
    # 4 SE (sampling of data and draws) plus 0.05 nats for the estimator's bias at N = 1000
    # (finite-sample aggregate posterior; observed deviations -0.045 to +0.01 over four seeds).
    assert abs(mi.value - exact) < 4 * mi.standard_error + 0.05, (mi, exact)


def test_mutual_information_is_zero_when_the_guide_ignores_x(linear_gaussian):
    ae, x = linear_gaussian(50)
    weight, cov = ae.model.posterior_map()
    ae.guide.set_(torch.zeros_like(weight), x.new_ones(2), torch.linalg.cholesky(cov))
    # q(z | x_m) is the same for all m, so log q(z_n | x_n) = log q(z_n) exactly.
    assert abs(mutual_information(ae, x, num_particles=3, batch_size=7, max_elements=50).value) < 1e-10
    assert active_units(ae, x)["z"].count == 0


# -- a model with two latent sites, one in a nested plate, and a prior that depends on the other --------


class TwoSiteModel(PyroModule):
    """z1 ~ N(0, I_2); z2_t | z1 ~ N((A z1)_t, 1), t < 3; x | z ~ N(W1 z1 + W2 z2, 0.5^2 I_4)."""

    def __init__(self) -> None:
        super().__init__()
        shapes = ((3, 2), (4, 2), (4, 3))
        self.A, self.W1, self.W2 = (nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in shapes)

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x, dim=-2):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1, 2), 1.0).to_event(1))  # (..., B, 1, 2)
            with pyro.plate("time", 3, dim=-1):
                z2 = pyro.sample("z2", dist.Normal((z1 @ self.A.T).squeeze(-2), 1.0))  # (..., B, 3)
            loc = z1.squeeze(-2) @ self.W1.T + z2 @ self.W2.T
            pyro.sample("x", dist.Normal(loc.unsqueeze(-2), 0.5).to_event(1), obs=x.unsqueeze(-2))

    def joint(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``Wz`` (4, 5) and the prior covariance (5, 5) of z = (z1, z2): x = Wz z + noise."""
        eye2, eye3 = torch.eye(2, dtype=self.A.dtype), torch.eye(3, dtype=self.A.dtype)
        cov_z = torch.cat([torch.cat([eye2, self.A.T], 1), torch.cat([self.A, self.A @ self.A.T + eye3], 1)])
        return torch.cat([self.W1, self.W2], 1), cov_z

    def exact_log_marginal(self, x):
        Wz, cov_z = self.joint()
        C = Wz @ cov_z @ Wz.T + 0.25 * torch.eye(4, dtype=x.dtype)
        return dist.MultivariateNormal(x.new_zeros(4), C).log_prob(x)


class TwoSiteGuide(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 10).double()

    @torch.no_grad()
    def set_near_posterior(self, model: TwoSiteModel) -> None:
        """Exact posterior means, marginal sds inflated by sqrt(lambda_max) of the posterior
        correlation: then 2 Cov_q - Cov_p is positive definite and the weights have finite variance."""
        Wz, cov_z = model.joint()
        cov = torch.linalg.inv(torch.linalg.inv(cov_z) + Wz.T @ Wz / 0.25)
        gain, sd = cov @ Wz.T / 0.25, cov.diagonal().sqrt()
        scale = sd * torch.linalg.eigvalsh(cov / sd[:, None] / sd[None, :]).max().sqrt()
        raw = scale + torch.log(-torch.expm1(-scale))  # softplus^-1
        self.encoder.weight.zero_()
        self.encoder.weight[[0, 1, 4, 5, 6]] = gain
        self.encoder.bias.zero_()
        self.encoder.bias[[2, 3, 7, 8, 9]] = raw

    def forward(self, x, *covariates, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x, dim=-2):
            h = self.encoder(x)
            pyro.sample("z1", dist.Normal(h[:, None, :2], F.softplus(h[:, None, 2:4])).to_event(1))
            with pyro.plate("time", 3, dim=-1):
                pyro.sample("z2", dist.Normal(h[:, 4:7], F.softplus(h[:, 7:])))


def test_two_latent_sites_in_nested_plates():
    torch.manual_seed(0)
    ae = Autoencoder(TwoSiteModel(), TwoSiteGuide(), config=None, name="two_site")
    ae.guide.set_near_posterior(ae.model)
    x = 2.0 * torch.randn(60, 4, dtype=torch.float64)
    # Per-datum IS log p(x) against the closed form; bias-corrected average within 4 combined
    # MCSE (false failure ~6e-5) and the error shrinking with K.
    exact = ae.model.exact_log_marginal(x).detach()
    small, est = (importance_estimate(ae, x, num_particles=k) for k in (20, 2000))
    err = est.log_likelihood - exact
    assert abs(err.mean() + (est.mcse**2).mean() / 2) < 4 * est.mcse.pow(2).sum().sqrt() / len(x)
    assert (small.log_likelihood - exact).abs().mean() > 2 * err.abs().mean()
    dec = elbo_decomposition(ae, x, num_particles=20)
    assert set(dec.kl_per_site) == {"z1", "z2"} and dec.kl.shape == (60,)
    torch.testing.assert_close(dec.kl, dec.kl_per_site["z1"] + dec.kl_per_site["z2"])
    # z2's prior depends on z1: the analytic KL is averaged over draws of z1. It and the Monte
    # Carlo KL estimate the same mean; 5 SE over 20 runs each: false failure ~1e-4 (t, 38 dof).
    def z2_kl(analytic: bool) -> float:
        return elbo_decomposition(ae, x, num_particles=20, analytic_kl=analytic).kl_per_site["z2"].mean().item()

    a, se_a = repeated(lambda: z2_kl(True))
    b, se_b = repeated(lambda: z2_kl(False))
    assert abs(a - b) < 5 * math.hypot(se_a, se_b)
    kl = kl_per_dimension(ae, x, num_particles=20)
    assert {n: v.shape for n, v in kl.items()} == {"z1": (2,), "z2": (3,)}
    assert {n: u.variance.shape for n, u in active_units(ae, x).items()} == {"z1": (2,), "z2": (3,)}
    report = collapse_report(ae, x, kl_threshold=1e9, au_threshold=1e9)  # everything counts as collapsed
    assert report.collapsed == ["z1[0]", "z1[1]", "z2[0]", "z2[1]", "z2[2]"]
    mi = mutual_information(ae, x, num_particles=2, max_elements=100)
    assert mi.value <= mi.upper_bound + 1e-12
    assert posterior_predictive(ae, x, num_replicates=3).shape == (3, 60, 4)
