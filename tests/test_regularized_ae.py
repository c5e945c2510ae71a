"""Denoising and contractive autoencoders and the score sampler of Alain & Bengio (arXiv:1211.4246)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from aezoo.diagnostics import score_sampler as ss
from aezoo.diagnostics.az import mcmc_summary
from aezoo.inference import ENGINES
from aezoo.inference.terms.contractive import Contractive, jacobian_norm, sigmoid_layer_norm
from aezoo.models import MODELS
from aezoo.progress import at_epoch


def _code(ae, x):
    return poutine.trace(ae.guide).get_trace(x).nodes["z"]["value"]


def test_dae_corrupts_only_during_a_fit_and_reproducibly(tiny):
    ae, (x,) = tiny("dae")
    assert torch.equal(_code(ae, x), ae.guide.encode(x))  # outside a fit: the clean code
    with at_epoch(0.0):
        pyro.set_rng_seed(3)
        noisy = _code(ae, x)
        pyro.set_rng_seed(3)
        again = _code(ae, x)
        ae.eval()
        assert torch.equal(_code(ae, x), ae.guide.encode(x))  # evaluation mode inside a fit: clean too
    assert not torch.allclose(noisy, ae.guide.encode(x)) and torch.equal(noisy, again)


def test_linear_dae_estimates_the_gaussian_score():
    """A linear DAE on x ~ N(mu, Sigma) with corruption x~ = x + sigma eps, trained by squared error (the
    Gaussian likelihood's mean), has the optimum r(x~) = E[x | x~] = mu + Sigma (Sigma + sigma^2 I)^{-1} (x~ - mu),
    so (r(x) - x) / sigma^2 = -(Sigma + sigma^2 I)^{-1} (x - mu): the score of the smoothed density, within
    sigma^2 / lambda_min(Sigma) (relative) of the true score -Sigma^{-1} (x - mu). With fresh noise each
    step the optimum for the training sample is that formula at its empirical mean and (1/N) covariance;
    what remains is the optimiser's error, checked against a fixed tolerance (measured: 0.019 relative), and
    the known bias. sigma = 0.5 because errors in r are amplified by 1 / sigma^2 in the score: a smaller
    sigma (smaller bias) needs far longer training than a unit test affords."""
    torch.manual_seed(0)
    mu, sigma = torch.tensor([1.0, -0.5]), 0.5
    chol = torch.tensor([[1.2, 0.0], [0.6, 0.9]])
    cov = chol @ chol.T
    x = mu + torch.randn(2000, 2) @ chol.T
    cfg = MODELS["dae"].Config(x_dim=2, z_dim=2, hidden_dims=(), likelihood="gaussian", noise_scale=sigma)
    ae = MODELS["dae"].build(cfg)
    ENGINES["svi"](beta=0.0, epochs=400, batch_size=2000, lr=2e-2, progress=False).fit(ae, x)
    m, c = x.mean(0), torch.cov(x.T, correction=0)
    points = mu + torch.randn(200, 2) @ chol.T * 1.5  # within a few sd of the mean
    got = ss.estimated_score(ae)(points)
    smoothed = -(points - m) @ torch.linalg.inv(c + sigma ** 2 * torch.eye(2))
    true = -(points - mu) @ torch.linalg.inv(cov)
    rel = lambda a, b: ((a - b).norm(dim=-1).mean() / b.norm(dim=-1).mean()).item()  # noqa: E731
    assert rel(got, smoothed) < 0.05
    assert rel(got, true) < 0.05 + sigma ** 2 / torch.linalg.eigvalsh(cov).min().item()


@pytest.mark.parametrize("hidden_dims", [(), (5,)], ids=["sigmoid_layer", "mlp"])
def test_contractive_penalty_is_the_finite_difference_jacobian_norm(hidden_dims):
    cfg = MODELS["cae"].Config(x_dim=6, z_dim=4, hidden_dims=hidden_dims, likelihood="gaussian")
    ae = MODELS["cae"].build(cfg).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    h = 1e-5
    fd = torch.zeros(5)
    for i in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[i] = h
        fd += ((ae.guide.encode(x + step) - ae.guide.encode(x - step)) / (2 * h)).pow(2).sum(-1).detach()
    term = Contractive()
    term.check(ae, x)
    assert torch.allclose(term(ae, (x,), 5, None, None).detach(), fd.mean().double(), rtol=1e-6)
    assert torch.allclose(jacobian_norm(ae.guide.encode, x).detach(), fd.double(), rtol=1e-6)
    if not hidden_dims:
        layer = ae.guide.encoder[0][0]
        assert torch.allclose(sigmoid_layer_norm(ae.guide.encode(x), layer.weight).detach(), fd.double(), rtol=1e-6)


def test_contractive_penalty_refuses_a_gaussian_guide(tiny):
    ae, data = tiny("vae")
    with pytest.raises(ValueError, match="does not apply"):
        Contractive().check(ae, *data)


def _gaussian(mu, prec):
    return lambda x: -(x - mu) @ prec


@pytest.mark.parametrize("method", ["langevin", "mh"])
def test_sampler_on_an_exact_gaussian_score(method):
    """Langevin with step eps on s(x) = -P (x - mu) is stationary at N(mu, (P - eps P^2 / 2)^{-1}) (solve
    V = (I - eps P) V (I - eps P) + 2 eps I); MH with the trapezoid energy difference (exact for a linear
    score) targets N(mu, P^{-1}). Tolerances: 4.5 Monte Carlo standard errors from ArviZ's ESS (mean: sd /
    sqrt(ESS); variance: ESS of the squared deviations), a failure rate below 1e-4 per coordinate."""
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    eps = 0.05 if method == "langevin" else 0.2
    x0 = mu + 3 * torch.randn(4, 2, dtype=torch.float64)
    draws, summary = ss.sample(_gaussian(mu, prec), x0, num_steps=4000, step_size=eps, method=method, warmup=300,
                               seed=1)
    assert draws.shape == (4, 4000, 2) and summary["r_hat_max"] < 1.01
    target = torch.linalg.inv(prec - eps * prec @ prec / 2) if method == "langevin" else cov
    flat = draws.reshape(-1, 2)
    dev2 = (draws - mu) ** 2
    ess_var = mcmc_summary({"d": dev2}, per_coordinate=True)["sites"]["d"]["ess_bulk"]
    ess_mean = mcmc_summary({"x": draws}, per_coordinate=True)["sites"]["x"]["ess_bulk"]
    for d in range(2):
        var = target[d, d].item()
        assert abs(flat[:, d].mean().item() - mu[d].item()) < 4.5 * math.sqrt(var / ess_mean[d])
        assert abs(dev2[..., d].mean().item() - var) < 4.5 * dev2[..., d].std().item() / math.sqrt(ess_var[d])
    if method == "mh":
        assert 0.2 < min(summary["acceptance"]) < 1.0


def test_r_hat_flags_chains_that_do_not_mix():
    """Two narrow wells at +-5: chains started in different wells never cross, so R-hat is far above 1."""
    def score(x):
        w = torch.softmax(torch.stack([-(x - 5).pow(2).sum(-1), -(x + 5).pow(2).sum(-1)], -1) / (2 * 0.09), -1)
        return -(w[..., :1] * (x - 5) + w[..., 1:] * (x + 5)) / 0.09

    x0 = torch.tensor([[5.0], [5.1], [-5.0], [-4.9]])
    _, stuck = ss.sample(score, x0, num_steps=500, step_size=0.01, seed=0)
    _, mixed = ss.sample(score, x0[:2], num_steps=500, step_size=0.01, seed=0)
    assert stuck["r_hat_max"] > 1.5 and mixed["r_hat_max"] < 1.05


def test_sampler_rejects_bad_input(tiny):
    ae, (x,) = tiny("cae")
    with pytest.raises(ValueError, match="sigma"):
        ss.sample(ae, x[:2], num_steps=3, step_size=0.1)
    with pytest.raises(ValueError, match=r"\(C, D_x\)"):
        ss.sample(ae, x[0], num_steps=3, step_size=0.1, sigma=0.5)
    with pytest.raises(ValueError, match="method"):
        ss.sample(ae, x[:2], num_steps=3, step_size=0.1, sigma=0.5, method="hmc")
