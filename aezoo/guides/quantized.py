"""Quantizing guides: the straight-through estimator and per-dimension scalar codebooks (QLAE).

:func:`straight_through` passes a quantized value forward and the gradient of the continuous one
backward ([1], sec. 3.1; [2]'s ``z_hat``). :class:`ScalarCodebook` is the latent space of [2]: each
latent dimension ``d`` has its own small set of ``V`` learnable scalar values, and a code vector is
the per-dimension nearest value of the encoder's output. :class:`GridUniform` is the uniform
distribution over that grid of ``V^D`` code vectors, the prior that makes the quantized code a
latent of a generative model. :class:`AmortizedScalarQuantized` is the deterministic guide
``q(z | x) = delta(z - quantize(encoder(x)))`` with the ``encode``/``quantize`` pair that the ``vq``
objective term (:mod:`aezoo.inference.terms.vq`) reads.

References:
    1. Neural Discrete Representation Learning, van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937.
    2. Disentanglement via Latent Quantization, Hsu, Dorrell, Whittington, Wu & Finn, arXiv:2305.18378.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import constraints


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """The value of ``z_q`` with the gradient of ``z_e``: ``sg[z_q] + (z_e - sg[z_e])``.

    The value is exactly ``z_q`` (``z_e - sg[z_e]`` is an exact 0), the gradient with respect to
    ``z_e`` is the identity and ``z_q`` (e.g. a codebook) gets none, as in [1] and [2]; the codebook
    learns from the ``vq`` term instead. Shapes: any, ``z_q`` of ``z_e``'s shape.
    """
    return z_q.detach() + (z_e - z_e.detach())


def nearest_scalar(z_e: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Quantize each dimension of ``z_e`` to its nearest value of that dimension's codebook.

    Args:
        z_e: continuous codes ``(..., D)``.
        values: ``(D, V)``, row ``d`` the scalar codebook of dimension ``d``.

    Returns:
        ``z_q`` ``(..., D)`` (differentiable in ``values``, not in ``z_e``) and the indices ``(..., D)``
        int64; a tie goes to the lower index.

    Raises:
        ValueError: ``z_e``'s last dim is not ``D``.
    """
    if values.dim() != 2 or z_e.shape[-1] != values.shape[0]:
        raise ValueError(f"expected codes of shape (..., {values.shape[0]}) for a codebook of shape "
                         f"{tuple(values.shape)}, got {tuple(z_e.shape)}")
    codes = (z_e.detach().unsqueeze(-1) - values.detach()).abs().argmin(-1)  # (..., D)
    table = values.expand(*z_e.shape[:-1], *values.shape)  # (..., D, V)
    return table.gather(-1, codes.unsqueeze(-1)).squeeze(-1), codes


class _OnGrid(constraints.Constraint):
    """Vectors ``(..., D)`` whose entry ``d`` is one of ``values[d]`` (to float rounding): a discrete support."""

    is_discrete = True
    event_dim = 1

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.values = values

    def check(self, value: Tensor) -> Tensor:
        close = torch.isclose(value.unsqueeze(-1), self.values, rtol=1e-6, atol=1e-7).any(-1)
        return close.all(-1)


class GridUniform(TorchDistribution):
    """The uniform distribution over the grid ``values[0] x ... x values[D-1]`` of code vectors.

    Each dimension takes one of its ``V`` values with probability ``1 / V``, independently, so
    ``log p(z) = -D log V`` on the grid (``-inf`` off it) and samples are code vectors. Event shape
    ``(D,)``; batch shape ``batch_shape``.

    Args:
        values: ``(D, V)`` scalar codebooks (detached: the density does not depend on them).
        batch_shape: the batch shape.
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, values: Tensor, batch_shape: torch.Size | tuple = (), validate_args=None) -> None:
        self.values = values.detach()
        super().__init__(torch.Size(batch_shape), self.values.shape[:1], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return _OnGrid(self.values)

    def expand(self, batch_shape, _instance=None) -> GridUniform:
        return GridUniform(self.values, batch_shape, validate_args=self._validate_args)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        d, v = self.values.shape
        index = torch.randint(v, (*shape, d), device=self.values.device)
        return self.values.expand(*shape, d, v).gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        d, v = self.values.shape
        inside = _OnGrid(self.values).check(value)
        shape = torch.broadcast_shapes(inside.shape, self.batch_shape)
        return torch.where(inside, -d * math.log(v), -math.inf).to(self.values.dtype).expand(shape)


class ScalarCodebook(nn.Module):
    """Per-dimension scalar codebooks ``values`` ``(D, V)``, each row initialised evenly spaced in ``[low, high]``.

    Args:
        z_dim: ``D``, the latent dimensions.
        num_values: ``V``, the values per dimension (>= 2).
        low, high: the initial range (``low < high``).

    Raises:
        ValueError: ``num_values < 2`` or ``low >= high``.
    """

    def __init__(self, z_dim: int, num_values: int, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        if num_values < 2 or not low < high:
            raise ValueError(f"a scalar codebook needs at least 2 values in a range low < high, got {num_values} in "
                             f"[{low}, {high}]")
        self.values = nn.Parameter(torch.linspace(low, high, num_values).repeat(z_dim, 1))

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_q, codes)`` of :func:`nearest_scalar` for ``z_e`` ``(..., D)``."""
        return nearest_scalar(z_e, self.values)


class AmortizedScalarQuantized(PyroModule):
    """q(site_b | x_b) = delta(site_b - quantize(encoder(x_b))), passed to the decoder straight through.

    A point mass (``log q = 0``), like :class:`aezoo.guides.AmortizedDelta`: engines that need a
    density over the latent do not apply. ``encode`` and ``quantize`` are what the ``vq`` term reads.

    Args:
        site: the latent site, e.g. ``"z"``.
        encoder: network ``(..., D_x) -> (..., D)``.
        codebook: the :class:`ScalarCodebook` (shared with the model's prior).
    """

    def __init__(self, site: str, encoder: nn.Module, codebook: ScalarCodebook) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder
        self.codebook = codebook

    def encode(self, x: Tensor) -> Tensor:
        """The continuous code ``z_e`` ``(B, D)``."""
        return self.encoder(x)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``z_q`` ``(B, D)`` (differentiable in the codebook) and the value indices ``(B, D)``."""
        return self.codebook(z_e)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        z_e = self.encode(x)
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, dist.Delta(straight_through(z_e, self.quantize(z_e)[0])).to_event(1))
