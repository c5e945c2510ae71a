"""Posterior and prior predictive checks: replicated data and test statistics against the data.

A replicate of datum n draws ``z ~ q(z | x_n)`` (the fitted guide standing in for the
posterior) and then ``x_rep ~ p(x | z)``; a test statistic T is computed on the observed data
and on each of R replicated data sets, and the posterior predictive p-value is the fraction of
replicates with ``T(x_rep) >= T(x)``. Values near 0 or 1 flag an aspect of the data the model
does not reproduce; p-values of a well-specified model concentrate around 0.5 rather than
being uniform, so they are a check, not a test with a nominal level.

References:
    1. Bayesian Data Analysis (3rd ed.), Gelman, Carlin, Stern, Dunson, Vehtari & Rubin, 2013,
       chapter 6: model checking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.diagnostics._traces import batches, evaluating, particle_chunks
from aezoo.traces import trace_pair

Statistic = Callable[[Tensor], Tensor]
"""A test statistic: data ``(..., N, D)`` -> ``(..., *S)``, computed over the data dim."""

DEFAULT_STATISTICS: dict[str, Statistic] = {
    "mean": lambda x: x.mean(-2),  # (D,) per-coordinate (per-pixel) mean over data
    "sd": lambda x: x.std(-2),  # (D,) per-coordinate sd over data
    "sum_mean": lambda x: x.sum(-1).mean(-1),  # () mean over data of the per-datum sum of pixels
    "sum_sd": lambda x: x.sum(-1).std(-1),  # () sd over data of the per-datum sum of pixels
}


def _replicates(ae: Autoencoder, data: tuple[Tensor, ...], num_replicates: int, site: str, from_guide: bool,
                batch_size: int, max_elements: int) -> Tensor:
    out = []
    with evaluating(ae) as device:
        for batch in batches(ae, data, batch_size, device):
            reps = []
            for r in particle_chunks(num_replicates, len(batch[0]) * max(batch[0][0].numel(), 1), max_elements):
                tr = trace_pair(ae, *batch, num_particles=r, guide=from_guide, uncondition=True)
                node = tr.model.nodes.get(site)
                if node is None or node["type"] != "sample" or not node["infer"].get("was_observed"):
                    observed = [n for n, s in tr.model.nodes.items() if s["type"] == "sample"
                                and s["infer"].get("was_observed")]
                    raise ValueError(f"{site!r} is not an observed site of the model; observed sites: {observed}")
                reps.append(tr.per_datum(node["value"], site, node, len(node["fn"].event_shape)).cpu())
            out.append(torch.cat(reps))
    return torch.cat(out, 1)


@torch.no_grad()
def posterior_predictive(ae: Autoencoder, *data: Tensor, num_replicates: int = 100, site: str = "x",
                         batch_size: int = 100, max_elements: int = 2**22) -> Tensor:
    """Replicated data ``x_rep ~ p(x | z)``, ``z ~ q(z | x_n)``, independently for each replicate.

    Args:
        ae: the fitted autoencoder.
        data: ``x`` ``(N, D_x)`` then covariates.
        num_replicates: ``R``.
        site: the observed site to replicate.
        batch_size, max_elements: chunking over data and over ``replicates x batch x D_x``.

    Returns:
        ``(R, N, D)`` CPU tensor, ``D`` the datum's flattened size of ``site`` (``D_x``).

    Raises:
        ValueError: ``site`` is not an observed site of the model.
    """
    return _replicates(ae, data, num_replicates, site, True, batch_size, max_elements)


@torch.no_grad()
def prior_predictive(ae: Autoencoder, *like: Tensor, num_replicates: int = 100, site: str = "x",
                     batch_size: int = 100, max_elements: int = 2**22) -> Tensor:
    """Replicated data from the model alone, ``z ~ p(z)``, one datum per row of ``like`` ``(N, D_x)``.

    Returns:
        ``(R, N, D)`` CPU tensor, as :func:`posterior_predictive`.
    """
    return _replicates(ae, like, num_replicates, site, False, batch_size, max_elements)


@dataclass
class PredictiveCheck:
    """One test statistic on the data and on R replicated data sets.

    Attributes:
        observed: ``(*S)`` T(x).
        replicated: ``(R, *S)`` T(x_rep) per replicate.
        p_value: ``(*S)`` fraction of replicates with ``T(x_rep) >= T(x)``.
    """

    observed: Tensor
    replicated: Tensor
    p_value: Tensor

    def to_dict(self) -> dict[str, float | list]:
        """JSON-ready: observed value, replicated mean and sd, p-value (lists for vector statistics)."""
        return {"observed": self.observed.tolist(), "replicated_mean": self.replicated.mean(0).tolist(),
                "replicated_sd": self.replicated.std(0).tolist(), "p_value": self.p_value.tolist()}


@dataclass
class PredictiveChecks:
    """Statistic name -> :class:`PredictiveCheck`, and the number of replicates ``R``."""

    checks: dict[str, PredictiveCheck]
    num_replicates: int

    def to_dict(self) -> dict:
        """JSON-ready ``{"num_replicates": R, "statistics": {name: check.to_dict()}}``."""
        return {"num_replicates": self.num_replicates,
                "statistics": {n: c.to_dict() for n, c in self.checks.items()}}


@torch.no_grad()
def predictive_checks(ae: Autoencoder, x: Tensor, *covariates: Tensor, statistics: dict[str, Statistic] | None = None,
                      num_replicates: int = 100, site: str = "x", prior: bool = False, batch_size: int = 100,
                      max_elements: int = 2**22) -> PredictiveChecks:
    """Posterior (or prior) predictive checks of ``x`` ``(N, D_x)`` with the given test statistics.

    Memory holds all ``R x N x D_x`` replicates: subsample a large data set.

    Args:
        ae: the fitted autoencoder.
        x: observed data ``(N, D_x)``; covariates follow.
        statistics: name -> statistic (``(..., N, D) -> (..., *S)``); default
            :data:`DEFAULT_STATISTICS`: per-pixel mean and sd over data, mean and sd of the
            per-datum sum of pixels.
        num_replicates: ``R``.
        site: the observed site ``x`` is the data of.
        prior: replicate from the prior predictive instead (``z ~ p(z)``).
        batch_size, max_elements: chunking.

    Returns:
        :class:`PredictiveChecks`.
    """
    sample = prior_predictive if prior else posterior_predictive
    reps = sample(ae, x, *covariates, num_replicates=num_replicates, site=site, batch_size=batch_size,
                  max_elements=max_elements)
    obs = x.detach().cpu().reshape(len(x), -1).to(reps.dtype)
    checks = {}
    for name, stat in (statistics or DEFAULT_STATISTICS).items():
        t_obs, t_rep = stat(obs), stat(reps)
        checks[name] = PredictiveCheck(t_obs, t_rep, (t_rep >= t_obs).to(reps.dtype).mean(0))
    return PredictiveChecks(checks, num_replicates)
