"""Denoising autoencoder: a deterministic encoder that sees a Gaussian-corrupted copy of x in training.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z); unused by the default objective (beta = 0)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Gaussian (continuous data) or Bernoulli (MNIST)

Guide: q(z_b | x_b) = delta(z_b - encoder(x~_b)), ``x~_b = x_b + sigma eps_b``, ``eps_b ~ N(0, I)``
drawn from torch's RNG (seeded by ``pyro.set_rng_seed``) during a fit (the loop's progress is set,
:func:`aezoo.progress.current_epoch`, and the module is in training mode) and ``x~_b = x_b``
otherwise: evaluations, diagnostics and a saved-and-loaded run see the clean reconstruction.

The corruption C(x~ | x) of [1] is the guide's: it is a data augmentation of the encoder's input,
not a latent of the model, so model and guide keep the one latent ``z``. The default objective
(``DEFAULT_ENGINE``, ``svi`` with ``beta = 0``) is the reconstruction ``-log p(x | z = encoder(x~))``
per datum, [1]'s denoising criterion. The reconstruction function is ``r(x) = E[x | decoder(encoder(x))]``
(clean input); with Gaussian corruption of scale ``sigma`` and the squared error (Gaussian
likelihood) the optimum is ``r(x) = E[x | x~ = x]``, so ``(r(x) - x) / sigma^2`` estimates the score
``grad log p_sigma(x)`` of the data density smoothed by the noise, which tends to
``grad log p(x)`` as ``sigma -> 0`` [2]. :mod:`aezoo.diagnostics.score_sampler` samples from it.
``hmc``/``nuts``/``sghmc`` sample the N(0, I)-prior model's p(z | x) (the pair is then a generative
model, as for ``wae``); ``iwae``/``rws`` do not apply (point mass).

The MLP is the VAE's (784-200-200-50 tanh), not the single sigmoid layer of [1].

References:
    1. Extracting and Composing Robust Features with Denoising Autoencoders, Vincent, Larochelle,
       Bengio & Manzagol, ICML 2008.
    2. What Regularized Auto-Encoders Learn from the Data Generating Distribution, Alain & Bengio,
       arXiv:1211.4246.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from aezoo.checks import positive
from aezoo.core import Autoencoder
from aezoo.guides import AmortizedDelta
from aezoo.models import vae
from aezoo.models.vae import example_data
from aezoo.progress import current_epoch

DEFAULT_ENGINE = ("svi", {"beta": 0.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with the corruption's scale.

    Attributes:
        noise_scale: ``sigma`` (> 0), the standard deviation of the Gaussian corruption of x.
    """

    noise_scale: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("noise_scale", self.noise_scale)


class CorruptingDelta(AmortizedDelta):
    """``delta(z - encoder(x + sigma eps))`` during a fit (in training mode), ``delta(z - encoder(x))`` otherwise.

    Args:
        site: the latent site, e.g. ``"z"``. encoder: ``(..., D_x) -> (..., D_z)``.
        noise_scale: ``sigma`` of the corruption.
    """

    def __init__(self, site: str, encoder: nn.Module, noise_scale: float) -> None:
        super().__init__(site, encoder)
        self.noise_scale = noise_scale

    def corrupt(self, x: Tensor) -> Tensor:
        """``x + sigma eps`` ``(B, D_x)``, ``eps`` from torch's global RNG."""
        return x + self.noise_scale * torch.randn_like(x)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            seen = self.corrupt(x) if self.training and current_epoch() is not None else x
            return pyro.sample(self.site, dist.Delta(self.encode(seen)).to_event(1))


def build(cfg: Config = Config()) -> Autoencoder:
    """The VAE's model with the corrupting deterministic encoder ``D_x -> hidden_dims -> D_z``."""
    cfg.no_flow("dae")
    return Autoencoder(vae.Model(cfg), CorruptingDelta("z", cfg.encoder(cfg.z_dim), cfg.noise_scale), cfg, name="dae")


__all__ = ["Config", "CorruptingDelta", "DEFAULT_ENGINE", "build", "example_data"]
