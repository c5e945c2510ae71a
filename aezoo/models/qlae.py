"""Quantized-latent autoencoder (QLAE): per-dimension scalar codebooks, straight through, high weight decay.

Generative story, for each datum b of the ``"data"`` plate, with ``V`` learnable scalar values
``e_{d,1..V}`` per latent dimension ``d`` (:class:`aezoo.guides.quantized.ScalarCodebook`)::

    z_b ~ Uniform(e_1 x ... x e_D)         z: (B, D_z); each z_bd one of dimension d's V values, log p(z) = -D_z log V
    x_b | z_b ~ p(x | decoder(z_b))        x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - quantize(encoder(x_b))): each dimension of the encoder output
``z_e`` snapped to its nearest value, passed to the decoder with the straight-through gradient.

In Pyro terms the model's prior is :class:`aezoo.guides.quantized.GridUniform` (a discrete
support: MCMC engines do not apply) and the guide a point mass (``log q = 0``: ``iwae``/``rws`` do
not apply), so the ``svi`` loss is ``-log p(x | z_q) + D_z log V`` per datum plus the ``vq`` term:
the codebook ("quantization") and commitment losses ``||sg[z_e] - z_q||^2`` and ``||z_e -
sg[z_q]||^2`` (:mod:`aezoo.inference.terms.vq`), the only gradient the codebook gets. ``aezoo
eval`` reports, as for every point-mass guide, the reconstruction ``log p(x | z_q)`` (nats per
datum), active units and predictive checks; :func:`codebook_usage` counts how often each value is
used, and on ``sprites`` the disentanglement metrics score the codes against the true factors.

Settings of [1] (their code [2]): ``V = 10`` values per dimension, initialised evenly spaced in
``[-0.5, 0.5]`` (``value_range``), ``D_z`` twice the number of factors (10 for dSprites' 5),
AdamW with learning rate 1e-3 and weight decay 0.1 (the shared loop decays every parameter; [2]
exempts biases and the codebook, and clips each update to 1). [1] weights the losses ``BCE + 0.01
(quantization + commitment)`` with the BCE and the two terms *averaged* over pixels and latent
dimensions; here the reconstruction is summed over the ``D_x`` pixels and the ``vq`` term over the
``D_z`` dimensions, so the paper's weights become ``penalty_weight = 0.01 D_x / D_z``: 1.0 in
``DEFAULT_ENGINE`` is that at ``D_x / D_z = 100`` (``sprites``: 1024 / 10; MNIST: 784 / 10 gives
0.78, ``sprites64`` 4.1). Under Adam the codebook weight does not matter (the codebook gets no
other gradient and Adam's step is scale-free); the commitment weight sets the encoder's pull. The
defaults are the zoo's MLP (784-200-200 tanh); ``network="conv"`` gives convolutional nets.

References:
    1. Disentanglement via Latent Quantization, Hsu, Dorrell, Whittington, Wu & Finn, arXiv:2305.18378.
    2. github.com/kylehkhsu/latent_quantization (configs/model_partial/quantized_ae.yaml).
    3. Neural Discrete Representation Learning, van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.guides.quantized import AmortizedScalarQuantized, GridUniform, ScalarCodebook
from aezoo.models import vae

DEFAULT_ENGINE = ("svi", {"penalty": "vq", "penalty_weight": 1.0,
                          "penalty_options": ("beta=1.0", "codebook_weight=1.0"), "optimizer": "adamw",
                          "weight_decay": 0.1})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with the scalar codebooks.

    Attributes:
        z_dim: ``D_z``, the quantized latent dimensions (10: twice dSprites' factors, as in [1]).
        num_values: ``V``, the scalar values per dimension (>= 2).
        value_range: the values start evenly spaced in ``[-value_range, value_range]`` (> 0).
    """

    z_dim: int = 10
    num_values: int = 10
    value_range: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_values < 2:
            raise ValueError(f"num_values must be at least 2 (a one-value codebook carries nothing), got "
                             f"{self.num_values}")
        if not 0 < self.value_range < float("inf"):
            raise ValueError(f"value_range must be positive and finite, got {self.value_range}")

    def codebook(self) -> ScalarCodebook:
        return ScalarCodebook(self.z_dim, self.num_values, -self.value_range, self.value_range)


class Model(vae.Model):
    """p(z) p(x | z) with the uniform prior over the codebook grid; see the module docstring."""

    def __init__(self, cfg: Config, codebook: ScalarCodebook) -> None:
        super().__init__(cfg)
        self.codebook = codebook

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The uniform distribution over the grid of code vectors, event shape ``(D_z,)``."""
        return GridUniform(self.codebook.values)


def build(cfg: Config = Config()) -> Autoencoder:
    """QLAE with the encoder ``D_x -> hidden_dims -> D_z``, the mirrored decoder and one codebook shared by both."""
    cfg.no_flow("qlae")
    codebook = cfg.codebook()
    guide = AmortizedScalarQuantized("z", cfg.encoder(cfg.z_dim), codebook)
    return Autoencoder(Model(cfg, codebook), guide, cfg, name="qlae")


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model: grid codes decoded, fit for the likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg, cfg.codebook())
        with torch.no_grad():
            return (model.x_dist(model.z_dist(torch.empty(0)).sample((n,))).sample(),)


@torch.no_grad()
def codebook_usage(ae: Autoencoder, x: Tensor, batch_size: int = 1000) -> Tensor:
    """How many data use each value: ``(D_z, V)`` int64 counts, each row summing to ``len(x)``.

    A row with one non-zero count is a dimension the encoder does not use (constant code).
    """
    counts = torch.zeros(ae.config.z_dim, ae.config.num_values, dtype=torch.long, device=x.device)
    for chunk in x.split(batch_size):
        codes = ae.guide.quantize(ae.guide.encode(chunk))[1]  # (B, D)
        counts.scatter_add_(1, codes.T, torch.ones_like(codes.T))
    return counts


__all__ = ["Config", "DEFAULT_ENGINE", "build", "codebook_usage", "example_data"]
