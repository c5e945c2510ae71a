"""Sprites: binary images of one shape under known factors, the dSprites recipe rendered offline.

The published dSprites ("dSprites: Disentanglement testing Sprites dataset", Matthey, Higgins,
Hassabis & Lerchner, 2017; used in "beta-VAE", Higgins et al., ICLR 2017) holds every combination
of shape {square, ellipse, heart} x scale (6 values in [0.5, 1]) x orientation (40 values in
[0, 2 pi]) x position x (32 values in [0, 1]) x position y (32) as a 64x64 binary image, 737,280
images. It cannot be downloaded here, so :func:`render` draws the same kind of grid analytically
with torch: each pixel centre ``p`` (the image is the unit square, rows pointing down) is moved
into the sprite's frame, ``q = R(-theta) (p - centre) / (scale * HALF_SIDE)`` (y flipped to point
up), and the pixel is 1 where ``q`` passes the shape's inside test:

- square: ``max(|q_x|, |q_y|) <= 1`` (side ``2 * HALF_SIDE`` at scale 1);
- ellipse: ``(q_x / 1.2)^2 + (q_y / 0.6)^2 <= 1`` (a 2:1 ellipse, the long axis along x at orientation 0);
- heart: ``(u^2 + v^2 - 1)^3 <= u^2 v^3`` with ``(u, v) = (q_x, q_y + HEART_SHIFT)``, the sextic heart curve
  (lobes up, point down), shifted so its bounding box is centred.

The centre is ``MARGIN + (1 - 2 MARGIN) * position`` in each axis, so every sprite stays inside the
frame. How it differs from the published file: the outlines are these formulas (the published
sprites were drawn with a graphics library, their exact sizes and margins are not documented, and
the heart is a drawn outline, not this curve); binarisation is the inside test at the pixel centre
(no anti-aliasing or supersampling; the published images are binary too); the orientations are
``2 pi k / n``, ``k < n`` (the published 40 include both 0 and 2 pi); there is no colour factor
(published: one value); the published square (4-fold) and ellipse (2-fold) symmetries are kept, so
orientation is only identifiable modulo 90 / 180 degrees for them, as there. The full grid sizes are
:data:`DSPRITES` (key ``sprites64``, a seeded sample of the 737,280 images: 20,000 train and
5,000 test by default, more with ``train_size``); the default key ``sprites`` is the CPU grid
:data:`DEFAULT`: 32x32 images, 6 scales, 10 orientations, 8 x 8 positions (11,520 images).

Split: a seeded permutation of the full factor grid; its first ``num_test`` entries are the test
split, the rest train (``train_size``/``test_size`` keep the first N of each). The covariate
``factors`` ``(N, 5)`` int64 holds each image's factor indices in :data:`FACTORS` order (kind
``factor``); models do not consume it, the evaluation scores disentanglement with it
(:mod:`aezoo.diagnostics.disentanglement`). ``x`` is ``(N, S^2)`` float in {0, 1}, already binary, so
the binarization argument is ignored. Rendering is a vectorised inside test over a window around
each sprite: the default grid takes about 0.1 s and the default ``sprites64`` sample about 1.5 s on
one CPU thread, so nothing is cached (the whole published grid would take about a minute and 12 GB
as float32; ask for a sample with ``train_size``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes

SHAPES = ("square", "ellipse", "heart")
FACTORS = ("shape", "scale", "orientation", "position_x", "position_y")
HALF_SIDE = 0.125  # half the square's side at scale 1, in image widths
MARGIN = 0.2  # the centre's distance from the border at position 0 or 1, in image widths
ELLIPSE_AXES = (1.2, 0.6)
HEART_SHIFT = 0.118  # centres the heart's y-extent [-1, 1.236] at 0


@dataclass(frozen=True)
class Grid:
    """The factor grid: every combination of :data:`SHAPES` x scales x orientations x positions x positions.

    Attributes:
        image_size: ``S``; images are ``S x S``.
        num_scales: scales linearly spaced in [0.5, 1].
        num_orientations: angles ``2 pi k / n``, ``k = 0 .. n - 1``.
        num_positions: centres per axis, linearly spaced in [0, 1] (see :data:`MARGIN`).
        num_test: size of the test split (the first entries of the seeded permutation of the grid).
    """

    image_size: int = 32
    num_scales: int = 6
    num_orientations: int = 10
    num_positions: int = 8
    num_test: int = 2000

    def __post_init__(self) -> None:
        for name in ("image_size", "num_scales", "num_orientations", "num_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 2 <= self.num_test < self.size:
            raise ValueError(f"num_test must be between 2 and {self.size - 1} (the grid has {self.size} images), "
                             f"got {self.num_test}")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of values of each factor, in :data:`FACTORS` order."""
        return (len(SHAPES), self.num_scales, self.num_orientations, self.num_positions, self.num_positions)

    @property
    def size(self) -> int:
        """The number of images in the grid."""
        return math.prod(self.sizes)

    def values(self, factors: Tensor) -> dict[str, Tensor]:
        """Factor indices ``(N, 5)`` as values: scale, orientation (radians), position x and y in [0, 1], ``(N,)``."""
        def spaced(index: Tensor, n: int, low: float, high: float) -> Tensor:
            return low + (high - low) * index.double() / max(n - 1, 1)

        return {"scale": spaced(factors[:, 1], self.num_scales, 0.5, 1.0) if self.num_scales > 1
                else torch.ones(len(factors), dtype=torch.float64),
                "orientation": 2 * math.pi * factors[:, 2].double() / self.num_orientations,
                "position_x": spaced(factors[:, 3], self.num_positions, 0.0, 1.0),
                "position_y": spaced(factors[:, 4], self.num_positions, 0.0, 1.0)}


