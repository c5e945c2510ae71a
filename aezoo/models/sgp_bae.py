"""SGP-BAE: a fully Bayesian autoencoder whose sampled codes get a sparse-GP prior over a covariate.

Generative story and target (after [1]; every latent that SGHMC moves is global)::

    theta_enc, theta_dec ~ N(0, s^2 / fan_in) per weight, N(0, s^2) per bias   (PyroSample, ``bayesian_mlp``)
    ell ~ LogNormal(log lengthscale, h), sigma^2 ~ LogNormal(log variance, h)  kernel hyper-parameters, ()
    S ~ N(grid, r^2)                                                           inducing inputs (M, D_c)
    u[:, l] ~ N(0, K_SS + jitter I)  per latent channel l                      inducing values (M, D_z)
    z_n = mu(x_n) + sd(x_n) * eps_n,  eps_n ~ N(0, I)                          z: (B, D_z), q(z | x; theta_enc)
    factor "z_prior":   log N(z_n | K_nS K_SS^-1 u, (k_nn - q_nn + noise) I)   in the "data" plate
    factor "z_entropy": -log q(z_n | x_n; theta_enc)                            in the "data" plate
    x_n | z_n, theta_dec ~ p(x | decoder(z_n; theta_dec))                       x: (B, D_x); c: (B,) or (B, D_c)

The code is a fresh draw from the stochastic encoder at every model call (a reparameterised
sample, so gradients reach the encoder weights); its sparse-GP density and the encoder's entropy
enter the joint, so each datum contributes a one-sample estimate of its ELBO
``E_q[log p(x_n | z) + log p(z | u, c_n) - log q(z | x_n)]`` and ``sghmc`` samples
``(theta, ell, sigma^2, S, u)`` from ``p(theta, ell, sigma^2, S, u) exp(sum_n ELBO_n)`` with minibatches
(scaled by ``N / B``), as [1] samples decoder weights, inducing points and kernel hyper-parameters
jointly with SGHMC. The kernel is :mod:`pyro.contrib.gp.kernels` (``periodic`` with period
``covariate_range[1] - [0]``, or ``rbf``) with ``PyroSample`` priors on its length scale and variance.

``Config(code_entropy=False)`` drops the ``-log q`` term: the target is then the joint density at
the drawn code, which the chain raises by shrinking ``q``'s sd towards ``min_code_scale`` (codes
nearly deterministic, close to the previous, deterministic-code version of this model). Measured on
300 rotated-MNIST 3s (``z_dim = 2``, hidden 32, 8 inducing points, SGHMC lr 0.03, batch 100): with
the entropy term the chain collapses (1500 + 30 x 5 steps: the codes ignore ``x``, distance ratio of
near-angle to other test pairs 0.94, length scale 0.01, test log p -224 nats; the same with the sd
started near 0.05); without it (800 + 20 x 5 steps) the codes follow the angle (ratio 0.55, length
scale 0.27, log p -193). KL warm-up, which rescues VAEs from
such collapse, has no counterpart in the ``sghmc`` engine.

Differs from [1]: [1]'s encoder is an *implicit* network ``z = f(x, eps; phi)`` whose weights are
optimised by amortised SGHMC (trained to follow SGHMC moves of ``z``); here the encoder is a
Gaussian ``q(z | x)`` whose weights are sampled with the rest (the engine moves global sites
only, and an explicit ``q`` gives the entropy term), and the GP conditional is FITC's
(independent given ``u``) rather than [1]'s full sparse-GP conditional over a minibatch.

Guide: ``AutoNormal`` over every global site (used by ``svi``; MCMC engines ignore it). ``hmc`` and ``nuts``
do not apply (``Model.stochastic_potential``): the model's log density is a one-sample estimate.

References:
    1. Fully Bayesian Autoencoders with Latent Sparse Gaussian Processes, Tran, Shahbaba, Mandt &
       Filippone, ICML 2023, arXiv:2302.04534.
    2. Model Selection for Bayesian Autoencoders, Tran, Rossi, Milios, Michiardi, Bonilla &
       Filippone, arXiv:2106.06245.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.models.bayesian_ae import _draws, bayesian_mlp, with_weight_guide
from aezoo.nn import MLP
from aezoo.priors import SparseGPPrior, check_sparse_gp_config

DEFAULT_ENGINE = ("sghmc", {})

COVARIATES = (Covariate("c", "continuous", required=True, doc="the GP input per datum, (B,), e.g. an angle"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    z_dim: int = 4
    hidden_dims: tuple[int, ...] = (64,)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    prior_scale: float = 1.0  # s: weight sd s / sqrt(fan_in), bias sd s
    gaussian_scale: float = 0.1  # observation sd under the Gaussian likelihood
    kernel: str = "periodic"  # one of aezoo.priors.KERNELS; periodic has period covariate_range[1] - [0]
    lengthscale: float = 1.0  # prior median of the length scale
    variance: float = 1.0  # prior median of the kernel variance
    hyper_scale: float = 0.5  # h: sd of log length scale and log variance
    num_inducing: int = 16  # per covariate dimension: M = num_inducing ** covariate_dim
    inducing_scale: float = 0.2  # r: sd of each inducing input around its grid point
    covariate_dim: int = 1  # D_c
    covariate_range: tuple[float, float] = (0.0, 2 * math.pi)
    jitter: float = 1e-4  # added to K_SS's diagonal
    noise: float = 0.1  # per-datum code variance added to the conditional variance
    min_code_scale: float = 1e-3  # floor on the encoder's sd
    code_scale_shift: float = 0.0  # the encoder's sd is softplus(raw - shift) + min_code_scale (3: starts near 0.05)
    code_entropy: bool = True  # add -log q(z | x) (the per-datum ELBO); False: the joint density at the drawn code

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if min(self.prior_scale, self.hyper_scale, self.inducing_scale, self.min_code_scale) <= 0:
            raise ValueError("prior_scale, hyper_scale, inducing_scale and min_code_scale must be positive")
        check_sparse_gp_config(self)


class Model(PyroModule):
    """p(theta, ell, sigma^2, S, u) prod_n exp(ELBO_n); see the module docstring."""

    stochastic_potential = True  # each call draws fresh codes: hmc / nuts do not apply (sghmc, svi do)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        prior = SparseGPPrior.from_config(cfg)
        grid = prior.inducing.clone()
        kern, h = prior.kernel, cfg.hyper_scale
        kern.lengthscale = PyroSample(dist.LogNormal(math.log(cfg.lengthscale), h))
        kern.variance = PyroSample(dist.LogNormal(math.log(cfg.variance), h))
        kern.requires_grad_(False)  # contrib.gp keeps unused "*_map_unconstrained" parameters for its MAP mode
        del prior.inducing  # the buffer becomes a sampled site
        prior.inducing = PyroSample(dist.Normal(grid, cfg.inducing_scale).to_event(2))
        self.prior = prior
        self.encoder = bayesian_mlp(MLP(cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation), cfg.prior_scale)
        self.decoder = bayesian_mlp(MLP(cfg.z_dim, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation), cfg.prior_scale)

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> None:
        c = self.prior.covariates(x, c)
        tril = self.u_tril()  # draws ell, sigma^2 and S here, outside the data plate
        u = pyro.sample("u", self.prior.u_dist(tril))
        q = self.code_dist(x)  # the encoder weights are drawn here
        z = q.rsample()  # (B, D_z): a fresh code per call
        out = self.decoder(z)  # the decoder weights are drawn here
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.factor("z_prior", self.prior.z_dist(u, c, tril).log_prob(z))
            if self.cfg.code_entropy:
                pyro.factor("z_entropy", -q.log_prob(z))
            pyro.sample("x", self.x_dist(out), obs=x)

    def u_tril(self) -> Tensor:
        """Cholesky factor ``(M, M)`` of ``K_SS + jitter I`` at the current (sampled) kernel and inducing inputs;
        the jitter grows tenfold (up to 1e4 x, relative to the kernel variance) where float32 needs it."""
        S = self.prior.inducing
        K = self.prior.kernel(S)
        eye = torch.eye(len(S), dtype=S.dtype, device=S.device)
        jitter = self.cfg.jitter
        for _ in range(5):
            tril, info = torch.linalg.cholesky_ex(K + jitter * eye)
            if not info.any():
                return tril
            jitter *= 10 * K.diagonal().mean().detach().clamp_min(1.0).item()
        raise ValueError(f"K_SS is not positive definite even with jitter {jitter:.3g}; raise Config.jitter")

    def code_dist(self, x: Tensor) -> dist.Distribution:
        """The stochastic encoder q(z | x) for ``x`` ``(B, D_x)``: batch ``(B,)``, event ``(D_z,)``."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw - self.cfg.code_scale_shift) + self.cfg.min_code_scale).to_event(1)

    def x_dist(self, out: Tensor) -> dist.Distribution:
        """p(x | decoder output ``out`` ``(..., B, D_x)``); event shape ``(D_x,)``."""
        scale = out.new_tensor(self.cfg.gaussian_scale) if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale)

    def validate(self, x: Tensor, c: Tensor | None = None) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        self.prior.check_covariates(x, c)


