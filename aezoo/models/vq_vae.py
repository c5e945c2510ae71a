"""VQ-VAE: a grid of discrete codes from a K-entry codebook, conv decoder, nearest-entry encoder; learned prior.

Generative story, for each datum b of the ``"data"`` plate, a code grid of ``H x W`` positions
(the image halved ``len(channels)`` times: 7 x 7 for MNIST), codebook ``e`` ``(K, D)``::

    k_b ~ p(k)                          k: (B, H, W) in [0, K); uniform, or a PixelCNN once fitted
    z_b = e[k_b]                        z: (B, H W D), the grid of entries flattened; log p(z) = log p(k)
    x_b | z_b ~ p(x | decoder(z_b))     x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - e[k(x_b)]), ``k(x)`` the nearest entry to each encoder output
``z_e(x)`` ``(B, H, W, D)``, with the straight-through gradient to the encoder [1].

Default objective (``DEFAULT_ENGINE``): ``svi`` with the ``vq`` term of
:mod:`aezoo.inference.terms.vq`, ``-log p(x | z_q) - log p(z_q) + ||sg[z_e] - z_q||^2 + 0.25 ||z_e -
sg[z_q]||^2`` per datum, [1]'s eq. 3 with ``beta = 0.25``; ``log p(z_q) = -H W log K`` is constant while
the prior is uniform. ``ema=True`` learns the codebook by exponential moving averages instead (decay
0.99, Laplace smoothing; [1]'s appendix, :class:`aezoo.guides.codebook.VectorQuantizer`), updated in
the guide's forward in training mode with gradients on only; the term then drops its codebook part.
``restart_threshold`` adds random restarts of dead entries to the EMA (Jukebox, Dhariwal et al.,
arXiv:2005.00341; not in [1]): on MNIST it raised the perplexity tenfold in a short run.

The learned prior of [1] is a second stage: :func:`aezoo.inference.code_prior.fit_prior` trains a
gated PixelCNN [2] over the frozen encoder's code grids. q(k | x) is one-hot (zero entropy), so
``log p(x) >= log p(x | k(x)) + log p(k(x))`` (:func:`bound`), which is also the zoo's ELBO and its
importance estimate (every importance weight equals it); sampling (``aezoo.diagnostics.generate``)
draws grids in raster order and decodes them. ``iwae``, ``rws`` (a point-mass guide) and the MCMC engines (a discrete
latent) do not apply. Encoder: 4x4 stride-2 convolutions with ``channels`` and ReLU, a 3x3 convolution,
a 1x1 convolution to ``D``; the decoder mirrors it (the residual stacks of [1] are left out).

References:
    1. Neural Discrete Representation Learning, van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937.
    2. Conditional Image Generation with PixelCNN Decoders, van den Oord, Kalchbrenner, Vinyals,
       Espeholt, Graves & Kavukcuoglu, arXiv:1606.05328.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes, integer
from aezoo.core import Autoencoder
from aezoo.guides.codebook import GridPrior, QuantizedPrior, VectorQuantizer, usage
from aezoo.guides.quantized import straight_through
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist

DEFAULT_ENGINE = ("svi", {"penalty": "vq", "penalty_weight": 1.0})


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    image_shape: tuple[int, ...] = (28, 28)  # (H, W); each of channels halves it: a 7 x 7 code grid
    channels: tuple[int, ...] = (32, 64)
    code_dim: int = 16  # D
    num_codes: int = 128  # K
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    ema: bool = False  # learn the codebook by EMA (decay, epsilon) instead of the codebook loss
    decay: float = 0.99
    epsilon: float = 1e-5
    restart_threshold: float = 0.0  # > 0 (with ema): restart entries whose EMA count falls below it (not in [1])
    prior_channels: int = 64  # the PixelCNN prior's width and gated blocks
    prior_layers: int = 4

    def __post_init__(self) -> None:
        check_sizes(self)
        integer("prior_channels", self.prior_channels)
        integer("prior_layers", self.prior_layers, minimum=0)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if len(self.image_shape) != 2 or math.prod(self.image_shape) != self.x_dim or not self.channels:
            raise ValueError(f"vq_vae needs image_shape (H, W) with H * W = x_dim = {self.x_dim} and at least one "
                             f"conv channel, got {self.image_shape} and {self.channels}")
        if self.restart_threshold < 0 or (self.restart_threshold > 0 and not self.ema):
            raise ValueError(f"restart_threshold must be >= 0 and applies with ema=True, got {self.restart_threshold}")
        if any(s % 2 ** len(self.channels) for s in self.image_shape):
            raise ValueError(f"vq_vae halves the image {len(self.channels)} times: {self.image_shape} does not divide "
                             f"by {2 ** len(self.channels)}; use fewer channels")

    @property
    def grid(self) -> tuple[int, int]:
        """``(H, W)`` of the code grid."""
        return tuple(s // 2 ** len(self.channels) for s in self.image_shape)


def encoder(cfg: Config) -> nn.Sequential:
    """``(N, 1, H_x, W_x) -> (N, D, H, W)``: stride-2 4x4 convolutions, a 3x3 one, a 1x1 one to ``D``."""
    layers: list[nn.Module] = []
    for a, b in zip((1, *cfg.channels[:-1]), cfg.channels):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    c = cfg.channels[-1]
    return nn.Sequential(*layers, nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, cfg.code_dim, 1))


def decoder(cfg: Config) -> nn.Sequential:
    """``(N, D, H, W) -> (N, 1, H_x, W_x)``: the mirror of :func:`encoder` with transposed convolutions."""
    sizes = (*cfg.channels[::-1], 1)
    layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, sizes[0], 3, padding=1), nn.ReLU()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Model(PyroModule):
    """p(k) p(x | e[k]) with the codebook shared with the guide; see the module docstring."""

    def __init__(self, cfg: Config, quantizer: VectorQuantizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.quantizer = quantizer
        self.prior = GridPrior(cfg.num_codes, cfg.grid, cfg.prior_channels, cfg.prior_layers)
        self.decoder = decoder(cfg)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            pyro.sample("x", self.x_dist(z), obs=x)

    def z_dist(self, x: Tensor) -> QuantizedPrior:
        """The prior over quantized grids, event shape ``(H W D,)`` (flattened ``(H, W, D)``)."""
        return QuantizedPrior(self.quantizer.codebook, self.prior)

    def x_dist(self, z: Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, H W D)``; event shape ``(D_x,)``."""
        grid = z.reshape(-1, *self.cfg.grid, self.cfg.code_dim).permute(0, 3, 1, 2)
        logits = self.decoder(grid).reshape(*z.shape[:-1], self.cfg.x_dim)
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, logits, scale)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


