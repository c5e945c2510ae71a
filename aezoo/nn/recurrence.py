"""Diagonal linear recurrences for sequence models: a chunked parallel scan and the :class:`LinearRecurrence` layer."""

from __future__ import annotations

import torch
from torch import nn


def _prefix_scan(lam: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele scan of ``h_t = lam * h_{t-1} + b_t`` from 0: ``b_t += lam^k b_{t-k}``, ``k = 1, 2, 4, ...``."""
    T, power, offset = b.shape[-2], lam, 1
    while offset < T:
        b = b + power * torch.nn.functional.pad(b, (0, 0, offset, 0))[..., :T, :]
        power, offset = power * power, 2 * offset
    return b


def linear_scan(lam: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, chunk: int = 32) -> torch.Tensor:
    """All states of ``h_t = lam * h_{t-1} + b_t`` at once: a chunked parallel scan, no loop over time.

    Time is cut into chunks of ``chunk`` steps. Within a chunk the states are one batched matrix
    product with the lower-triangular ``W[s, t, u] = lam_s^(t - u)`` (``u <= t``); the chunks' end
    states are then combined by a parallel prefix scan (``ceil(log2(T / chunk))`` vectorised steps)
    and carried in with ``lam^(t + 1)``: the chunked form of "Transformers are SSMs" (Dao & Gu,
    arXiv:2405.21060) combined with the associative scan of S5 (Smith, Warrington & Linderman,
    arXiv:2208.04933). Only non-negative powers of ``lam`` appear (no division),
    so it is as accurate as the sequential loop.

    Args:
        lam: ``(S,)`` the diagonal of the transition (``|lam| <= 1``).
        b: ``(..., T, S)`` the inputs ``B u_t``.
        h0: ``(..., S)`` the state before the first step, or None for zeros.
        chunk: steps per chunk (>= 1); a speed setting, the result does not depend on it.

    Returns:
        ``(..., T, S)``: ``h_1 .. h_T``.
    """
    T, S = b.shape[-2], b.shape[-1]
    C = max(1, min(chunk, T))
    n = -(-T // C)
    blocks = torch.nn.functional.pad(b, (0, 0, 0, n * C - T)).reshape(*b.shape[:-2], n, C, S)
    k = torch.arange(C, device=b.device)
    lag = k[:, None] - k[None, :]  # (C, C): t - u
    W = torch.where(lag >= 0, lam[:, None, None] ** lag.clamp(min=0).to(lam.dtype), lam.new_zeros(()))  # (S, C, C)
    local = torch.einsum("stu,...nus->...nts", W, blocks)  # each chunk's states from a zero start
    ends = local[..., -1, :]  # (..., n, S)
    if h0 is not None:
        ends = ends + torch.nn.functional.pad((lam**C * h0)[..., None, :], (0, 0, 0, n - 1))
    carried = _prefix_scan(lam**C, ends)  # true state at the end of each chunk
    start = torch.nn.functional.pad(carried[..., :-1, :], (0, 0, 1, 0))  # state before each chunk
    if h0 is not None:
        start = start + torch.nn.functional.pad(h0[..., None, :], (0, 0, 0, n - 1))
    powers = lam ** torch.arange(1, C + 1, dtype=lam.dtype, device=b.device)[:, None]  # (C, S)
    h = local + powers * start[..., None, :]
    return h.reshape(*b.shape[:-2], n * C, S)[..., :T, :]


class LinearRecurrence(nn.Module):
    """A diagonal linear recurrence ``h_t = lam * h_{t-1} + gamma * (B u_t)``, run in parallel or step by step.

    The recurrent core of the linear recurrent unit (LRU) of "Resurrecting Recurrent Neural Networks
    for Long Sequences" (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, arXiv:2303.06349),
    with a real diagonal: ``lam = exp(-exp(nu))`` in (0, 1), initialised with ``lam`` uniform in
    ``[r_min, r_max]``, and the input normalised by ``gamma = sqrt(1 - lam^2)`` so states keep unit
    scale. ``forward(u, parallel=True)`` uses :func:`linear_scan`; ``parallel=False`` the loop; both
    give the same states (to rounding).

    Shapes: ``u`` ``(..., T, in_dim)`` -> ``h`` ``(..., T, state_dim)``.

    Raises:
        ValueError: sizes below 1, ``0 < r_min <= r_max < 1`` violated, or ``u`` of the wrong shape.
    """

    def __init__(self, in_dim: int, state_dim: int, r_min: float = 0.5, r_max: float = 0.99) -> None:
        super().__init__()
        if in_dim < 1 or state_dim < 1:
            raise ValueError(f"in_dim and state_dim must be >= 1, got {in_dim}, {state_dim}")
        if not 0 < r_min <= r_max < 1:
            raise ValueError(f"need 0 < r_min <= r_max < 1, got r_min={r_min}, r_max={r_max}")
        self.in_dim, self.state_dim = in_dim, state_dim
        r = r_min + (r_max - r_min) * torch.rand(state_dim)
        self.nu_log = nn.Parameter((-r.log()).log())
        self.B = nn.Linear(in_dim, state_dim, bias=False)

    @property
    def lam(self) -> torch.Tensor:
        """``(S,)`` the diagonal of the transition, in (0, 1)."""
        return torch.exp(-torch.exp(self.nu_log))

    def forward(self, u: torch.Tensor, h0: torch.Tensor | None = None, parallel: bool = True) -> torch.Tensor:
        """``(..., T, S)`` states for inputs ``u`` ``(..., T, in_dim)`` from ``h0`` ``(..., S)`` (None: zeros)."""
        if u.dim() < 2 or u.shape[-1] != self.in_dim:
            raise ValueError(f"expected inputs of shape (..., T, {self.in_dim}), got {tuple(u.shape)}")
        lam = self.lam
        b = self.B(u) * torch.sqrt(1 - lam**2)
        if parallel:
            return linear_scan(lam, b, h0)
        h = b.new_zeros(b.shape[:-2] + b.shape[-1:]) if h0 is None else h0
        out = []
        for t in range(b.shape[-2]):
            h = lam * h + b[..., t, :]
            out.append(h)
        return torch.stack(out, -2) if out else b
