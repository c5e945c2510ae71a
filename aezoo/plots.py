"""Figures of a run and its diagnostics, drawn on matplotlib ``Figure`` objects and saved as PNG.

No pyplot: the global backend is left alone, so notebooks keep their inline figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor


def loss_curve(losses: Tensor, path: str | Path, label: str = "training loss",
               validation: Tensor | None = None) -> Path:
    """Plot ``(E,)`` per-epoch losses (nats per datum), and the validation losses if given, to ``path``."""
    fig, ax = _figure(figsize=(5, 3.2))
    marker = "o" if len(losses) < 30 else None
    ax.plot(range(1, len(losses) + 1), losses.tolist(), marker=marker, label="training")
    if validation is not None and len(validation):
        ax.plot(range(1, len(validation) + 1), validation.tolist(), marker=marker, label="validation")
        ax.legend()
    ax.set(xlabel="epoch", ylabel="nats per datum", title=label)
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs only
    ax.grid(alpha=0.3)
    return _save(fig, path)


def image_grid(
    rows: list[tuple[str, Tensor]], path: str | Path, image_shape: tuple[int, int] | None, title: str = ""
) -> Path:
    """Draw labelled rows of images; each tensor is ``(n, D_x)`` reshaped to ``image_shape``.

    Images are drawn on a [0, 1] grey scale; vectors without an image shape are drawn as
    ``(1, D_x)`` strips on their own colour scale.
    """
    n = max(len(t) for _, t in rows)
    shape = image_shape or (1, rows[0][1].shape[-1])
    aspect = shape[1] / shape[0]
    fig, axes = _figure(len(rows), n, figsize=(min(1.1 * n * min(aspect, 4), 16), 1.2 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(images):
                limits = {"vmin": 0, "vmax": 1} if image_shape else {}
                ax.imshow(images[c].detach().cpu().reshape(shape).numpy(), cmap="gray", aspect="auto", **limits)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def samples_grid(images: Tensor, path: str | Path, image_shape: tuple[int, int] | None, title: str) -> Path:
    """A square grid of ``(n, D_x)`` images."""
    side = math.ceil(math.sqrt(len(images)))
    rows = [("", images[i : i + side]) for i in range(0, len(images), side)]
    return image_grid(rows, path, image_shape, title)


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5, 3.2), squeeze: bool = True):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never half a figure
    fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    tmp.replace(path)
    return path


def latent_scatter(codes: Tensor, labels: Tensor | None, path: str | Path, title: str = "latent space") -> Path:
    """Scatter the guide means ``(N, D_z)`` in 2-D (PCA when ``D_z > 2``), coloured by label."""
    codes = codes.detach().cpu().double()
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        codes, axes_label = centred @ v[:2].T, ("PC 1", "PC 2")
    else:
        axes_label = ("z 1", "z 2") if codes.shape[1] == 2 else ("z 1", "")
        codes = codes if codes.shape[1] == 2 else torch.cat([codes, torch.zeros_like(codes)], 1)
    fig, ax = _figure(figsize=(5, 4.2))
    colour = {} if labels is None else {"c": labels.cpu().numpy(), "cmap": "tab10"}
    points = ax.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), s=4, alpha=0.7, **colour)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set(xlabel=axes_label[0], ylabel=axes_label[1], title=title)
    return _save(fig, path)


def latent_traversal(images: Tensor, units: list[int], values: Tensor, path: str | Path,
                     image_shape: tuple[int, int] | None) -> Path:
    """Decoded images ``(U, V, D_x)``: row r moves latent unit ``units[r]`` through ``values`` ``(V,)``."""
    rows = [(f"unit {u}", row) for u, row in zip(units, images)]
    title = "latent traversal: one unit moves through " + ", ".join(f"{v:.1f}" for v in values.tolist())
    return image_grid(rows, path, image_shape, title)


def bar(values: Tensor, path: str | Path, title: str, ylabel: str, threshold: float | None = None) -> Path:
    """A bar per entry of ``values`` ``(D,)``, with an optional horizontal threshold line."""
    fig, ax = _figure(figsize=(max(4, 0.18 * len(values) + 2), 3.2))
    ax.bar(range(len(values)), values.detach().cpu().numpy())
    if threshold is not None:
        ax.axhline(threshold, color="C3", lw=1, ls="--", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set(xlabel="latent unit", ylabel=ylabel, title=title)
    return _save(fig, path)


def histogram(values: Tensor, path: str | Path, title: str, xlabel: str, threshold: float | None = None) -> Path:
    """A histogram of ``values`` ``(N,)`` with an optional vertical threshold line."""
    fig, ax = _figure(figsize=(5, 3.2))
    ax.hist(values.detach().cpu().numpy(), bins=40)
    if threshold is not None:
        ax.axvline(threshold, color="C3", lw=1, ls="--", label=f"{threshold:g}")
        ax.legend()
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    return _save(fig, path)


def bounds_vs_k(ks: list[int], means: list[float], errors: list[float], path: str | Path,
                log_likelihood: float | None = None) -> Path:
    """Average IWAE_k bounds (nats per datum) against ``k`` (log axis), with error bars."""
    fig, ax = _figure(figsize=(5, 3.2))
    ax.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label="IWAE_k (k=1: ELBO)")
    if log_likelihood is not None:
        ax.axhline(log_likelihood, color="C2", ls="--", label="IS log p(x)")
    ax.set(xscale="log", xlabel="k", ylabel="nats per datum", title="bounds against k")
    ax.legend()
    return _save(fig, path)
