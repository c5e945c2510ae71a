"""Plain torch networks shared by the zoo's models and guides (no Pyro here): MLPs, conv nets, GCNs, recurrences.

Models choose with a config field ``network`` (``"mlp"`` or ``"conv"``) through
:func:`encoder_network` and :func:`decoder_network`; graph models use :class:`GCN` on
:func:`normalized_adjacency` (dense or ``torch.sparse``).
Sequence models use :class:`LinearRecurrence` (a diagonal linear recurrence, parallel scan or loop).
The graph and recurrence pieces live in :mod:`aezoo.nn.graph` and :mod:`aezoo.nn.recurrence` and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
GATED = "gated"  # an MLP layer of its own, :class:`GatedLinear`, rather than an activation after a Linear


class GatedLinear(nn.Module):
    """A gated dense layer ``h(x) * sigmoid(g(x))`` with two affine maps ``in_dim -> out_dim``.

    The layers of Tomczak & Welling's VampPrior networks (after Dauphin et al.'s gated linear
    units, arXiv:1612.08083): the linear path does not saturate. Shapes ``(..., in_dim) -> (..., out_dim)``.

    References:
        1. VAE with a VampPrior, Tomczak & Welling, arXiv:1705.07120.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_dim -> hidden_dims... -> out_dim``.

    Args:
        in_dim: input size.
        hidden_dims: sizes of the hidden layers (may be empty: a linear map).
        out_dim: output size; the last layer has no activation.
        activation: a key of :data:`ACTIVATIONS`, or ``"gated"``: each hidden layer a :class:`GatedLinear`.

    Shapes: ``(..., in_dim) -> (..., out_dim)``; any leading dims (particles, batch) pass through.

    Raises:
        ValueError: unknown activation.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "tanh"):
        act = None if activation == GATED else _activation(activation)
        sizes = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [GatedLinear(a, b)] if act is None else [nn.Linear(a, b), act()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)


NETWORKS = ("mlp", "conv")


def _activation(name: str) -> type[nn.Module]:
    if name == GATED:
        raise ValueError("the gated activation applies to MLP layers; use network='mlp' or another activation")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _conv_sizes(image_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    """Channels and height, width after ``len(channels)`` stride-2 convolutions; ValueError if a side is odd."""
    if len(image_shape) != 2 or not channels:
        raise ValueError(f"conv networks need image_shape (H, W) and at least one channel size, got {image_shape} "
                         f"and {channels}")
    h, w = image_shape
    for _ in channels:
        if h % 2 or w % 2:
            raise ValueError(f"conv networks halve the image {len(channels)} times: {tuple(image_shape)} does not "
                             f"divide by {2 ** len(channels)}; use fewer channels or network=mlp")
        h, w = h // 2, w // 2
    return channels[-1], h, w


class ConvEncoder(nn.Module):
    """Strided convolutions over a flat image, then an MLP head: ``(..., H W C_in) [+ extra] -> (..., out_dim)``.

    Each of ``channels`` is a 4x4 convolution with stride 2 and padding 1 (halving each side) and
    the activation, as in the convolutional VAEs of PyTorch-VAE and pythae; the features,
    concatenated with ``extra`` inputs (e.g. a condition), go through ``MLP(., hidden_dims, out_dim)``.

    Args:
        image_shape: ``(H, W)``; the input's last dim is ``in_channels * H * W`` (channel-major).
        channels: output channels of the convolutions, e.g. ``(32, 64)``.
        hidden_dims, out_dim, activation: the MLP head.
        extra_dim: size of the extra input (0: none).
        in_channels: image channels.

    Raises:
        ValueError: a side that does not divide by ``2 ** len(channels)``, or an unknown activation.
    """

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], hidden_dims: Sequence[int], out_dim: int,
                 activation: str = "relu", extra_dim: int = 0, in_channels: int = 1) -> None:
        super().__init__()
        c, h, w = _conv_sizes(image_shape, channels)
        act = _activation(activation)
        layers: list[nn.Module] = []
        for a, b in zip([in_channels, *channels[:-1]], channels):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
        self.shape = (in_channels, *image_shape)
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.head = MLP(c * h * w + extra_dim, hidden_dims, out_dim, activation)

    def forward(self, x, extra=None):
        features = self.conv(x.reshape(-1, *self.shape)).reshape(*x.shape[:-1], -1)
        if extra is not None:
            lead = torch.broadcast_shapes(features.shape[:-1], extra.shape[:-1])
            features = torch.cat([features.expand(*lead, -1), extra.expand(*lead, -1)], -1)
        return self.head(features)


