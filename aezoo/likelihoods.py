"""Observation likelihoods p(x | decoder output) and the checks that guard them.

The zoo's image models share three likelihoods for ``x`` of shape ``(..., B, D_x)``:

- ``bernoulli``: binary pixels, ``logits`` from the decoder.
- ``continuous_bernoulli``: pixels in [0, 1] ("The continuous Bernoulli: fixing a pervasive
  error in variational autoencoders", Loaiza-Ganem & Cunningham, arXiv:1907.06845).
- ``gaussian``: real values, decoder mean and a learned per-dimension scale.

Graph models (``vgae``, ``gae``) observe an adjacency ``(..., B, V, V)`` with :class:`InnerProductGraph`,
Bernoulli edges with logits ``z_i . z_j``, checked by :func:`check_adjacency`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
REWEIGHTS = ("none", "paper")  # InnerProductGraph: the likelihood itself, or Kipf & Welling's weighted loss


def x_dist(likelihood: str, out: Tensor, scale: Tensor | None = None, mask: Tensor | None = None,
           event_dims: int = 1) -> dist.Distribution:
    """The distribution of ``x`` given the decoder output.

    Args:
        likelihood: one of :data:`LIKELIHOODS`.
        out: decoder output ``(..., B, D_x)`` (or ``(..., B, T, D_x)``): logits (Bernoulli kinds)
            or mean (Gaussian).
        scale: ``(D_x,)`` standard deviation, used by ``gaussian`` only.
        mask: bool, ``x``'s shape, True where an entry counts; elsewhere its log density is 0. None: all count.
        event_dims: the trailing dims of ``out`` that form one datum (1 for vectors, 2 for sequences).

    Returns:
        A distribution with event shape ``out.shape[-event_dims:]``.
    """
    if likelihood == "bernoulli":
        base = dist.Bernoulli(logits=out)
    elif likelihood == "continuous_bernoulli":
        base = dist.ContinuousBernoulli(logits=out)
    elif likelihood == "gaussian":
        base = dist.Normal(out, scale)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    return (base if mask is None else base.mask(mask)).to_event(event_dims)


def check_labels(y: Tensor, num_classes: int, model: str, unlabelled: bool = False) -> None:
    """``ValueError`` unless ``y`` is ``(B,)`` integer labels in ``[0, num_classes)`` (or -1 when ``unlabelled``)."""
    low = -1 if unlabelled else 0
    if y.dim() != 1 or y.is_floating_point() or ((y < low) | (y >= num_classes)).any():
        extra = ", or -1 for unlabelled data" if unlabelled else ""
        raise ValueError(f"{model} labels 'y' must be integers in [0, {num_classes}) of shape (B,){extra}; got "
                         f"{y.dtype} {tuple(y.shape)}; renumber the classes or set model.num_classes")


def check_mask(mask: Tensor | None, x: Tensor) -> None:
    """``ValueError`` unless ``mask`` is None or bool of ``x``'s shape."""
    if mask is not None and (mask.shape != x.shape or mask.dtype != torch.bool):
        raise ValueError(f"the mask must be bool of the data's shape {tuple(x.shape)}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")


