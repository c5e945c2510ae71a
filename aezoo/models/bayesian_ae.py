"""Bayesian autoencoder: Gaussian priors on the encoder and decoder weights, sampled by MCMC.

Generative story (as in [1]; weights are global latents, the code is amortized)::

    theta_dec ~ N(0, s^2 / fan_in) per weight, N(0, s^2) per bias   (PyroSample sites)
    theta_enc ~ the same, when bayesian_encoder (else point estimates)
    z_b = encoder(x_b; theta_enc)                                    z: (B, D_z), deterministic
    x_b | x_b, theta ~ p(x | decoder(z_b; theta_dec))                x: (B, D_x)

The likelihood is that of the reconstruction, so ``log p(x | x, theta)`` is a reconstruction
log-likelihood, not a marginal ``log p(x)``. The posterior over ``theta`` is sampled with the
``sghmc`` engine (minibatches; the Bayesian-AE papers' choice) or ``nuts``/``hmc`` (full batch,
small networks); ``svi`` fits the mean-field Gaussian guide (Pyro's ``AutoNormal`` over the
weights, "Bayes by backprop"). After sampling, :func:`predict` gives predictive reconstructions
with their posterior variance, :func:`anomaly_score` the negative posterior predictive density,
and :func:`fit_latent_sampler` + :func:`generate` a generative model: a Gaussian mixture fitted
to the latent codes, as in [1].

Guide: ``AutoNormal`` over every weight site (used by ``svi``; MCMC engines ignore it).

References:
    1. Model Selection for Bayesian Autoencoders, Tran, Rossi, Milios, Michiardi, Bonilla &
       Filippone, arXiv:2106.06245.
    2. Weight Uncertainty in Neural Networks, Blundell, Cornebise, Kavukcuoglu & Wierstra,
       arXiv:1505.05424.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal, init_to_sample
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, flatten_draws
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.nn import MLP

DEFAULT_ENGINE = ("sghmc", {})


@dataclass(frozen=True)
class Config:
    x_dim: int = 64
    z_dim: int = 2
    hidden_dims: tuple[int, ...] = (50,)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    prior_scale: float = 1.0  # s: weight sd s / sqrt(fan_in), bias sd s
    bayesian_encoder: bool = True
    gaussian_scale: float = 0.1  # observation sd under the Gaussian likelihood

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.prior_scale <= 0:
            raise ValueError(f"prior_scale must be positive, got {self.prior_scale}")


def bayesian_mlp(mlp: MLP, prior_scale: float) -> MLP:
    """Turn ``mlp`` in place into a PyroModule whose weights and biases are ``PyroSample`` sites."""
    to_pyro_module_(mlp)
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            fan_in = layer.in_features
            layer.weight = PyroSample(dist.Normal(0.0, prior_scale / math.sqrt(fan_in)).expand(
                [layer.out_features, fan_in]).to_event(2))
            layer.bias = PyroSample(dist.Normal(0.0, prior_scale).expand([layer.out_features]).to_event(1))
    return mlp


class Model(PyroModule):
    """p(theta) p(x | x, theta); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        encoder = MLP(cfg.x_dim, cfg.hidden_dims, cfg.z_dim, cfg.activation)
        self.encoder = bayesian_mlp(encoder, cfg.prior_scale) if cfg.bayesian_encoder else encoder
        self.decoder = bayesian_mlp(MLP(cfg.z_dim, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation), cfg.prior_scale)

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        out = self.decoder(self.encoder(x))  # the weights are drawn here, outside the data plate
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("x", self.x_dist(out), obs=x)

    def x_dist(self, out: Tensor) -> dist.Distribution:
        """p(x | decoder output ``out`` ``(..., B, D_x)``); event shape ``(D_x,)``."""
        scale = out.new_tensor(self.cfg.gaussian_scale) if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


def with_weight_guide(model: PyroModule, cfg, name: str, covariates: tuple = ()) -> Autoencoder:
    """``model`` paired with Pyro's ``AutoNormal`` over its global sites (weights, ...).

    The guide's parameters are created here (one trace on a zero input ``(1, cfg.x_dim)``), so
    ``state_dict`` and ``load`` see them before any fit.
    """
    ae = Autoencoder(model, AutoNormal(model, init_loc_fn=init_to_sample, init_scale=0.01), cfg, name=name,
                     covariates=covariates)
    with torch.no_grad(), poutine.block():
        ae.guide(torch.zeros(1, cfg.x_dim), *(torch.zeros(1) for _ in covariates))
    return ae


