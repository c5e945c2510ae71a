"""Vector quantization: a codebook with nearest-entry lookup and EMA updates, and priors over code grids.

"Neural Discrete Representation Learning" (van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937)
maps each encoder output ``z_e`` ``(..., D)`` to the nearest of ``K`` codebook entries ``e_k`` and
passes gradients straight through (:func:`aezoo.guides.quantized.straight_through`). The model's
prior over the quantized grid is :class:`QuantizedPrior`: a distribution over codebook vectors whose
probabilities are those of a :class:`GridPrior` over the indices (uniform, or a learned PixelCNN), so
with a point-mass guide the ELBO is ``log p(x | k(x)) + log p(k(x))``, a lower bound on log p(x)
(q(k | x) is one-hot, zero entropy).

References:
    1. Neural Discrete Representation Learning, van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937.
    2. Pixel Recurrent Neural Networks, van den Oord, Kalchbrenner & Kavukcuoglu, arXiv:1601.06759.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn

from aezoo.nn import PixelCNN


def nearest(z_e: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook entry (squared Euclidean distance; ties go to the lower index).

    Args:
        z_e: ``(..., D)``. codebook: ``(K, D)``.

    Returns:
        ``(...)`` int64 in ``[0, K)``.
    """
    flat = z_e.reshape(-1, z_e.shape[-1])
    dist2 = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(-1)
    return dist2.argmin(-1).reshape(z_e.shape[:-1])


def usage(counts: Tensor) -> dict[str, float]:
    """Codebook usage from a histogram ``(K,)`` of assignments: perplexity ``exp(H(p))`` and dead codes.

    ``p = counts / counts.sum()``; the perplexity is ``K`` when every code is used equally and 1 when one
    code takes everything; a dead code has count 0.

    Raises:
        ValueError: a histogram that is not 1-d, has negative entries or sums to 0.
    """
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"usage needs a 1-d histogram of counts with a positive total, got {tuple(counts.shape)}")
    p = counts.double() / counts.sum()
    entropy = -(p * p.clamp_min(1e-300).log()).sum()
    return {"perplexity": entropy.exp().item(), "dead_codes": int((counts == 0).sum()), "num_codes": len(counts)}


