"""Conditional models: importance sampling of log p(x | covariates) against closed forms, and ``cvae``.

The test animal is a linear-Gaussian conditional model with an exact answer:
``z | c ~ N(A c, I)``, ``x | z, c ~ N(W z + B c + mu, sigma^2 I)``, so
``x | c ~ N(W A c + B c + mu, W W^T + sigma^2 I)`` and the posterior is Gaussian with precision
``P = I + W^T W / sigma^2`` and mean ``P^-1 (A c + W^T (x - B c - mu) / sigma^2)``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder, Covariate
from aezoo.diagnostics import importance_estimate, iwae_bounds
from aezoo.inference import ENGINES
from aezoo.models import cvae

D_X, D_Z, D_C = 5, 2, 3


class ConditionalLinearGaussian(PyroModule):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A, self.W, self.B = (nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64))
                                  for s in ((D_Z, D_C), (D_X, D_Z), (D_X, D_C)))
        self.mu = nn.Parameter(torch.randn(D_X, generator=g, dtype=torch.float64))
        self.sigma = 0.7

    def forward(self, x, c=None, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(c @ self.A.T, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + c @ self.B.T + self.mu, self.sigma).to_event(1), obs=x)

    def exact_log_marginal(self, x, c):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(D_X, dtype=x.dtype)
        return dist.MultivariateNormal(c @ (self.W @ self.A + self.B).T + self.mu, cov).log_prob(x)

    def posterior(self, x, c):
        precision = torch.eye(D_Z, dtype=x.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (c @ self.A.T + (x - c @ self.B.T - self.mu) @ self.W / self.sigma**2) @ cov
        return mean, cov


class PosteriorGuide(PyroModule):
    """The exact posterior, optionally shifted and widened (a worse, still valid proposal)."""

    def __init__(self, model: ConditionalLinearGaussian, shift: float = 0.0, widen: float = 1.0) -> None:
        super().__init__()
        self.target, self.shift, self.widen = [model], shift, widen  # a list: not a sub-module

    def forward(self, x, c=None, num_data=None):
        mean, cov = self.target[0].posterior(x, c)
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", dist.MultivariateNormal(mean + self.shift, self.widen**2 * cov))


def animal(shift: float = 0.0, widen: float = 1.0, n: int = 40, seed: int = 0):
    model = ConditionalLinearGaussian(seed)
    ae = Autoencoder(model, PosteriorGuide(model, shift, widen), None, "conditional_linear_gaussian",
                     covariates=(Covariate("c", "continuous", required=True),))
    g = torch.Generator().manual_seed(seed + 1)
    c = torch.randn(n, D_C, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mean, cov = model.posterior(torch.zeros(n, D_X, dtype=torch.float64), c)  # only for shapes
        z = c @ model.A.T + torch.randn(n, D_Z, generator=g, dtype=torch.float64)
        x = z @ model.W.T + c @ model.B.T + model.mu + model.sigma * torch.randn(n, D_X, generator=g,
                                                                                 dtype=torch.float64)
    return ae, x, c


def test_exact_posterior_guide_gives_the_exact_conditional_likelihood():
    ae, x, c = animal()
    est = importance_estimate(ae, x, c, num_particles=50)
    exact = ae.model.exact_log_marginal(x, c).detach()
    torch.testing.assert_close(est.log_likelihood, exact, rtol=0, atol=1e-8)  # every weight equals p(x | c)
    torch.testing.assert_close(est.elbo, exact, rtol=0, atol=1e-8)


def test_importance_sampling_converges_to_the_exact_conditional_likelihood():
    ae, x, c = animal(shift=0.4, widen=1.3)
    exact = ae.model.exact_log_marginal(x, c).detach()
    est = importance_estimate(ae, x, c, num_particles=4000)
    # the mean of n estimates against the mean exact value, 4 combined Monte Carlo errors (failure ~6e-5);
    # the estimator's bias (about -mcse^2 / 2 per datum) is far below that
    tol = 4 * est.mcse.pow(2).sum().sqrt() / len(x)
    assert abs(est.log_likelihood.mean() - exact.mean()) < tol
    gap = (exact - est.elbo).mean()
    assert gap > 0.05  # the worse guide's ELBO is visibly below log p(x | c)
    bounds = iwae_bounds(ae, x, c, ks=(1, 10, 100), num_groups=20)
    means = [bounds.estimates[k].mean() for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2] < exact.mean() + tol  # E ELBO <= E IWAE_k <= log p(x | c)


def small_cvae(**fields):
    return cvae.Config(**{"x_dim": 12, "z_dim": 2, "hidden_dims": (8,), "c_dim": 3, **fields})


def test_cvae_without_labels_samples_them_and_estimates_the_marginal():
    # y ~ Categorical(1/K) in model and guide when it is missing: IS then estimates log (1/K) sum_y p(x | y)
    cfg = small_cvae(num_classes=3)
    torch.manual_seed(0)
    ae = cvae.build(cfg).double()
    x = cvae.example_data(cfg, 12, seed=1)[0].double()
    per_class = torch.stack([importance_estimate(ae, x, torch.full((len(x),), k), num_particles=3000)
                             .log_likelihood for k in range(3)])
    mixture = per_class.logsumexp(0) - math.log(3)
    est = importance_estimate(ae, x, None, num_particles=30000)
    tol = 4 * est.mcse.pow(2).sum().sqrt() / len(x) + 0.02  # + the per-class estimates' own error
    assert abs(est.log_likelihood.mean() - mixture.mean()) < tol


def test_cvae_refuses_a_missing_condition_and_labels_outside_the_classes():
    ae = cvae.build(small_cvae(condition="c"))
    x, y, c, mask = cvae.example_data(small_cvae(condition="c"), 6)
    with pytest.raises(ValueError, match="covariate 'c'"):
        ae.validate(x, y, None, mask)
    ae = cvae.build(small_cvae(num_classes=4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ae.validate(x, torch.tensor([0, 1, 2, 3, 4, 0]), None, None)


def test_gsnn_term_is_the_prior_decoded_likelihood():
    cfg = small_cvae()
    torch.manual_seed(0)
    ae = cvae.build(cfg)
    x, y, c, mask = cvae.example_data(cfg, 10)
    plain = ENGINES["svi"](progress=False)
    hybrid = ENGINES["svi"](progress=False, penalty="gsnn", penalty_weight=1.0, penalty_options=("particles=1",))
    pyro.set_rng_seed(2)
    elbo_part = plain.loss(ae, x, y, c, mask, num_data=10).item()
    pyro.set_rng_seed(2)
    got = hybrid.loss(ae, x, y, c, mask, num_data=10).item()
    # after the ELBO's draws, the term draws z ~ p(z | y) and scores the masked x under the decoder
    pyro.set_rng_seed(2)
    plain.loss(ae, x, y, c, mask, num_data=10)
    cond = cvae.condition(cfg, x, y, c)
    z = ae.model.z_dist(cond).rsample()
    gsnn = -ae.model.x_dist(z, cond, mask).log_prob(x).mean().item()
    assert got == pytest.approx(elbo_part + gsnn, rel=1e-5)