def check_x(x: Tensor, x_dim: int, likelihood: str) -> None:
    """Raise a clear error when ``x`` cannot be data for this likelihood.

    Args:
        x: data ``(B, D_x)``.
        x_dim: the model's ``D_x``.
        likelihood: one of :data:`LIKELIHOODS`.

    Raises:
        ValueError: wrong shape, NaN/inf values, non-binary data under ``bernoulli`` or values
            outside [0, 1] under ``continuous_bernoulli``.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if x.dim() != 2 or x.shape[-1] != x_dim:
        raise ValueError(
            f"expected data of shape (B, {x_dim}), got {tuple(x.shape)}; flatten images to vectors "
            f"or set model.x_dim={x.shape[-1] if x.dim() else '?'}"
        )
    # one pass over the data when they are fine: the likelihood's support test also fails on NaN/inf
    if likelihood == "bernoulli":
        fine = ((x == 0) | (x == 1)).all()
    elif likelihood == "continuous_bernoulli":
        fine = ((x >= 0) & (x <= 1)).all()
    else:
        fine = torch.isfinite(x).all()
    if bool(fine):
        return
    if not torch.isfinite(x).all():
        raise ValueError("data contain NaN or infinite values; clean or impute them before fitting")
    if likelihood == "bernoulli":
        raise ValueError(
            "the Bernoulli likelihood needs binary data (0/1), but the data have other values; "
            "binarize them (--binarize dynamic or static) or choose "
            "model.likelihood=continuous_bernoulli or gaussian"
        )
    if likelihood == "continuous_bernoulli":
        raise ValueError("the continuous Bernoulli likelihood needs data in [0, 1]; rescale the data")


class InnerProductGraph(TorchDistribution):
    """Undirected graphs with independent Bernoulli edges, ``p(A | Z) = prod_{i<j} Bern(A_ij | sigmoid(z_i . z_j))``.

    The inner-product decoder of "Variational Graph Auto-Encoders" (Kipf & Welling, arXiv:1611.07308).
    A value is a symmetric 0/1 adjacency ``(..., B, V, V)``; each unordered pair counts once (the upper
    triangle) and the diagonal never.

    Args:
        z: node embeddings ``(..., B, V, D)``; batch shape ``(..., B)``, event shape ``(V, V)``.
        mask: bool ``(B, V, V)`` or ``(V, V)``, the node pairs that count (read on the upper triangle); None: all.
        reweight: ``"none"``: the log-likelihood. ``"paper"``: the paper's weighted cross-entropy, edges
            weighted by ``pos_weight = n_non_edges / n_edges`` and every pair by ``norm = n_pairs / (2 n_non_edges)``
            (per graph, over the counted pairs); then ``log_prob`` is no longer a normalised log-density.
        negatives: 0: every counted pair (exact). ``m > 0``: all edges plus ``m`` uniformly drawn pairs per edge
            (per graph, with replacement), the non-edges among them weighted ``n_pairs / draws``: an unbiased,
            random estimate of the sum, which costs ``O(E m D)`` instead of ``O(V^2 D)``.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 2)

    def __init__(self, z: Tensor, mask: Tensor | None = None, reweight: str = "none", negatives: int = 0,
                 validate_args=None) -> None:
        if reweight not in REWEIGHTS:
            raise ValueError(f"unknown reweight {reweight!r}; choose one of {REWEIGHTS}")
        self.z, self.reweight, self.negatives = z, reweight, negatives
        v = z.shape[-2]
        upper = torch.ones(v, v, dtype=torch.bool, device=z.device).triu(1)
        self.pairs = upper if mask is None else upper & mask
        super().__init__(z.shape[:-2], torch.Size((v, v)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "InnerProductGraph":
        z = self.z.expand(*batch_shape, *self.z.shape[-2:])
        return InnerProductGraph(z, self.pairs, self.reweight, self.negatives, validate_args=False)

    @property
    def logits(self) -> Tensor:
        """``z z^T`` ``(..., B, V, V)``."""
        return self.z @ self.z.transpose(-1, -2)

    @property
    def mean(self) -> Tensor:
        """Edge probabilities ``(..., B, V, V)``: symmetric (those of the upper triangle), 0 on the diagonal."""
        upper = torch.sigmoid(self.logits).triu(1)
        return upper + upper.transpose(-1, -2)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            a = torch.bernoulli(torch.sigmoid(self.logits).expand(*sample_shape, *self.batch_shape, *self.event_shape))
            a = a.triu(1)
            return a + a.transpose(-1, -2)

    def weights(self, edges: Tensor) -> tuple[Tensor, Tensor]:
        """Per-graph weights ``(B,)`` of the edge and non-edge terms given the counted edges ``(B, V, V)``."""
        n_pos = edges.sum((-1, -2)).to(self.z.dtype)
        if self.reweight == "none":
            return torch.ones_like(n_pos), torch.ones_like(n_pos)
        n_neg = self.pairs.expand_as(edges).sum((-1, -2)).to(n_pos) - n_pos
        norm = (n_pos + n_neg) / (2 * n_neg.clamp(min=1))
        return norm * n_neg / n_pos.clamp(min=1), norm

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        edges = self.pairs & (value > 0.5)
        w_pos, w_neg = self.weights(edges)
        if not self.negatives:
            logits = self.logits
            terms = (w_pos[..., None, None] * edges * F.logsigmoid(logits)
                     + w_neg[..., None, None] * (self.pairs & ~edges) * F.logsigmoid(-logits))
            return terms.sum((-1, -2))
        return self._sampled(edges, w_pos, w_neg)

    def _sampled(self, edges: Tensor, w_pos: Tensor, w_neg: Tensor) -> Tensor:
        """The negative-sampling estimate of :meth:`log_prob` (see ``negatives``)."""
        z, v = self.z, self.z.shape[-2]
        b, i, j = edges.nonzero(as_tuple=True)
        out = z.new_zeros(z.shape[:-2]).index_add(-1, b, w_pos[b] * F.logsigmoid(_dot(z, b, i, j)))
        draws = self.negatives * edges.sum((-1, -2)).clamp(min=1)  # (B,)
        g = torch.repeat_interleave(torch.arange(len(draws), device=z.device), draws)
        i = torch.randint(v, g.shape, device=z.device)
        j = torch.randint(v - 1, g.shape, device=z.device)
        i, j = torch.minimum(i, j + (j >= i)), torch.maximum(i, j + (j >= i))  # a uniform unordered pair
        keep = (self.pairs.expand_as(edges)[g, i, j] & ~edges[g, i, j]).to(z.dtype)
        scale = w_neg[g] * keep * (v * (v - 1) / 2) / draws[g]
        return out.index_add(-1, g, scale * F.logsigmoid(-_dot(z, g, i, j)))


def _dot(z: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``z_{b,i} . z_{b,j}`` ``(..., P)`` for index vectors ``(P,)`` into ``z`` ``(..., B, V, D)``."""
    return (z[..., b, i, :] * z[..., b, j, :]).sum(-1)


def check_adjacency(x: Tensor, num_nodes: int, name: str = "the adjacency") -> None:
    """``ValueError`` unless ``x`` is a finite, binary, symmetric adjacency ``(B, V, V)`` with ``V = num_nodes``."""
    if x.dim() != 3 or x.shape[-2:] != (num_nodes, num_nodes):
        raise ValueError(f"expected {name} of shape (B, {num_nodes}, {num_nodes}) (B graphs of {num_nodes} nodes), "
                         f"got {tuple(x.shape)}; set model.num_nodes to the number of nodes")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must be binary (0/1 edges)")
    if not torch.equal(x, x.transpose(-1, -2)):
        raise ValueError(f"{name} must be symmetric (an undirected graph); symmetrise it, e.g. max(A, A^T)")
