"""Latent traversals over continuous units and categorical classes: decoded image grids and their figure.

From the guide's code of one datum (the mean of each continuous site, the most probable class of
each one-hot site), one latent coordinate changes at a time and the model decodes the mean of
p(x | z): each unit of a continuous site moves through ``values`` (prior standard deviations, as the
suite's ``latent_traversal.png``), each categorical variable of a one-hot site takes each of its
``K`` classes ("Learning Disentangled Joint Continuous and Discrete Representations", Dupont,
arXiv:1804.00104, Fig. 3). The diagnostic runs on the exact (unrelaxed) sites, in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo import plots
from aezoo.core import Autoencoder, rows
from aezoo.diagnostics._traces import evaluating
from aezoo.diagnostics.likelihood import decode
from aezoo.guides.categorical import is_one_hot


def traversals(ae: Autoencoder, *data: Tensor, values: Tensor | None = None) -> dict[str, Tensor]:
    """Decoded traversals of every latent site of ``ae`` around the code of the first datum of ``data``.

    Args:
        ae: an autoencoder whose latent sites are continuous ``(B, D)`` or one-hot ``(B, D_c, K)``.
        data: ``x`` ``(N, D_x)`` then covariates; only the first datum is used.
        values: ``(V,)`` values each continuous unit takes (default ``-3..3`` in 7 steps).

    Returns:
        Site -> images: ``(D, V, D_x)`` for a continuous site (row ``d`` moves unit ``d``), ``(D_c, K, D_x)``
        for a one-hot site (row ``d`` sets variable ``d`` to each class), CPU tensors.

    Raises:
        ValueError: a latent site of another shape.
    """
    values = torch.linspace(-3, 3, 7) if values is None else values
    with evaluating(ae) as device:
        first = tuple(None if d is None else d.to(device) for d in rows(ae.prepare(*data), slice(0, 1)))
        sites = prune_subsample_sites(poutine.trace(ae.guide).get_trace(*first)).nodes
        base = {n: _centre(s["fn"]) for n, s in sites.items() if s["type"] == "sample" and not s["is_observed"]}
        grids = {}
        for name, code in base.items():
            if code.dim() not in (2, 3) or len(code) != 1:
                raise ValueError(f"traversals need latent sites (B, D) or one-hot (B, D_c, K); {name!r} is "
                                 f"{tuple(code.shape)}")
            moved = _moves(code[0], values.to(code))  # (R, C, *site shape)
            flat = moved.flatten(0, 1)
            latents = {n: flat if n == name else c.expand(len(flat), *c.shape[1:]) for n, c in base.items()}
            like = rows(first, torch.zeros(len(flat), dtype=torch.long, device=device))
            grids[name] = decode(ae, latents, *like).reshape(*moved.shape[:2], -1).cpu()
    return grids


def _centre(fn) -> Tensor:
    """The guide's code: the mean of a continuous site, the one-hot mode of a one-hot site."""
    if is_one_hot(fn):
        probs = fn.mean
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs)
    return fn.mean


def _moves(code: Tensor, values: Tensor) -> Tensor:
    """``(R, C, *code.shape)``: a continuous code ``(D,)`` with unit r set to ``values[c]``, or a one-hot
    code ``(D_c, K)`` with variable r set to class c."""
    if code.dim() == 1:
        grid = code.repeat(len(code), len(values), 1)
        grid[torch.arange(len(code)), :, torch.arange(len(code))] = values
        return grid
    d_c, k = code.shape
    grid = code.repeat(d_c, k, 1, 1)
    eye = torch.eye(k, dtype=code.dtype, device=code.device)
    for r in range(d_c):
        grid[r, :, r] = eye
    return grid


def traversal_figure(grids: dict[str, Tensor], path: str | Path, image_shape: tuple[int, int] | None,
                     values: Tensor | None = None) -> Path:
    """Draw :func:`traversals` output as one figure: a row per continuous unit, then a row per categorical variable."""
    values = torch.linspace(-3, 3, 7) if values is None else values
    labelled = [(f"{site} {r}", row) for site, grid in grids.items() for r, row in enumerate(grid)]
    title = ("traversals: continuous units through " + ", ".join(f"{v:.1f}" for v in values.tolist())
             + "; categorical variables through their classes")
    return plots.image_grid(labelled, path, image_shape, title)
