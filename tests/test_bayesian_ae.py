"""The Bayesian autoencoder sampled by SGHMC: uncertainty off the data, anomaly scores, its sampler."""

from __future__ import annotations

import pyro
import pytest
import torch

from aezoo.data import load
from aezoo.inference import ENGINES
from aezoo.models import bayesian_ae


@pytest.fixture(scope="module")
def fitted():
    """One SGHMC fit shared by the module (built, like every test's modules, with module-local params)."""
    with pyro.settings.context(module_local_params=True):
        torch.manual_seed(0)
        data = load("digits", "static", train_size=300, test_size=100)
        ae = bayesian_ae.build(bayesian_ae.Config(x_dim=64, z_dim=2, hidden_dims=(16,)))
        engine = ENGINES["sghmc"](num_samples=40, warmup_steps=600, thin=5, num_chains=2, batch_size=100,
                                  progress=False)
        return ae, engine.fit(ae, data.train), data


def test_predictive_variance_and_anomaly_score_grow_off_the_data(fitted):
    # Out of distribution: uniform noise images, binarized like the data. The epistemic variance of
    # the predictive mean (across posterior draws) must be larger there, on average over images;
    # the comparison is per image set, with 100 images each, so a small effect would still be stable.
    ae, result, data = fitted
    gen = torch.Generator().manual_seed(1)
    noise = torch.bernoulli(torch.full((100, 64), 0.5), generator=gen)
    _, var_in, log_in = bayesian_ae.predict(ae, result.samples, data.test)
    _, var_out, log_out = bayesian_ae.predict(ae, result.samples, noise)
    assert var_in.shape == (100, 64) and log_in.shape == (100,)
    assert var_out.sum(-1).mean() > 1.5 * var_in.sum(-1).mean()
    score_in = bayesian_ae.anomaly_score(ae, result.samples, data.test)
    score_out = bayesian_ae.anomaly_score(ae, result.samples, noise)
    torch.testing.assert_close(score_in, -log_in)
    # AUROC of the anomaly score (test digits vs noise): the share of pairs ranked correctly.
    auroc = (score_out[:, None] > score_in[None, :]).float().mean()
    assert auroc > 0.95


def test_posterior_predictive_beats_the_prior_predictive(fitted):
    # Sampling moved the weights towards the data: the test log predictive density under posterior
    # draws exceeds the one under prior draws (a large gap: trained vs random networks).
    ae, result, data = fitted
    torch.manual_seed(2)
    posterior_lp = bayesian_ae.predict(ae, result.samples, data.test)[2].mean()
    prior_lp = torch.stack([_log_lik(bayesian_ae.Model(ae.config), data.test) for _ in range(4)]).mean()
    assert posterior_lp > prior_lp + 5.0


def _log_lik(model: bayesian_ae.Model, x: torch.Tensor) -> torch.Tensor:
    """Mean log p(x | x, theta) of one prior draw theta (the model's PyroSample weights sampled once)."""
    from pyro import poutine

    with torch.no_grad():
        tr = poutine.trace(model).get_trace(x)
    return tr.nodes["x"]["fn"].log_prob(x).mean()


def test_latent_mixture_sampler_generates_images(fitted):
    ae, result, data = fitted
    codes = bayesian_ae.latent_codes(ae, result.samples, data.train)
    assert codes.shape == (300, 2) and torch.isfinite(codes).all()
    mixture = bayesian_ae.fit_latent_sampler(codes, num_components=5)
    images = bayesian_ae.generate(ae, result.samples, mixture, 20)
    assert images.shape == (20, 64) and ((images >= 0) & (images <= 1)).all()
    # The generated images resemble the data more than uniform noise does, by pixel mean.
    assert (images.mean(0) - data.train.mean(0)).abs().mean() < (0.5 - data.train.mean(0)).abs().mean()
