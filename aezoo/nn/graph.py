"""Graph convolution (Kipf & Welling): the symmetric normalised adjacency and a batched GCN, dense or sparse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aezoo.nn import _activation


def normalized_adjacency(a: torch.Tensor) -> torch.Tensor:
    """The symmetric normalisation ``D^-1/2 (A + I) D^-1/2`` of Kipf & Welling's GCN, ``D`` the degrees of ``A + I``.

    Args:
        a: adjacency ``(..., V, V)``, dense (any leading dims) or a ``torch.sparse`` COO tensor ``(V, V)`` or
            ``(B, V, V)``; weights are kept (0/1 for a plain graph).

    Returns:
        The normalised adjacency, dense or sparse as ``a`` was.

    References:
        1. Semi-Supervised Classification with Graph Convolutional Networks, Kipf & Welling, arXiv:1609.02907.
    """
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"an adjacency must be square (..., V, V), got {tuple(a.shape)}")
    if not a.is_sparse:
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        d = a.sum(-1).rsqrt()
        return d.unsqueeze(-1) * a * d.unsqueeze(-2)
    n, lead = a.shape[-1], a.shape[:-2]
    loops = torch.cartesian_prod(*(torch.arange(s, device=a.device) for s in (*lead, n))).reshape(-1, len(lead) + 1)
    a = a.coalesce()
    index = torch.cat([a.indices(), torch.cat([loops, loops[:, -1:]], 1).T], 1)
    values = torch.cat([a.values(), a.values().new_ones(len(loops))])
    a = torch.sparse_coo_tensor(index, values, a.shape, check_invariants=False).coalesce()
    d = torch.sparse.sum(a, -1).to_dense().rsqrt()
    index, values = a.indices(), a.values()
    batch = tuple(index[:-2])
    return torch.sparse_coo_tensor(index, values * d[(*batch, index[-2])] * d[(*batch, index[-1])], a.shape,
                                   check_invariants=False)


def propagate(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``a @ h`` for an adjacency ``a`` ``(..., V, V)`` and node states ``h`` ``(..., V, H)``.

    A sparse ``a`` is ``(V, V)`` (any leading dims of ``h``) or ``(B, V, V)`` (``h`` ``(B, V, H)`` or ``(V, H)``).
    """
    if not a.is_sparse:
        return a @ h
    if a.dim() == 3:
        return torch.bmm(a, h.expand(a.shape[0], *h.shape[-2:]))
    flat = h.movedim(-2, 0).reshape(h.shape[-2], -1)  # (V, ... H)
    return (a @ flat).reshape(h.shape[-2], *h.shape[:-2], h.shape[-1]).movedim(0, -2)


class GCN(nn.Module):
    """A graph convolutional network ``H_{l+1} = act(A_hat H_l W_l)``, linear (no activation) at the last layer.

    With one hidden layer and ``out_dim = 2 D_z`` this is the encoder of Kipf & Welling's VGAE: the
    mean and log-sigma heads share the first layer, their two weight matrices are the halves of the last one.
    No biases, as in the paper.

    Args:
        in_dim: node feature width ``F`` (``V`` for identity features).
        hidden_dims: widths of the hidden layers, e.g. ``(32,)``.
        out_dim: output width per node.
        activation: a key of :data:`ACTIVATIONS` (ReLU in the paper).

    Shapes: ``forward(h, a_hat)`` with node features ``h`` ``(..., V, F)`` and the normalised adjacency
    ``a_hat`` ``(..., V, V)`` (dense, or sparse ``(V, V)`` / ``(B, V, V)``; see :func:`normalized_adjacency`)
    gives ``(..., V, out_dim)``; ``h=None`` stands for the identity features ``I_V``.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu") -> None:
        super().__init__()
        sizes = [in_dim, *hidden_dims, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = _activation(activation)()

    def forward(self, h: torch.Tensor | None, a_hat: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = propagate(a_hat, layer.weight.T if h is None else layer(h))  # I_V W = W: no V x V identity
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h