DEFAULT = Grid()
DSPRITES = Grid(image_size=64, num_scales=6, num_orientations=40, num_positions=32, num_test=5000)


def factor_grid(grid: Grid = DEFAULT) -> Tensor:
    """Every factor combination ``(G, 5)`` int64 in C order (the last factor, position y, fastest)."""
    axes = [torch.arange(n) for n in grid.sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(FACTORS))


def index_of(factors: Tensor, grid: Grid = DEFAULT) -> Tensor:
    """The row of :func:`factor_grid` of each factor combination ``(N, 5)`` -> ``(N,)`` int64."""
    out = torch.zeros(len(factors), dtype=torch.long)
    for j, n in enumerate(grid.sizes):
        out = out * n + factors[:, j]
    return out


def check_factors(factors: Tensor, grid: Grid) -> None:
    """``ValueError`` unless ``factors`` is ``(N, 5)`` integer with each column inside its factor's range."""
    if factors.dim() != 2 or factors.shape[1] != len(FACTORS) or factors.is_floating_point():
        raise ValueError(f"factors must be (N, {len(FACTORS)}) integer indices ({', '.join(FACTORS)}), got "
                         f"{factors.dtype} {tuple(factors.shape)}")
    bad = [(name, n) for j, (name, n) in enumerate(zip(FACTORS, grid.sizes))
           if len(factors) and (factors[:, j].min() < 0 or factors[:, j].max() >= n)]
    if bad:
        ranges = ", ".join(f"{name} must lie in 0..{n - 1}" for name, n in bad)
        raise ValueError(f"factor indices out of range: {ranges}")


