"""Plain torch networks shared by the zoo's models and guides (no Pyro here)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_dim -> hidden_dims... -> out_dim``.

    Args:
        in_dim: input size.
        hidden_dims: sizes of the hidden layers (may be empty: a linear map).
        out_dim: output size; the last layer has no activation.
        activation: a key of :data:`ACTIVATIONS`.

    Shapes: ``(..., in_dim) -> (..., out_dim)``; any leading dims (particles, batch) pass through.

    Raises:
        ValueError: unknown activation.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        sizes = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)