def build(cfg: Config = Config()) -> Autoencoder:
    """The Bayesian AE ``D_x -> hidden_dims -> D_z -> mirrored -> D_x`` with an ``AutoNormal`` guide."""
    return with_weight_guide(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from the likelihood at random inputs and prior weights (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            return (model.x_dist(model.decoder(torch.randn(n, cfg.z_dim))).sample(),)


# -- using posterior draws -------------------------------------------------------------------------


def _draws(samples: dict[str, Tensor], num_draws: int | None) -> list[dict[str, Tensor]]:
    """Up to ``num_draws`` draws (evenly spaced over all chains) as site -> value dicts."""
    flat = flatten_draws(samples)
    total = len(next(iter(flat.values())))
    idx = torch.linspace(0, total - 1, min(num_draws or total, total)).long()
    return [{k: v[i] for k, v in flat.items()} for i in idx]


@torch.no_grad()
def predict(ae: Autoencoder, samples: dict[str, Tensor], x: Tensor, num_draws: int | None = 100,
            covariates: tuple = ()):
    """Posterior predictive reconstructions of ``x`` ``(B, D_x)`` under MCMC draws of the weights.

    Args:
        ae: a ``bayesian_ae`` autoencoder.
        samples: site -> ``(C, S, ...)`` draws (``FitResult.samples``).
        x: inputs ``(B, D_x)``.
        num_draws: draws used, evenly spaced over the chains (None: all).
        covariates: the model's covariates for ``x`` (e.g. ``sgp_bae``'s ``c``), in ``ae.covariates`` order.

    Returns:
        ``(mean, variance, log_predictive)``: the mean over draws of the decoder mean ``(B, D_x)``,
        its variance across draws (epistemic uncertainty) ``(B, D_x)``, and the posterior
        predictive log-density ``log (1/S) sum_s p(x | x, theta_s)`` per datum ``(B,)`` in nats.
    """
    means, log_p = [], []
    for draw in _draws(samples, num_draws):
        tr = poutine.trace(poutine.condition(ae.model, data=draw)).get_trace(x, *covariates)
        fn = tr.nodes["x"]["fn"]
        means.append(fn.mean)
        log_p.append(fn.log_prob(x))
    means_t, log_p_t = torch.stack(means), torch.stack(log_p)
    return means_t.mean(0), means_t.var(0, unbiased=False), log_p_t.logsumexp(0) - math.log(len(log_p))


def anomaly_score(ae: Autoencoder, samples: dict[str, Tensor], x: Tensor, num_draws: int | None = 100,
                  covariates: tuple = ()) -> Tensor:
    """``-log p(x | x, data)`` per datum ``(B,)`` in nats: high for inputs unlike the training data."""
    return -predict(ae, samples, x, num_draws, covariates)[2]


@torch.no_grad()
def latent_codes(ae: Autoencoder, samples: dict[str, Tensor], x: Tensor, num_draws: int | None = 100) -> Tensor:
    """Encoder codes of ``x`` averaged over the posterior draws: ``(B, D_z)``."""
    codes = []
    for draw in _draws(samples, num_draws):
        with poutine.condition(data=draw):
            codes.append(ae.model.encoder(x))
    return torch.stack(codes).mean(0)


def fit_latent_sampler(codes: Tensor, num_components: int = 10, seed: int = 0):
    """A Gaussian mixture (scikit-learn) fitted to latent codes ``(N, D_z)``, the generator of [1]."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(num_components, covariance_type="full", random_state=seed).fit(codes.cpu().numpy())


@torch.no_grad()
def generate(ae: Autoencoder, samples: dict[str, Tensor], mixture, n: int, num_draws: int | None = 100) -> Tensor:
    """``n`` new data means ``(n, D_x)``: codes from ``mixture``, decoded under a random posterior draw each."""
    codes, _ = mixture.sample(n)
    z = torch.as_tensor(codes, dtype=torch.get_default_dtype())
    draws = _draws(samples, num_draws)
    which = torch.randint(len(draws), (n,))
    out = torch.empty(n, ae.config.x_dim)
    for i, draw in enumerate(draws):
        rows = (which == i).nonzero().squeeze(-1)
        if len(rows):
            with poutine.condition(data=draw):
                out[rows] = ae.model.x_dist(ae.model.decoder(z[rows])).mean
    return out
