"""Discrete latents: exact (TraceEnum) and score-function (TraceGraph) ELBOs, RWS, and gmvae.

A 1-D mixture has only a discrete latent, so its ELBO is a finite sum that we compute by brute
force: ``z_b ~ Categorical(softmax(logits))``, ``x_b | z_b ~ N(loc[z_b], 1)`` with fixed locs, and
the guide ``q(z_b | x_b) = Categorical(softmax(a x_b + c))``, a family that holds the exact
posterior (equal variances make its logits linear in x).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder
from aezoo.inference import ENGINES
from aezoo.models import MODELS

LOCS = (-4.0, 0.0, 4.0)
WEIGHTS = (0.2, 0.5, 0.3)


class Mixture(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))
        self.register_buffer("locs", torch.tensor(LOCS))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Categorical(logits=self.logits))
            pyro.sample("x", dist.Normal(self.locs[z], 1.0), obs=x)


class MixtureGuide(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([-1.0, 0.5, 1.0]))
        self.c = nn.Parameter(torch.tensor([0.3, 0.0, -0.2]))

    def logits(self, x):
        return x[..., None] * self.a + self.c

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", dist.Categorical(logits=self.logits(x)))


def mixture(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.multinomial(torch.tensor(WEIGHTS), n, replacement=True, generator=g)
    x = torch.tensor(LOCS)[z] + torch.randn(n, generator=g)
    return Autoencoder(Mixture(), MixtureGuide(), None, "mixture"), x


def exact_elbo_terms(ae, x):
    """``(B, 3)`` ``log p(x_b, z) - log q(z | x_b)`` for every z, and ``(B, 3)`` q(z | x_b)."""
    log_q = ae.guide.logits(x).log_softmax(-1)
    log_p = ae.model.logits.log_softmax(-1) + dist.Normal(ae.model.locs, 1.0).log_prob(x[:, None])
    return log_p - log_q, log_q.exp()


def test_traceenum_loss_is_the_exact_elbo():
    ae, x = mixture(30)
    terms, q = exact_elbo_terms(ae, x)
    exact = -(q * terms).sum(-1).mean()
    for num_data in (len(x), 1000):  # per datum whatever the plate scale
        loss = ENGINES["svi"](elbo="traceenum").loss(ae, x, num_data=num_data)
        torch.testing.assert_close(loss, exact, atol=1e-5, rtol=0)  # no Monte Carlo: enumeration is exact
    # the gradients are the exact ones too
    grads = torch.autograd.grad(ENGINES["svi"](elbo="traceenum").loss(ae, x, num_data=len(x)), list(ae.parameters()))
    for g, e in zip(grads, torch.autograd.grad(exact, list(ae.parameters()))):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_tracegraph_loss_is_the_elbo_in_expectation():
    ae, x = mixture(30)
    terms, q = exact_elbo_terms(ae, x)
    exact = -(q * terms).sum(-1).mean().item()
    k = 4000
    loss = ENGINES["svi"](elbo="tracegraph", num_particles=k).loss(ae, x, num_data=len(x)).item()
    # The estimate averages K independent particles of mean_b (log p - log q)(x_b, z_b); its
    # variance is sum_b Var_q(b) / B^2 / K, computed exactly. 4 standard errors: false failure ~6e-5.
    var_b = (q * terms**2).sum(-1) - (q * terms).sum(-1) ** 2
    se = math.sqrt(var_b.sum().item() / len(x) ** 2 / k)
    assert abs(loss - exact) < 4 * se
    # trace (analytic_kl=False) is Trace_ELBO, also unbiased with a discrete guide
    loss = ENGINES["svi"](analytic_kl=False, num_particles=k).loss(ae, x, num_data=len(x)).item()
    assert abs(loss - exact) < 4 * se


@pytest.mark.parametrize("fields", [{"name": "rws", "num_particles": 5}, {"name": "svi", "elbo": "traceenum"},
                                    {"name": "svi", "elbo": "tracegraph", "num_particles": 5}],
                         ids=["rws", "svi-traceenum", "svi-tracegraph"])
def test_mixture_weights_are_learned(fields):
    ae, x = mixture(2000, seed=1)
    fields = dict(fields)
    engine = ENGINES[fields.pop("name")](epochs=15, batch_size=200, lr=0.05, progress=False, **fields)
    engine.fit(ae, x)
    weights = ae.model.logits.softmax(-1).detach()
    # Maximum likelihood on n = 2000 draws has standard errors sqrt(w (1 - w) / n) <= 0.011, plus
    # optimisation noise of the last Adam steps (lr 0.05: ~0.01 in the weights); 0.04 is ~3.5 of
    # those combined errors.
    torch.testing.assert_close(weights, torch.tensor(WEIGHTS), atol=0.04, rtol=0)


def test_gmvae_default_svi_and_iwae_do_not_apply(tiny):
    ae, (x,) = tiny("gmvae", n=8)
    for engine in (ENGINES["svi"](), ENGINES["iwae"]()):
        with pytest.raises(ValueError, match="does not apply"):
            engine.check(ae, x)


@pytest.mark.parametrize("elbo", ["traceenum", "tracegraph"])
def test_gmvae_svi_contract(elbo, tiny, engine):
    # The contract matrix runs the default svi (TraceMeanField_ELBO), which does not apply to a
    # discrete guide site; these are its checks for the discrete ELBOs.
    ae, (x,) = tiny("gmvae", n=20)
    eng = engine("svi", elbo=elbo, num_particles=2)
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    result = eng.fit(ae, x)
    assert result.losses.shape == (1,) and torch.isfinite(result.losses).all()
    assert not [n for n, p in ae.named_parameters() if torch.equal(p.detach(), before[n])]
    losses = []
    for num_data in (len(x), 1000):
        pyro.set_rng_seed(3)
        losses.append(eng.loss(ae, x, num_data=num_data).detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_gmvae_default_engine_enumerates(tiny):
    name, fields = MODELS["gmvae"].DEFAULT_ENGINE
    eng = ENGINES[name](**fields)
    assert eng.elbo == "traceenum"
    ae, (x,) = tiny("gmvae", n=8)
    eng.check(ae, x)


def test_svi_rejects_unsupported_combinations():
    with pytest.raises(ValueError, match="unknown elbo"):
        ENGINES["svi"](elbo="renyi")
    for fields in ({"beta": 2.0}, {"kl_warmup_epochs": 2}, {"penalty": "mmd"}):
        with pytest.raises(ValueError, match="traceenum"):
            ENGINES["svi"](elbo="traceenum", **fields)
    with pytest.raises(ValueError, match="capacity"):
        ENGINES["svi"](elbo="tracegraph", capacity_max=5.0)
