"""Importance-sampled log p(x), its MCSE, IWAE_k bounds and predictive checks against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from toy_model import toy

from aezoo.diagnostics import (
    ImportanceEstimate,
    importance_estimate,
    iwae_bounds,
    posterior_predictive,
    predictive_checks,
    prior_predictive,
)
from aezoo.diagnostics.likelihood import log_mean_exp_mcse
from aezoo.models.linear_gaussian import set_exact_guide


def perturb_guide(ae) -> None:
    """An imperfect guide: the exact posterior shifted by 0.3 with its scale inflated 1.5x."""
    weight, cov = ae.model.posterior_map()
    ae.guide.set_(weight, -weight @ ae.model.mu + 0.3, 1.5 * torch.linalg.cholesky(cov))


def combined(se: torch.Tensor) -> float:
    """Standard error of a mean over data of independent per-datum estimates."""
    return (se.pow(2).sum().sqrt() / len(se)).item()


def test_mcse_matches_the_delta_method_formula_without_overflow():
    log_w = 3.0 * torch.randn(50, 7, dtype=torch.float64)
    w = np.exp(log_w.numpy())
    expected = w.std(0, ddof=1) / (math.sqrt(50) * w.mean(0))
    np.testing.assert_allclose(log_mean_exp_mcse(log_w).numpy(), expected, rtol=1e-10)
    # shifting every log-weight by a constant changes nothing, even far past exp's range
    np.testing.assert_allclose(log_mean_exp_mcse(log_w + 5000.0).numpy(), expected, rtol=1e-8)
    assert torch.isnan(log_mean_exp_mcse(log_w[:1])).all()  # one particle: no spread to measure


def test_exact_guide_gives_exact_log_likelihood_zero_mcse_and_zero_gap(linear_gaussian):
    ae, x = linear_gaussian(30)
    set_exact_guide(ae)
    est = importance_estimate(ae, x, num_particles=64, batch_size=7, max_elements=500)  # many chunks
    exact = ae.model.exact_log_marginal(x).detach().cpu()
    assert isinstance(est, ImportanceEstimate) and est.num_particles == 64 and est.log_likelihood.shape == (30,)
    torch.testing.assert_close(est.log_likelihood, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(est.elbo, exact, atol=1e-6, rtol=0)
    assert est.mcse.abs().max() < 1e-6 and est.inference_gap.abs().max() < 1e-6
    assert set(est.to_dict()) >= {"log_likelihood", "log_likelihood_mcse", "elbo", "inference_gap"}


def test_is_estimate_converges_and_its_mcse_covers_the_error(linear_gaussian):
    ae, x = linear_gaussian(200)
    perturb_guide(ae)
    exact = ae.model.exact_log_marginal(x).detach().cpu()
    abs_err = {}
    for k in (10, 100, 1000):
        est = importance_estimate(ae, x, num_particles=k)
        err = est.log_likelihood - exact
        abs_err[k] = err.abs().mean().item()
        assert (est.inference_gap > 0).all()  # log-mean-exp >= mean, per datum
        if k == 10:
            continue  # at K = 10 the weights are too skewed for the delta method's bias term
        # The average error, corrected by the delta method's bias -mcse^2 / 2, is a sum of
        # independent per-datum errors: |z| < 4 fails by chance with probability ~6e-5 (observed
        # |z| <= 1.9 over four seeds).
        bias = -(est.mcse**2).mean().item() / 2
        assert abs(err.mean().item() - bias) < 4 * combined(est.mcse), k
        if k == 1000:
            # Per datum, |error| < 2 MCSE holds for ~95% of the data when the MCSE is right
            # (observed 0.93-0.97 over four seeds). With 200 data the binomial sd is 0.015: 0.85 is
            # ~6 sd below, and an MCSE too small by sqrt(2) would cover only ~84%.
            assert (err.abs() < 2 * est.mcse).double().mean() > 0.85
    # The error shrinks like 1 / sqrt(K): observed ratios 3.0-3.5 per tenfold K; 2 leaves room.
    assert abs_err[10] > 2 * abs_err[100] > 4 * abs_err[1000]


def test_iwae_bounds_are_ordered_on_average(linear_gaussian):
    ae, x = linear_gaussian(200)
    perturb_guide(ae)
    log_p = ae.model.exact_log_marginal(x).detach().cpu().mean().item()
    bounds = iwae_bounds(ae, x, ks=(50, 1, 5), num_groups=20)
    assert sorted(bounds.estimates) == [1, 5, 50] and bounds.num_groups == {1: 1000, 5: 200, 50: 20}
    mean = {k: v.mean().item() for k, v in bounds.estimates.items()}
    se = {k: combined(v) for k, v in bounds.standard_errors.items()}
    # E[ELBO] < E[IWAE_5] < E[IWAE_50] <= log p(x). The estimates share one pool, so the gap's
    # standard error is at most the sum of the two SEs; each gap is large for this guide (observed
    # > 40 such SEs), so demanding it above 4 of them catches an estimator that ignores k.
    assert mean[5] - mean[1] > 4 * (se[5] + se[1])
    assert mean[50] - mean[5] > 4 * (se[50] + se[5])
    assert log_p - mean[50] > -4 * se[50]  # false failure ~3e-5
    assert set(bounds.to_dict()) == {"1", "5", "50"}
    with pytest.raises(ValueError, match="ks"):
        iwae_bounds(ae, x, ks=(0, 5))


# -- the 1-D toy model: z ~ N(0, 1), x | z ~ N(z, 1), q(z | x) = N(a x + b, s^2) --------------------


def test_toy_iwae_bounds_approach_the_closed_form_with_shrinking_bias():
    a, b, s = 0.3, 0.2, 1.0  # the exact posterior is N(x / 2, 1 / 2)
    ae = toy(a, b, s)
    x = math.sqrt(2.0) * torch.randn(200, 1, dtype=torch.float64)
    log_p = dist.Normal(0.0, math.sqrt(2.0)).log_prob(x[:, 0])
    ks = (1, 4, 16, 64)
    bounds = iwae_bounds(ae, x, ks=ks, num_groups=16)
    bias = {k: (log_p - bounds.estimates[k]).mean().item() for k in ks}
    se = {k: combined(bounds.standard_errors[k]) for k in ks}
    # k = 1: the bias is KL(q || p(z | x)) in closed form; 4 SE, false failure ~6e-5.
    m, v = a * x[:, 0] + b, s**2
    kl = (0.5 * (v / 0.5 + (m - x[:, 0] / 2) ** 2 / 0.5 - 1 + math.log(0.5 / v))).mean().item()
    assert abs(bias[1] - kl) < 4 * se[1]
    # The bias shrinks with k. Shared pool: the SE of a step is at most the sum of the SEs. The
    # first two steps are large (observed > 10 summed SEs), the last ~3; none may be negative.
    for small, large in zip(ks, ks[1:]):
        assert bias[small] - bias[large] > (4 if large <= 16 else -4) * (se[small] + se[large]), (small, large)
    # At k = 64 the bias is ~ Var(w) / (2 k p(x)^2) (Burda et al. 2015), in closed form here (see
    # tests/test_iwae.py); allow 25% for O(1/k^2) terms plus 4 SE.
    sp2, mu_p = 0.5, x[:, 0] / 2
    c, e, f = 2 / sp2 - 1 / v, 2 * mu_p / sp2 - m / v, 2 * mu_p**2 / sp2 - m**2 / v
    rel_var = s / (sp2 * math.sqrt(c)) * torch.exp((e**2 / c - f) / 2) - 1
    predicted = (rel_var / (2 * 64)).mean().item()
    assert abs(bias[64] - predicted) < 0.25 * predicted + 4 * se[64]


# -- posterior predictive checks -----------------------------------------------------------------------


def model_draws(ae, n: int) -> torch.Tensor:
    """``n`` draws from the linear-Gaussian model itself (not through the code under test)."""
    W, mu, sigma = ae.model.W.detach(), ae.model.mu.detach(), ae.model.sigma.detach()
    z, noise = (torch.randn(n, d, dtype=W.dtype, device=W.device) for d in W.shape[::-1])
    return z @ W.T + mu + sigma * noise


def test_predictive_replicates_have_the_right_shapes(linear_gaussian):
    ae, x = linear_gaussian(13)
    assert posterior_predictive(ae, x, num_replicates=6, batch_size=5, max_elements=40).shape == (6, 13, 5)
    assert prior_predictive(ae, x, num_replicates=3).shape == (3, 13, 5)
    with pytest.raises(ValueError, match="observed sites: \\['x'\\]"):
        posterior_predictive(ae, x, num_replicates=2, site="z")


def test_prior_predictive_has_the_model_covariance(linear_gaussian):
    # x ~ N(mu, C) under the prior predictive: compare the covariance of 20 x 500 draws with C.
    # Entries of a sample covariance from 10^4 draws have sd <= sqrt((C_ii C_jj + C_ij^2) / 10^4);
    # 5 of those over the 25 entries: false failure ~1e-5.
    ae, x = linear_gaussian(500)
    reps = prior_predictive(ae, x, num_replicates=20).reshape(-1, 5)
    C = ae.model.marginal_covariance().detach().cpu()
    sd = ((C.diagonal()[:, None] * C.diagonal()[None, :] + C**2) / len(reps)).sqrt()
    assert ((torch.cov(reps.T) - C).abs() < 5 * sd).all()


def test_predictive_p_values_are_moderate_for_the_true_model_and_extreme_for_shifted_data(linear_gaussian):
    ae, _ = linear_gaussian(1)
    set_exact_guide(ae)
    x = model_draws(ae, 200)
    checks = predictive_checks(ae, x, num_replicates=200)
    assert set(checks.checks) == {"mean", "sd", "sum_mean", "sum_sd"}
    assert checks.checks["mean"].replicated.shape == (200, 5) and checks.checks["sum_mean"].observed.shape == ()
    # Posterior predictive p-values of a correct model concentrate around 0.5 (the observed mean
    # sits closer to the replicates' centre than a fresh replicate does), so an extreme value is
    # much rarer than its nominal 2%; observed range 0.05-0.81 over eight seeds.
    for name in ("mean", "sum_mean"):
        p = checks.checks[name].p_value
        assert ((p > 0.01) & (p < 0.99)).all(), (name, p)
    # Negative control: the same data shifted by +3 in every coordinate. The latents absorb only
    # the part of the shift in the span of W, so the replicates miss the rest (observed p = 0).
    shifted = predictive_checks(ae, x + 3.0, num_replicates=200)
    p = shifted.checks["mean"].p_value
    assert shifted.checks["sum_mean"].p_value < 0.01 and ((p < 0.01) | (p > 0.99)).any()
    d = shifted.to_dict()
    assert d["num_replicates"] == 200 and set(d["statistics"]["mean"]) == {
        "observed", "replicated_mean", "replicated_sd", "p_value"}
