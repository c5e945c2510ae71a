"""Figures of a run: loss curve, reconstructions and samples (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def loss_curve(losses: Tensor, path: str | Path, label: str = "training loss") -> Path:
    """Plot ``(E,)`` per-epoch losses (nats per datum) to ``path``."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(1, len(losses) + 1), losses.tolist(), marker="o" if len(losses) < 30 else None)
    ax.set(xlabel="epoch", ylabel="nats per datum", title=label)
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
    fig, axes = plt.subplots(len(rows), n, figsize=(min(1.1 * n * min(aspect, 4), 16), 1.2 * len(rows)), squeeze=False)
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


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