class VectorQuantizer(nn.Module):
    """``K`` codebook entries ``e_k`` ``(K, D)``: nearest-entry quantization, optionally learned by EMA.

    With ``ema`` the codebook is no gradient parameter (``requires_grad=False``); :meth:`ema_update`
    moves it after each training batch as in [1]'s appendix (Sonnet's ``VectorQuantizerEMA``), with
    ``n_i`` the batch's assignments to entry ``i`` and ``s_i`` the sum of their ``z_e``::

        N_i <- decay N_i + (1 - decay) n_i          m_i <- decay m_i + (1 - decay) s_i
        N~_i = (N_i + eps) / (n + K eps) * n        e_i = m_i / N~_i      (n = sum_i N_i, Laplace smoothing)

    The running statistics start at ``N_i = 1``, ``m_i = e_i`` (each entry has seen itself once), so an
    entry no datum picks decays towards zero instead of dividing by zero.

    ``restart_threshold > 0`` (not in [1]) restarts dead entries after each EMA step: every entry whose
    ``N_i`` fell below it is set to a random ``z_e`` of the batch, with ``N_i = 1``, ``m_i = e_i`` (the
    random restarts of "Jukebox: A Generative Model for Music", Dhariwal et al., arXiv:2005.00341).

    Args:
        num_codes: ``K``. code_dim: ``D``. ema: learn the codebook by EMA. decay, epsilon, restart_threshold:
            as above.

    Raises:
        ValueError: a decay outside (0, 1), a non-positive epsilon, a negative threshold or one without ``ema``.
    """

    def __init__(self, num_codes: int, code_dim: int, ema: bool = False, decay: float = 0.99,
                 epsilon: float = 1e-5, restart_threshold: float = 0.0) -> None:
        super().__init__()
        if not (0 < decay < 1 and epsilon > 0):
            raise ValueError(f"the EMA decay must lie in (0, 1) and epsilon be positive, got {decay}, {epsilon}")
        if restart_threshold < 0 or (restart_threshold > 0 and not ema):
            raise ValueError(f"restart_threshold must be >= 0 and applies with ema=True only, got {restart_threshold}")
        self.ema, self.decay, self.epsilon, self.restart_threshold = ema, decay, epsilon, restart_threshold
        init = torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes)  # Sonnet's VQ-VAE init
        self.codebook = nn.Parameter(init, requires_grad=not ema)
        if ema:
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", init.clone())

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_q, codes)``: the nearest entries ``(..., D)`` (differentiable in the codebook) and indices ``(...)``."""
        codes = nearest(z_e.detach(), self.codebook.detach())
        return self.codebook[codes], codes

    @torch.no_grad()
    def ema_update(self, z_e: Tensor, codes: Tensor) -> None:
        """One EMA step of the codebook on a batch ``z_e`` ``(..., D)`` assigned to ``codes`` ``(...)`` (see above)."""
        k = self.codebook.shape[0]
        flat, idx = z_e.detach().reshape(-1, z_e.shape[-1]), codes.reshape(-1)
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + k * self.epsilon) * n
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(-1))
        dead = self.cluster_size < self.restart_threshold
        if dead.any():
            picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
            self.codebook[dead], self.embed_sum[dead], self.cluster_size[dead] = picks, picks, 1.0


class GridPrior(nn.Module):
    """p(k) over grids of code indices ``(H, W)`` in ``[0, K)``: uniform until fitted, then a PixelCNN.

    The network (:class:`aezoo.nn.PixelCNN`) is built at once but its parameters have
    ``requires_grad=False``: the first stage (the ``svi`` engine) never trains it and sees the uniform
    prior, ``K^-(H W)``. :func:`aezoo.inference.code_prior.fit_prior` trains it on the frozen encoder's codes
    and sets the buffer :attr:`fitted`, which the state dict saves, so a loaded model keeps its prior.

    Args:
        num_codes: ``K``. grid: ``(H, W)``. channels, layers: the PixelCNN's.
    """

    def __init__(self, num_codes: int, grid: tuple[int, int], channels: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.num_codes, self.grid = num_codes, tuple(grid)
        self.net = PixelCNN(num_codes, channels, layers).requires_grad_(False)
        self.register_buffer("fitted", torch.tensor(False))

    def log_prob(self, codes: Tensor) -> Tensor:
        """``log p(k)`` ``(...)`` in nats of grids ``codes`` ``(..., H, W)``."""
        if not self.fitted:
            return self.net.embed.weight.new_full(codes.shape[:-2], -math.prod(self.grid) * math.log(self.num_codes))
        logits = self.net(codes).log_softmax(-1)
        return logits.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum((-1, -2))

    @torch.no_grad()
    def sample(self, shape: torch.Size, device: torch.device | None = None) -> Tensor:
        """Grids ``(*shape, H, W)`` drawn in raster order (ancestral sampling; ``H W`` network passes when fitted)."""
        size = (*shape, *self.grid)
        if not self.fitted:
            return torch.randint(self.num_codes, size, device=device)
        codes = torch.zeros(size, dtype=torch.long, device=device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                logits = self.net(codes)[..., i, j, :]
                codes[..., i, j] = torch.distributions.Categorical(logits=logits).sample()
        return codes


class _OnCodebook(constraints.Constraint):
    """Flat grids ``(..., L D)`` whose every ``D``-vector is (to rounding) a codebook entry: a discrete set."""

    is_discrete = True
    event_dim = 1

    def __init__(self, codebook: Tensor) -> None:
        self.codebook = codebook
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        value = value.reshape(*value.shape[:-1], -1, self.codebook.shape[-1])
        gap = (value - self.codebook[nearest(value, self.codebook)]).abs().amax((-1, -2))
        return gap <= 1e-4 * (1 + self.codebook.abs().max())


class QuantizedPrior(TorchDistribution):
    """The distribution of ``z = e_k`` for a grid ``k ~ prior``, flattened: ``log p(z) = log p(k(z))``.

    A value is the grid of entries ``(H, W, D)`` flattened to ``(H W D,)`` (row-major), the event shape,
    so that ``z`` is a vector latent as the zoo's diagnostics expect. ``k(z)`` is found by :func:`nearest`,
    exact on the codebook (the support, a discrete set of ``K^(H W)`` grids). ``rsample`` is not offered:
    gradients reach the codebook through the guide, not the prior.

    Args:
        codebook: ``(K, D)``. prior: the :class:`GridPrior`. batch_shape: e.g. ``(B,)``.
    """

    arg_constraints: dict = {}

    def __init__(self, codebook: Tensor, prior: GridPrior, batch_shape: torch.Size = torch.Size(),
                 validate_args: bool | None = None) -> None:
        self.codebook, self.prior = codebook, prior
        super().__init__(torch.Size(batch_shape), torch.Size((math.prod(prior.grid) * codebook.shape[-1],)),
                         validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return _OnCodebook(self.codebook)

    def expand(self, batch_shape, _instance=None) -> QuantizedPrior:
        return QuantizedPrior(self.codebook, self.prior, torch.Size(batch_shape), self._validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        codes = nearest(value.reshape(*value.shape[:-1], *self.prior.grid, -1), self.codebook)
        return self.prior.log_prob(codes).expand(torch.broadcast_shapes(codes.shape[:-2], self.batch_shape))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        codes = self.prior.sample(torch.Size(sample_shape) + self.batch_shape, self.codebook.device)
        return self.codebook.detach()[codes].flatten(-3)