def render(factors: Tensor, grid: Grid = DEFAULT, chunk: int = 4096, window: bool = True) -> Tensor:
    """Draw each factor combination as a binary image (the inside tests of the module docstring).

    Each sprite lies within ``sqrt(2) * HALF_SIDE`` of its centre (the square's corner; the ellipse
    reaches 1.2, the heart 1.34 half-sides), so only a window of that radius around the centre is
    tested, one shape at a time; every pixel outside it is 0 (``window=False`` tests every pixel).

    Args:
        factors: ``(N, 5)`` int64 indices in :data:`FACTORS` order.
        grid: the value of each index; ``grid.image_size`` is ``S``.
        chunk: images rendered at once.

    Returns:
        ``(N, S^2)`` float32 in {0, 1}, rows of the image one after another.

    Raises:
        ValueError: ``factors`` of the wrong shape or out of range.
    """
    check_factors(factors, grid)
    S = grid.image_size
    W = min(S, math.ceil(2 * math.sqrt(2) * HALF_SIDE * S) + 2) if window else S  # the window's side, pixels
    offsets = torch.arange(W)
    out = torch.zeros(len(factors), S, S)
    for shape in range(len(SHAPES)):
        rows_of_shape = (factors[:, 0] == shape).nonzero().squeeze(-1)
        for start in range(0, len(rows_of_shape), chunk):
            index = rows_of_shape[start:start + chunk]
            val = {k: t[:, None, None] for k, t in grid.values(factors[index]).items()}
            cx = MARGIN + (1 - 2 * MARGIN) * val["position_x"]  # (M, 1, 1), in image widths
            cy = MARGIN + (1 - 2 * MARGIN) * val["position_y"]
            c0 = (cx * S - W / 2).round().long().clamp(0, S - W)  # the window's first column and row
            r0 = (cy * S - W / 2).round().long().clamp(0, S - W)
            cols, rows = c0 + offsets.view(1, 1, W), r0 + offsets.view(1, W, 1)
            dx, dy = (cols + 0.5) / S - cx, cy - (rows + 0.5) / S  # dy points up
            cos, sin = val["orientation"].cos(), val["orientation"].sin()
            size = val["scale"] * HALF_SIDE
            qx, qy = (cos * dx + sin * dy) / size, (cos * dy - sin * dx) / size  # rotated by -theta
            if shape == 0:
                inside = torch.maximum(qx.abs(), qy.abs()) <= 1
            elif shape == 1:
                inside = (qx / ELLIPSE_AXES[0]) ** 2 + (qy / ELLIPSE_AXES[1]) ** 2 <= 1
            else:
                hy = qy + HEART_SHIFT
                inside = (qx**2 + hy**2 - 1) ** 3 <= qx**2 * hy**3
            out[index[:, None, None], rows, cols] = inside.float()
    return out.reshape(len(factors), S * S)


def split(grid: Grid = DEFAULT, seed: int = STATIC_SEED) -> tuple[Tensor, Tensor]:
    """``(train, test)`` factor indices ``(G - num_test, 5)`` and ``(num_test, 5)``: the grid seededly permuted."""
    order = torch.randperm(grid.size, generator=torch.Generator().manual_seed(seed))
    all_factors = factor_grid(grid)
    return all_factors[order[grid.num_test:]], all_factors[order[:grid.num_test]]


def load_sprites(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
                 grid: Grid = DEFAULT, seed: int = STATIC_SEED, name: str = "sprites",
                 default_sizes: tuple[int | None, int | None] = (None, None)) -> Dataset:
    """The sprites data set of ``grid`` (see the module docstring); binarization is ignored (the images are binary).

    Args:
        train_size, test_size: keep the first N of each split (default ``default_sizes``, None: all of it).
        grid: the factor grid, e.g. :data:`DSPRITES` for the published sizes.
        seed: the permutation of the grid that splits it.

    Returns:
        A :class:`Dataset` with ``x`` ``(N, S^2)`` in {0, 1}, ``image_shape`` ``(S, S)`` and the covariate
        ``factors`` ``(N, 5)`` int64 (kind ``factor``).

    Raises:
        ValueError: sizes outside the splits.
    """
    train_f, test_f = split(grid, seed)
    n_train, n_test = _split_sizes(train_size or default_sizes[0], test_size or default_sizes[1], len(train_f),
                                   len(test_f))
    train_f, test_f = train_f[:n_train], test_f[:n_test]
    return Dataset(name, render(train_f, grid), render(test_f, grid), "none", (grid.image_size, grid.image_size),
                   {"factors": train_f}, {"factors": test_f}, {"factors": "factor"}, factor_names=FACTORS)


def load_sprites64(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
                   seed: int = STATIC_SEED) -> Dataset:
    """The published dSprites grid (:data:`DSPRITES`, 64x64): 20,000 train and 5,000 test images by default."""
    return load_sprites(binarization, train_size, test_size, DSPRITES, seed, "sprites64", (20000, None))


SOURCES = {
    "sprites": Source(load_sprites, "procedural dSprites on a CPU grid: 32x32 binary shapes, factors (shape 3, scale "
                                    "6, orientation 10, x 8, y 8) as covariate: 9,520 train, 2,000 test", ("factors",)),
    "sprites64": Source(load_sprites64, "procedural dSprites at the published sizes: 64x64, factors (3, 6, 40, 32, "
                                        "32); a seeded sample of 20,000 train, 5,000 test", ("factors",)),
}
