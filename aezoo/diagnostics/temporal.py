"""TimeGAN's discriminative and predictive scores for generated time series.

Both scores train a small post-hoc GRU, as in "Time-series Generative Adversarial Networks"
(Yoon, Jarrett & van der Schaar, NeurIPS 2019) [1] and as reported by "Generative Modeling of
Regular and Irregular Time Series Data via Koopman VAEs" (Naiman et al., arXiv:2310.02619,
Table 1) [2]; lower is better for both:

- :func:`discriminative_score`: a GRU classifier (hidden size ``D_x // 2`` as [1]) learns real
  (label 1) from generated (label 0) sequences on a train split; the score is
  ``|accuracy - 1/2|`` on the held-out split (scikit-learn's ``accuracy_score``): 0 when the
  classifier cannot tell them apart, 1/2 when it always can.
- :func:`predictive_score`: "train on synthetic, test on real": a GRU forecaster learns, on the
  generated sequences, to predict the last channel at step ``t + 1`` from the other channels up
  to ``t`` (for one channel: the channel itself), with an L1 loss as [1]; the score is its mean
  absolute error on the real sequences (scikit-learn's ``mean_absolute_error``).

Sizes, steps and seeds are arguments; [1]'s defaults (2,000 and 5,000 steps, batch 128) are the
defaults here. Inputs are regular sequences ``(N, T, D_x)`` of one common length.
"""

from __future__ import annotations

import torch
from sklearn.metrics import accuracy_score, mean_absolute_error
from torch import Tensor, nn


class _GRUHead(nn.Module):
    """GRU ``D_in -> H`` then a linear read-out per step (``(N, T, D_out)``) or of the last state (``(N, D_out)``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, last: bool) -> None:
        super().__init__()
        self.rnn = nn.GRU(in_dim, hidden_dim, batch_first=True)
        self.out, self.last = nn.Linear(hidden_dim, out_dim), last

    def forward(self, x: Tensor) -> Tensor:
        h, last = self.rnn(x)
        return self.out(last[-1] if self.last else h)


def _check(name: str, x: Tensor, like: Tensor | None = None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] < 2:
        raise ValueError(f"{name} must be sequences of shape (N, T, D_x) with T >= 2, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if like is not None and x.shape[1:] != like.shape[1:]:
        raise ValueError(f"real and generated sequences must share (T, D_x): {tuple(like.shape[1:])} vs "
                         f"{tuple(x.shape[1:])}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")


def _train(net: nn.Module, inputs: Tensor, targets: Tensor, loss_fn, steps: int, batch_size: int, lr: float,
           g: torch.Generator) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=g)
        opt.zero_grad()
        loss_fn(net(inputs[idx]), targets[idx]).backward()
        opt.step()


def discriminative_score(real: Tensor, fake: Tensor, hidden_dim: int | None = None, steps: int = 2000,
                         batch_size: int = 128, lr: float = 1e-3, test_fraction: float = 0.2, seed: int = 0) -> float:
    """``|accuracy - 1/2|`` of a post-hoc GRU classifier on held-out real vs generated sequences [1].

    Each of ``real`` and ``fake`` is split at random (seeded) into ``1 - test_fraction`` train and
    ``test_fraction`` test; the classifier trains for ``steps`` Adam steps on minibatches of the train
    parts. When the two sets come from one distribution the held-out accuracy is
    ``Binomial(n_test, 1/2) / n_test`` whatever the classifier learnt.

    Args:
        real, fake: ``(N, T, D_x)`` and ``(M, T, D_x)``, at least 5 sequences each.
        hidden_dim: the GRU's size (default ``max(D_x // 2, 1)``, as [1]).
        steps, batch_size, lr: the classifier's training; seed: split, initialisation and minibatches.

    Returns:
        the score in [0, 1/2].

    Raises:
        ValueError: shapes that differ or are not ``(N, T, D_x)``, non-finite values, a bad fraction.
    """
    _check("real", real)
    _check("fake", fake, real)
    if not 0 < test_fraction < 1 or min(len(real), len(fake)) < 5:
        raise ValueError(f"need test_fraction in (0, 1) and >= 5 sequences of each kind, got {test_fraction}, "
                         f"{len(real)} and {len(fake)}")
    g = torch.Generator().manual_seed(seed)
    parts = []
    for data, label in ((real, 1.0), (fake, 0.0)):
        perm = torch.randperm(len(data), generator=g)
        n_test = max(1, round(test_fraction * len(data)))
        parts.append((data[perm[n_test:]].float(), data[perm[:n_test]].float(), label))
    x_train = torch.cat([p[0] for p in parts])
    y_train = torch.cat([torch.full((len(p[0]), 1), p[2]) for p in parts])
    x_test = torch.cat([p[1] for p in parts])
    y_test = torch.cat([torch.full((len(p[1]),), p[2]) for p in parts])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _GRUHead(real.shape[-1], hidden_dim or max(real.shape[-1] // 2, 1), 1, last=True)
    with torch.enable_grad():
        _train(net, x_train, y_train, nn.BCEWithLogitsLoss(), steps, batch_size, lr, g)
    with torch.no_grad():
        predicted = (net(x_test)[:, 0] > 0).float()
    return abs(accuracy_score(y_test.numpy(), predicted.numpy()) - 0.5)


def _forecast_pairs(x: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs ``(N, T - 1, D_in)`` and targets ``(N, T - 1, 1)``: [1]'s next-step task (see the module docstring)."""
    x = x.float()
    if x.shape[-1] == 1:
        return x[:, :-1], x[:, 1:]
    return x[:, :-1, :-1], x[:, 1:, -1:]


def predictive_score(real: Tensor, fake: Tensor, hidden_dim: int | None = None, steps: int = 5000,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> float:
    """Mean absolute next-step error on ``real`` of a GRU forecaster trained on ``fake`` only [1].

    Args:
        real, fake: ``(N, T, D_x)`` and ``(M, T, D_x)`` in the same units (the score is in them).
        hidden_dim: the GRU's size (default ``max(D_x // 2, 1)``, as [1]).
        steps, batch_size, lr: the forecaster's training (L1 loss, Adam); seed: initialisation, minibatches.

    Returns:
        the MAE (>= 0) over every real sequence, step ``2..T`` and target channel.

    Raises:
        ValueError: shapes that differ or are not ``(N, T, D_x)`` with ``T >= 2``; non-finite values.
    """
    _check("real", real)
    _check("fake", fake, real)
    inputs, targets = _forecast_pairs(fake)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _GRUHead(inputs.shape[-1], hidden_dim or max(real.shape[-1] // 2, 1), 1, last=False)
    with torch.enable_grad():
        _train(net, inputs, targets, nn.L1Loss(), steps, batch_size, lr, g)
    real_in, real_out = _forecast_pairs(real)
    with torch.no_grad():
        predicted = net(real_in)
    return float(mean_absolute_error(real_out.reshape(-1).numpy(), predicted.reshape(-1).numpy()))
