"""The JAX twin of a Pyro model's log joint: exact against Pyro, sampled by NumPyro, and its fallbacks.

The statistical test uses the ESS-based 4-sigma bands of ``tests/test_mcmc.py`` (a correct sampler
fails one coordinate with probability ~6e-5).
"""

from __future__ import annotations

import jax
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from numpyro.infer.util import potential_energy
from pyro.infer.mcmc.util import initialize_model
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from aezoo.inference.jax_twin import jax_twin, twin_or_reason
from aezoo.inference.mcmc import latent_sites
from aezoo.inference.nuts import NUTS
from aezoo.models import bayesian_ae, sgp_bae
from aezoo.nn import MLP
from tests.test_mcmc import assert_matches, ess_of, regression_model, regression_posterior


@pytest.fixture
def float64():
    before, x64 = torch.get_default_dtype(), jax.config.jax_enable_x64
    torch.set_default_dtype(torch.float64)
    jax.config.update("jax_enable_x64", True)
    yield
    torch.set_default_dtype(before)
    jax.config.update("jax_enable_x64", x64)


def potentials(model, data, twin, seed=0, points=3):
    """Pyro's and the twin's potential energy and gradient at ``points`` random unconstrained points."""
    init, pyro_potential, _, _ = initialize_model(model, model_args=data)
    twin_potential = jax.jit(jax.value_and_grad(lambda p: potential_energy(twin.model, (), {}, p)))
    g = torch.Generator().manual_seed(seed)
    for _ in range(points):
        u = {k: torch.randn(v.shape, generator=g, requires_grad=True) for k, v in init.items()}
        energy = pyro_potential(u)
        grads = dict(zip(u, torch.autograd.grad(energy, list(u.values()))))
        value, jgrads = twin_potential({k: v.detach().numpy() for k, v in u.items()})
        yield energy.detach(), torch.tensor(float(value)), grads, {k: torch.tensor(np.asarray(v)) for k, v in
                                                                    jgrads.items()}


def twin_of(model, *data):
    sites = latent_sites(model, *data)
    return jax_twin(model, data, {k: s["value"] for k, s in sites.items()})


@pytest.mark.parametrize("likelihood,activation,bayesian_encoder", [
    ("bernoulli", "tanh", True), ("gaussian", "gated", True), ("bernoulli", "softplus", False),
    ("gaussian", "elu", True)])
def test_twin_log_density_and_gradient_equal_pyro(float64, likelihood, activation, bayesian_encoder):
    cfg = bayesian_ae.Config(x_dim=6, z_dim=2, hidden_dims=(5,), likelihood=likelihood, activation=activation,
                             bayesian_encoder=bayesian_encoder)
    ae = bayesian_ae.build(cfg)
    (x,) = bayesian_ae.example_data(cfg, 7)
    model = ae.model
    twin = twin_of(model, x)
    assert set(twin.sites) == set(latent_sites(model, x))
    for energy, jenergy, grads, jgrads in potentials(model, (x,), twin):
        torch.testing.assert_close(jenergy, energy, rtol=1e-6, atol=1e-6)
        for k in grads:
            torch.testing.assert_close(jgrads[k], grads[k], rtol=1e-6, atol=1e-6)


def test_twin_handles_positive_latents_subsample_scale_and_constant_weights(float64):
    # a HalfNormal noise scale (log transform, Jacobian), num_data != len(x) (plate scale N / B) and a
    # non-Bayesian (constant) bias next to a PyroSample'd weight
    net = MLP(2, (), 3)
    to_pyro_module_(net)
    net[0].weight = PyroSample(dist.Normal(0.0, 1.0).expand([3, 2]).to_event(2))

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z, x):
            sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
            out = self.net(z)
            with pyro.plate("data", 40, subsample=x):
                pyro.sample("x", dist.Normal(out, sigma).to_event(1), obs=x)

    z, x = torch.randn(10, 2), torch.randn(10, 3)
    model = Model()
    twin = twin_of(model, z, x)
    for energy, jenergy, grads, jgrads in potentials(model, (z, x), twin):
        torch.testing.assert_close(jenergy, energy, rtol=1e-6, atol=1e-6)
        for k in grads:
            torch.testing.assert_close(jgrads[k], grads[k], rtol=1e-6, atol=1e-6)


class LinearDecoder(PyroModule):
    """x = z W^T + noise with a PyroSample'd W ~ N(0, 1) and a fixed zero bias: ``regression_model``'s posterior."""

    def __init__(self):
        super().__init__()
        self.decoder = MLP(2, (), 2)
        to_pyro_module_(self.decoder)
        with torch.no_grad():
            self.decoder[0].bias.zero_()
        self.decoder[0].weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))

    def forward(self, z, x):
        out = self.decoder(z)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(out, 0.5).to_event(1), obs=x)


def test_vectorized_twin_recovers_a_conjugate_posterior(capsys):
    torch.manual_seed(1)
    z = torch.randn(30, 2)
    x = z @ torch.tensor([[1.0, -0.5], [0.3, 2.0]]).T + 0.5 * torch.randn(30, 2)
    model = LinearDecoder()
    result = NUTS(num_samples=300, warmup_steps=200, num_chains=2, backend="jax", progress=False).fit(model, z, x)
    assert "Pyro backend" not in capsys.readouterr().err  # the twin ran
    w = result.samples["decoder.0.weight"]
    assert w.shape == (2, 300, 2, 2) and w.dtype == torch.float32
    assert result.stats["diverging"].shape == (2, 300) and result.stats["train_seconds"].shape == (2,)
    assert not torch.equal(w[0], w[1]), "the chains must differ"
    mean, sd = regression_posterior(z, x)
    assert_matches(w, mean.double(), sd.double(), ess_of(result.samples, "decoder.0.weight"))


def test_untwinnable_user_model_prints_one_line_and_samples(capsys):
    torch.manual_seed(1)
    z, x = torch.randn(10, 2), torch.randn(10, 2)
    result = NUTS(num_samples=5, warmup_steps=5, num_chains=2, max_tree_depth=3, backend="jax",
                  progress=False).fit(regression_model, z, x)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no JAX twin" in lines[0] and "Pyro backend" in lines[0], lines
    assert result.samples["w"].shape == (2, 5, 2, 2)


def test_sgp_bae_is_not_twinnable_and_says_which_site():
    # its inducing values u have a custom MVN prior and its code prior is pyro.factor("z_prior", ...) on the
    # encoder output: neither is expressible, and the reason names the first such site
    cfg = sgp_bae.Config(x_dim=6, z_dim=2, hidden_dims=(4,), num_inducing=4)
    ae = sgp_bae.build(cfg)
    data = sgp_bae.example_data(cfg, 5)
    sites = latent_sites(ae.model, *data)
    twin, why = twin_or_reason(ae.model, data, {k: s["value"] for k, s in sites.items()})
    assert twin is None and ("'u'" in why or "'z_prior'" in why), why
