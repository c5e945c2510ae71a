"""Gradient Origin Network (GON): no encoder; the latent is the gradient of log p(x | z0) at the origin.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide (variational GON, the default): g_b = grad_{z0} log p(x_b | z0) at z0 = 0 ``(B, D_z)``, through the
model's own decoder, then q(z_b | x_b) = N(mu(g_b), diag sigma(g_b)^2) with one linear head ``D_z -> 2 D_z``.

The gradient is taken with ``create_graph=True``, so the ELBO's gradient reaches the decoder also
through the inner step (the decoder learns to make its own gradient informative, [1] eq. 3). The guide
holds the model as a shared submodule (as ``vq_vae`` shares its codebook): ``parameters()`` lists each
decoder weight once, under ``model.``. ``variational=False`` is the plain GON of [1]: the point mass
q(z_b | x_b) = delta(z_b - g_b), i.e. ``z = -grad L`` for the loss ``L = -log p(x | z)`` of [1]; train it with
``svi`` and ``beta=0`` (the reconstruction ``log p(x | g(x))`` of [1], the latent terms dropped); with it
``iwae``/``rws`` do not apply. [1] uses SIREN/conv decoders; here the VAE's MLP (or conv) decoder.
:func:`parameter_counts` compares the parameters with a VAE of the same decoder ([1]'s comparison).

References:
    1. Gradient Origin Networks, Bond-Taylor & Willcocks, arXiv:2007.02798.
    2. Auto-Encoding Variational Bayes, Kingma & Welling, arXiv:1312.6114.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.guides import loc_scale
from aezoo.models import vae
from aezoo.models.vae import example_data


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` (its encoder fields unused) and ``variational``."""

    variational: bool = True  # False: the plain GON's point mass at the gradient

    def __post_init__(self) -> None:
        super().__post_init__()
        self.no_flow("gon")


def origin_gradient(model: vae.Model, x: Tensor, create_graph: bool | None = None) -> Tensor:
    """``grad_{z0} log p(x_b | z0)`` at ``z0 = 0``, ``(B, D_z)``, for ``x`` ``(B, D_x)``.

    Args:
        model: the model whose ``x_dist`` is p(x | z).
        create_graph: keep the graph of the gradient (to differentiate through it); default: when
            gradients are enabled. The gradient itself is computed even under ``torch.no_grad``.
    """
    create = torch.is_grad_enabled() if create_graph is None else create_graph
    with torch.enable_grad():
        z0 = x.new_zeros(len(x), model.cfg.z_dim, requires_grad=True)
        log_p = model.x_dist(z0).log_prob(x).sum()  # data are independent: the sum's gradient is per datum
        (grad,) = torch.autograd.grad(log_p, z0, create_graph=create)
    return grad


class Guide(PyroModule):
    """q(z | x) from the gradient at the origin through the shared model; see the module docstring."""

    def __init__(self, model: vae.Model, variational: bool = True) -> None:
        super().__init__()
        self.model = model
        self.variational = variational
        if variational:
            self.heads = nn.Linear(model.cfg.z_dim, 2 * model.cfg.z_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor] | Tensor:
        """The mean and standard deviation ``(B, D_z)`` each (variational), or the code ``(B, D_z)`` (plain)."""
        grad = origin_gradient(self.model, x)
        return loc_scale(self.heads(grad)) if self.variational else grad

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            if self.variational:
                return pyro.sample("z", dist.Normal(*self.encode(x)).to_event(1))
            return pyro.sample("z", dist.Delta(self.encode(x)).to_event(1))


def build(cfg: Config = Config()) -> Autoencoder:
    """The VAE's model and a gradient-origin guide sharing its decoder (no encoder network)."""
    model = vae.Model(cfg)
    return Autoencoder(model, Guide(model, cfg.variational), cfg, name=__name__.rsplit(".", 1)[-1])


def parameter_counts(cfg: Config = Config()) -> dict[str, int]:
    """Parameters of this GON and of a VAE with the same decoder (and its encoder), as in [1]'s comparison."""
    vae_cfg = vae.Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(vae.Config)})
    return {"gon": sum(p.numel() for p in build(cfg).parameters()),
            "vae": sum(p.numel() for p in vae.build(vae_cfg).parameters())}


__all__ = ["Config", "build", "example_data", "origin_gradient", "parameter_counts"]