class Guide(PyroModule):
    """q(z | x) = delta(z - e[k(x)]) with the straight-through estimator; see the module docstring.

    ``encode``, ``quantize`` and ``ema`` are what the ``vq`` term reads.
    """

    def __init__(self, cfg: Config, quantizer: VectorQuantizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder(cfg)
        self.quantizer = quantizer
        self.ema = cfg.ema

    def encode(self, x: Tensor) -> Tensor:
        """``z_e`` ``(B, H, W, D)`` of images ``x`` ``(B, D_x)``."""
        return self.encoder(x.reshape(-1, 1, *self.cfg.image_shape)).permute(0, 2, 3, 1)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_q, codes)``: nearest entries ``(B, H, W, D)``, differentiable in the codebook; indices ``(B, H, W)``."""
        return self.quantizer.quantize(z_e)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The code grid ``k(x)`` ``(B, H, W)`` int64."""
        return self.quantize(self.encode(x))[1]

    def forward(self, x: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z_e = self.encode(x)
            z_q, codes = self.quantize(z_e)
            if self.ema and self.training and torch.is_grad_enabled():  # training steps only, not evaluation
                self.quantizer.ema_update(z_e, codes)
            return pyro.sample("z", dist.Delta(straight_through(z_e, z_q).flatten(1), event_dim=1))


def build(cfg: Config = Config()) -> Autoencoder:
    """A VQ-VAE with a uniform prior over codes until :func:`aezoo.inference.code_prior.fit_prior` fits one."""
    quantizer = VectorQuantizer(cfg.num_codes, cfg.code_dim, cfg.ema, cfg.decay, cfg.epsilon, cfg.restart_threshold)
    return Autoencoder(Model(cfg, quantizer), Guide(cfg, quantizer), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` images ``(n, D_x)`` decoded from uniform code grids by a randomly initialised model (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(cfg).model
        with torch.no_grad():
            z = model.z_dist(torch.zeros(())).sample((n,)) * cfg.num_codes  # entries of size ~1, not ~1/K
            return (model.x_dist(z).sample(),)


@torch.no_grad()
def bound(ae: Autoencoder, x: Tensor, batch_size: int = 500) -> Tensor:
    """``(N,)`` nats: ``log p(x | k(x)) + log p(k(x))``, a lower bound on log p(x) (q(k | x) one-hot).

    With the uniform prior ``log p(k) = -H W log K``; after ``fit_prior`` the PixelCNN's. Bits per
    dimension: ``-bound / (D_x ln 2)``.
    """
    was = ae.training
    ae.eval()
    out = []
    for chunk in x.split(batch_size):
        z_q, codes = ae.guide.quantize(ae.guide.encode(chunk))
        out.append(ae.model.x_dist(z_q.flatten(1)).log_prob(chunk) + ae.model.prior.log_prob(codes))
    ae.train(was)
    return torch.cat(out)


@torch.no_grad()
def codebook_usage(ae: Autoencoder, x: Tensor, batch_size: int = 500) -> dict[str, float]:
    """Codebook usage and reconstruction on images ``x`` ``(N, D_x)``.

    Returns:
        ``perplexity`` (``exp`` of the entropy of the average code usage over all positions and images; K at
        most), ``dead_codes`` (entries no position of ``x`` uses), ``num_codes``, ``reconstruction_nll``
        (``-log p(x | k(x))``, nats per image) and ``mse`` (squared error of the decoder's mean, per pixel).
    """
    was = ae.training
    ae.eval()
    counts = torch.zeros(ae.config.num_codes, dtype=torch.long, device=x.device)
    nll = sq = 0.0
    for chunk in x.split(batch_size):
        z_q, codes = ae.guide.quantize(ae.guide.encode(chunk))
        counts += torch.bincount(codes.reshape(-1), minlength=len(counts))
        px = ae.model.x_dist(z_q.flatten(1))
        nll -= px.log_prob(chunk).sum().item()
        sq += (px.mean - chunk).pow(2).sum().item()
    ae.train(was)
    return {**usage(counts), "reconstruction_nll": nll / len(x), "mse": sq / x.numel()}
