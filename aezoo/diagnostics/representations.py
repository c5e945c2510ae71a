"""Mean against sampled representations: where a latent unit's guide mean and its draws part ways.

A VAE's representation of ``x`` is either the guide's mean ``E_q[z | x]`` or a draw ``z ~ q(z | x)``.
For an active unit the two agree up to the posterior noise; for a passive (collapsed) unit the
draw is almost pure prior noise while the mean keeps whatever small, often strongly correlated,
signal the encoder leaves in it, so mean and sampled representations look different [1]. Per
unit ``u`` of each latent site this module reports

- ``self_correlation[u]``: the correlation over the data between ``E_q[z_u | x]`` and one draw
  ``z_u``; near 1 for active units, near 0 for passive ones;
- ``discrepancy[u]``: ``mean_{v != u} |C^mean_uv - C^sampled_uv|``, the mean absolute difference
  between the unit's correlations with the other units in the mean and in the sampled codes
  (the "correlation discrepancy" of [1]).

References:
    1. Be More Active! Understanding the Differences between Mean and Sampled Representations of
       Variational Autoencoders, Bonheme & Grzes, arXiv:2109.12679.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.diagnostics._traces import particle_means
from aezoo.traces import Traces


def correlation(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlations ``(D_a, D_b)`` between the columns of ``a`` ``(N, D_a)`` and ``b`` ``(N, D_b)``;
    0 for a constant column."""
    a, b = a - a.mean(0), b - b.mean(0)
    cov = a.T @ b / len(a)
    return cov / (a.pow(2).mean(0).unsqueeze(1) * b.pow(2).mean(0).unsqueeze(0) + eps).sqrt()


@dataclass
class RepresentationGap:
    """Per-site comparisons of mean and sampled codes (see the module docstring).

    Attributes:
        self_correlation: site -> ``(D,)``.
        discrepancy: site -> ``(D,)``.
        mean_correlation, sampled_correlation: site -> ``(D, D)`` correlation matrices of the codes.
    """

    self_correlation: dict[str, Tensor]
    discrepancy: dict[str, Tensor]
    mean_correlation: dict[str, Tensor]
    sampled_correlation: dict[str, Tensor]

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON-ready ``{"self_correlation": {site: [...]}, "discrepancy": {site: [...]}}``."""
        return {"self_correlation": {n: v.tolist() for n, v in self.self_correlation.items()},
                "discrepancy": {n: v.tolist() for n, v in self.discrepancy.items()}}


def representation_gap(ae: Autoencoder, *data: Tensor, batch_size: int = 100,
                       max_elements: int = 2**22) -> RepresentationGap:
    """Compare the guide means and one draw per datum of every latent site over ``data``.

    Args:
        ae: the autoencoder; data: ``x`` ``(N, D_x)`` then covariates, ``N >= 2``.

    Returns:
        :class:`RepresentationGap`; a site's units are its other plate and event dims, flattened.

    Raises:
        ValueError: fewer than two data points.
    """
    if len(data[0]) < 2:
        raise ValueError("mean and sampled representations need at least two data points")

    def stats(tr: Traces) -> dict[str, Tensor]:
        out = {}
        for n in tr.latent:
            q = tr.guide.nodes[n]
            ev = len(q["fn"].event_shape)
            try:
                mean = q["fn"].mean.expand(q["value"].shape)
            except NotImplementedError:  # no analytic mean (a flow): there is no mean representation
                continue
            out[f"{n}.mean"] = tr.per_datum(mean, n, q, ev)
            out[f"{n}.draw"] = tr.per_datum(q["value"], n, q, ev)
        return out

    codes = particle_means(ae, data, 1, batch_size, max_elements, stats)
    sites = sorted({k.rpartition(".")[0] for k in codes})
    self_corr, gap, mean_corr, draw_corr = {}, {}, {}, {}
    for n in sites:
        means, draws = codes[f"{n}.mean"].double(), codes[f"{n}.draw"].double()
        self_corr[n] = correlation(means, draws).diagonal().float()
        mean_corr[n], draw_corr[n] = correlation(means, means).float(), correlation(draws, draws).float()
        d = means.shape[1]
        off = ~torch.eye(d, dtype=torch.bool)
        diff = (mean_corr[n] - draw_corr[n]).abs()
        gap[n] = (diff * off).sum(1) / max(d - 1, 1)
    return RepresentationGap(self_corr, gap, mean_corr, draw_corr)