class ConvDecoder(nn.Module):
    """An MLP, then transposed convolutions up to a flat image: ``(..., in_dim) -> (..., out_channels H W)``.

    The mirror of :class:`ConvEncoder`: ``MLP(in_dim, hidden_dims, C h w)`` and the activation, then a
    4x4 transposed convolution with stride 2 and padding 1 per channel size (doubling each side),
    the last one to ``out_channels`` without activation (logits or means).

    Args:
        in_dim: input size (latent, and condition if any).
        image_shape, channels: as for :class:`ConvEncoder` (``channels`` in encoder order).
        hidden_dims, activation: the MLP body.
        out_channels: image channels.
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], channels: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "relu", out_channels: int = 1) -> None:
        super().__init__()
        c, h, w = _conv_sizes(image_shape, channels)
        act = _activation(activation)
        self.start = (c, h, w)
        self.body = nn.Sequential(MLP(in_dim, hidden_dims, c * h * w, activation), act())
        sizes = [*channels[::-1], out_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < len(sizes) - 2:
                layers.append(act())
        self.deconv = nn.Sequential(*layers, nn.Flatten())

    def forward(self, z):
        lead = z.shape[:-1]
        return self.deconv(self.body(z).reshape(-1, *self.start)).reshape(*lead, -1)


def encoder_network(network: str, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str,
                    image_shape: Sequence[int] | None = None, channels: Sequence[int] = (32, 64),
                    extra_dim: int = 0) -> nn.Module:
    """An encoder ``(..., in_dim [+ extra_dim]) -> (..., out_dim)``: :class:`MLP` or :class:`ConvEncoder`.

    With ``network="mlp"`` an extra input is concatenated before the first layer (call it with
    ``torch.cat([x, extra], -1)``); with ``"conv"`` it joins after the convolutions (``net(x, extra)``).

    Raises:
        ValueError: unknown network, or ``conv`` without ``image_shape``.
    """
    if network == "mlp":
        return MLP(in_dim + extra_dim, hidden_dims, out_dim, activation)
    if network == "conv":
        if image_shape is None or image_shape[0] * image_shape[1] != in_dim:
            raise ValueError(f"network=conv needs model.image_shape with H * W = D_x = {in_dim}, got {image_shape}; "
                             "set e.g. --set model.image_shape=28,28 (image data sets set it)")
        return ConvEncoder(image_shape, channels, hidden_dims, out_dim, activation, extra_dim)
    raise ValueError(f"unknown network {network!r}; choose one of {NETWORKS}")


def decoder_network(network: str, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str,
                    image_shape: Sequence[int] | None = None, channels: Sequence[int] = (32, 64)) -> nn.Module:
    """A decoder ``(..., in_dim) -> (..., out_dim)``: :class:`MLP` (``hidden_dims`` reversed) or :class:`ConvDecoder`.

    Raises:
        ValueError: unknown network, or ``conv`` without a matching ``image_shape``.
    """
    if network == "mlp":
        return MLP(in_dim, hidden_dims[::-1], out_dim, activation)
    if network == "conv":
        if image_shape is None or image_shape[0] * image_shape[1] != out_dim:
            raise ValueError(f"network=conv needs model.image_shape with H * W = D_x = {out_dim}, got {image_shape}")
        return ConvDecoder(in_dim, image_shape, channels, hidden_dims[::-1], activation)
    raise ValueError(f"unknown network {network!r}; choose one of {NETWORKS}")


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the positions before the centre in raster order (PixelCNN's masks).

    Mask ``"A"`` hides the centre itself (the first layer, over the inputs), mask ``"B"`` keeps it (later
    layers, whose centre already holds only the past); both hide the rows below and the rest of the
    centre row. Shapes ``(N, C_in, H, W) -> (N, C_out, H, W)`` (odd kernel, "same" padding).

    References:
        1. Pixel Recurrent Neural Networks, van den Oord, Kalchbrenner & Kavukcuoglu, arXiv:1601.06759.

    Raises:
        ValueError: a mask other than ``"A"``/``"B"`` or an even kernel size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: str) -> None:
        if mask not in ("A", "B") or kernel_size % 2 == 0:
            raise ValueError(f"a masked convolution needs mask 'A' or 'B' and an odd kernel, got {mask!r}, "
                             f"{kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        keep = torch.ones(kernel_size, kernel_size)
        c = kernel_size // 2
        keep[c, c + (mask == "B"):] = 0
        keep[c + 1:] = 0
        self.register_buffer("mask", keep, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelCNN(nn.Module):
    """An autoregressive network over a grid of ``K`` categories: ``logits[p]`` depends on ``codes[< p]`` only.

    An embedding of the codes, one 7x7 mask-``A`` convolution, ``layers`` gated residual blocks (a 3x3
    mask-``B`` convolution to ``2 C`` channels, ``tanh(a) * sigmoid(b)``, a 1x1 convolution, added to the
    input; the gated units of "Conditional Image Generation with PixelCNN Decoders", van den Oord et al.,
    arXiv:1606.05328, on a single stack, so with the blind spot of [1] above-right of each position) and a
    1x1 head to ``K`` logits. Raster order: row by row, left to right.

    Args:
        num_codes: ``K``. channels: ``C``. layers: gated blocks (>= 0).

    Shapes: ``forward(codes)`` with codes ``(..., H, W)`` int64 in ``[0, K)`` gives logits ``(..., H, W, K)``.

    References:
        1. Pixel Recurrent Neural Networks, van den Oord, Kalchbrenner & Kavukcuoglu, arXiv:1601.06759.
    """

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_codes, channels)
        self.first = MaskedConv2d(channels, channels, 7, "A")
        self.gates = nn.ModuleList(MaskedConv2d(channels, 2 * channels, 3, "B") for _ in range(layers))
        self.mixes = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, num_codes, 1))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        lead, (h, w) = codes.shape[:-2], codes.shape[-2:]
        out = self.first(self.embed(codes.reshape(-1, h, w)).permute(0, 3, 1, 2))
        for gate, mix in zip(self.gates, self.mixes):
            a, b = gate(out).chunk(2, dim=1)
            out = out + mix(torch.tanh(a) * torch.sigmoid(b))
        return self.head(out).permute(0, 2, 3, 1).reshape(*lead, h, w, -1)


from aezoo.nn.graph import GCN, normalized_adjacency, propagate  # noqa: E402,F401  (re-exported; graph uses _activation)
from aezoo.nn.recurrence import LinearRecurrence, linear_scan  # noqa: E402,F401  (re-exported)
