"""Sample-based distances between distributions, the penalties of InfoVAE, WAE, SWAE and DIP-VAE.

Each function works on samples (or guide moments) of one latent, ``(..., n, D)`` with any
leading batch dims (e.g. particles ``K``), and returns one value per leading index. Engines
compose them with a bound (see the ``svi`` engine's ``penalty``).

References:
    1. A Kernel Two-Sample Test, Gretton, Borgwardt, Rasch, Schoelkopf & Smola, JMLR 2012.
    2. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    3. InfoVAE: Information Maximizing Variational Autoencoders, Zhao, Song & Ermon,
       arXiv:1706.02262.
    4. Sliced-Wasserstein Autoencoder: An Embarrassingly Simple Generative Model, Kolouri, Pope,
       Martin & Rohde, arXiv:1804.01947.
    5. Variational Inference of Disentangled Latent Concepts from Unlabeled Observations, Kumar,
       Sattigeri & Balakrishnan, arXiv:1711.00848.
"""

from __future__ import annotations

import torch
from torch import Tensor

KERNELS = ("imq", "rbf")


def kernel(x: Tensor, y: Tensor, kind: str = "imq", scale: float = 1.0) -> Tensor:
    """Gram matrix ``k(x_i, y_j)`` ``(..., n, m)`` for ``x`` ``(..., n, D)`` and ``y`` ``(..., m, D)``.

    With ``C = 2 D scale`` (``scale`` is the prior variance sigma^2, as in [2]):

    * ``imq``, the inverse multiquadric of [2]: ``k(a, b) = C / (C + |a - b|^2)``;
    * ``rbf``, Gaussian: ``k(a, b) = exp(-|a - b|^2 / C)``.
    """
    if kind not in KERNELS:
        raise ValueError(f"unknown kernel {kind!r}; choose one of {KERNELS}")
    if not scale > 0:
        raise ValueError(f"the kernel scale must be positive, got {scale}")
    c = 2.0 * x.shape[-1] * scale
    sq = (x.unsqueeze(-2) - y.unsqueeze(-3)).pow(2).sum(-1)
    return c / (c + sq) if kind == "imq" else torch.exp(-sq / c)


def mmd(x: Tensor, y: Tensor, kernel_name: str = "imq", scale: float = 1.0) -> Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy MMD^2(P, Q) [1, Lemma 6].

    The U-statistic ``1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
    - 2/(n m) sum_{i, j} k(x_i, y_j)``: its expectation is MMD^2, 0 when ``P = Q``, so single
    estimates can be negative.

    Args:
        x: ``(..., n, D)`` draws from P, ``n >= 2``.
        y: ``(..., m, D)`` draws from Q, ``m >= 2``.
        kernel_name: ``"imq"`` or ``"rbf"``, see :func:`kernel`.
        scale: the kernel's sigma^2.

    Returns:
        ``(...)`` estimates.
    """
    n, m = x.shape[-2], y.shape[-2]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least two draws from each side, got {n} and {m}")

    def within(a: Tensor) -> Tensor:
        k = a.shape[-2]
        gram = kernel(a, a, kernel_name, scale)
        return (gram.sum((-2, -1)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)) / (k * (k - 1))

    return within(x) + within(y) - 2.0 * kernel(x, y, kernel_name, scale).mean((-2, -1))


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 50, p: int = 2) -> Tensor:
    """Monte Carlo sliced Wasserstein distance to the power ``p`` between two empirical measures [4].

    ``SW_p^p = E_theta[W_p^p(theta . x, theta . y)]`` with ``theta`` uniform on the unit sphere
    (``num_projections`` draws from the torch RNG); each one-dimensional ``W_p^p`` between equal-size
    empirical measures is the mean of ``|x_(i) - y_(i)|^p`` over sorted projections. For ``D = 1``
    every direction is +-1 and the result is the exact ``W_p^p`` of the two empirical measures.

    Args:
        x: ``(..., n, D)`` draws from P.
        y: ``(..., n, D)`` draws from Q (the same ``n``).
        num_projections: directions ``L``.
        p: the order, ``>= 1``.

    Returns:
        ``(...)`` estimates of ``SW_p^p`` (for ``p = 2``, the penalty of [4]).
    """
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"sliced_wasserstein needs equal sample sizes, got {x.shape[-2]} and {y.shape[-2]}")
    if num_projections < 1 or p < 1:
        raise ValueError(f"need num_projections >= 1 and p >= 1, got {num_projections} and {p}")
    theta = torch.randn(num_projections, x.shape[-1], dtype=x.dtype, device=x.device)
    theta = theta / theta.norm(dim=-1, keepdim=True)
    px, py = (x @ theta.T).sort(-2).values, (y @ theta.T).sort(-2).values  # (..., n, L)
    return (px - py).abs().pow(p).mean((-2, -1))


def dip_covariance_penalty(
    mu: Tensor,
    variant: str = "i",
    lambda_od: float = 1.0,
    lambda_d: float = 10.0,
    cov: Tensor | None = None,
) -> Tensor:
    """DIP-VAE's penalty pushing a latent covariance matrix ``C`` towards the identity [5].

    ``lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2`` where ``C`` is

    * ``"i"``: ``Cov_x[mu(x)]``, the covariance of the guide means over the batch;
    * ``"ii"``: ``E_x[Cov_q(z | x)] + Cov_x[mu(x)]``, the covariance of the aggregate q(z).

    Batch covariances divide by ``B`` (the moments of the batch's empirical distribution). [5]
    suggests ``lambda_d = 10 lambda_od`` for ``"i"`` and ``lambda_d = lambda_od`` for ``"ii"``.

    Args:
        mu: ``(..., B, D)`` guide means.
        variant: ``"i"`` or ``"ii"``.
        lambda_od, lambda_d: off-diagonal and diagonal weights.
        cov: ``(..., B, D, D)`` guide covariances, required for ``"ii"``.

    Returns:
        ``(...)`` penalties.
    """
    centred = mu - mu.mean(-2, keepdim=True)
    c = centred.transpose(-2, -1) @ centred / mu.shape[-2]
    if variant == "ii":
        if cov is None:
            raise ValueError("dip_covariance_penalty variant 'ii' needs the guide covariances cov")
        c = c + cov.mean(-3)
    elif variant != "i":
        raise ValueError(f"unknown DIP variant {variant!r}; choose 'i' or 'ii'")
    diag = c.diagonal(dim1=-2, dim2=-1)
    off = c.pow(2).sum((-2, -1)) - diag.pow(2).sum(-1)
    return lambda_od * off + lambda_d * (diag - 1).pow(2).sum(-1)