def build(cfg: Config = Config()) -> Autoencoder:
    """SGP-BAE ``D_x -> hidden_dims -> 2 D_z | D_z -> mirrored -> D_x`` with an ``AutoNormal`` guide."""
    return with_weight_guide(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def gp_site_names(model: Model) -> dict[str, str]:
    """Site names of the sampled GP quantities: ``{"lengthscale": ..., "variance": ..., "inducing": ...}``
    (prefixed by the module path, e.g. ``model.prior.inducing`` inside an ``Autoencoder``)."""
    kern = model.prior.kernel._pyro_name
    return {"lengthscale": f"{kern}.lengthscale", "variance": f"{kern}.variance",
            "inducing": f"{model.prior._pyro_name}.inducing"}


def prior_medians(model: Model) -> dict[str, Tensor]:
    """The GP sites at their prior medians: length scale and variance ``()``, inducing inputs ``(M, D_c)``."""
    names, cfg = gp_site_names(model), model.cfg
    grid = model.prior._pyro_samples["inducing"].base_dist.loc
    return {names["lengthscale"]: torch.tensor(cfg.lengthscale), names["variance"]: torch.tensor(cfg.variance),
            names["inducing"]: grid}


@torch.no_grad()
def latent_codes(ae: Autoencoder, samples: dict[str, Tensor], x: Tensor, num_draws: int | None = 100) -> Tensor:
    """Encoder means E[z | x] ``(B, D_z)`` averaged over posterior draws of the encoder weights."""
    codes = []
    for draw in _draws(samples, num_draws):
        with poutine.condition(data=draw):
            codes.append(ae.model.code_dist(x).mean)
    return torch.stack(codes).mean(0)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, c)``: covariates uniform over the range ``(n,)`` (or ``(n, D_c)``), codes from the sparse-GP
    prior at the prior medians of the kernel and inducing inputs, and ``x`` ``(n, D_x)`` from the
    likelihood under prior decoder weights (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad(), poutine.condition(data=prior_medians(model)):
            c, z = model.prior.example_codes(n)
            return model.x_dist(model.decoder(z)).sample(), c
