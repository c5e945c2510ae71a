"""Evaluation: importance-sampled log p(x), its Monte Carlo error, IWAE_k bounds, reconstructions.

All log-likelihoods are in nats per datum. The estimator of log p(x_b) is
``log (1/K) sum_k w_bk`` with ``w_bk = p(x_b, z_k) / q(z_k | x_b)`` and ``z_k ~ q(z | x_b)``
("Importance Weighted Autoencoders", Burda, Grosse & Salakhutdinov, arXiv:1509.00519, K = 5000
in the paper); it is a lower bound in expectation that tightens as K grows. The same weights
give the ELBO estimate (the mean log-weight). Work is chunked over data and particles so memory
stays bounded; it runs on ``ae``'s device and returns CPU tensors.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import pyro
import torch
from pyro import poutine
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.diagnostics._traces import batches, evaluating, particle_chunks
from aezoo.traces import log_weights


@dataclass
class ImportanceEstimate:
    """Per-datum estimates from one set of K importance weights per datum.

    Attributes:
        log_likelihood: ``(N,)`` IS estimate of log p(x_n), nats.
        elbo: ``(N,)`` ELBO estimate (mean log-weight over the K particles), nats.
        num_particles: ``K``.
        mcse: ``(N,)`` Monte Carlo standard error of ``log_likelihood`` by the delta method,
            ``sd(w) / (sqrt(K) mean(w))`` with the sample sd of the weights; 0 when all weights
            agree (exact guide), NaN for ``K = 1``. It ignores the estimator's bias, about
            ``-mcse^2 / 2``, and it is **unreliable where the weights are heavy-tailed** (Pareto
            k-hat above 0.7, :func:`aezoo.diagnostics.guide_quality`): the variance is then
            infinite or nearly so, the estimate sits below log p(x) by more than the MCSE says (on
            a linear-Gaussian model with a guide of k = 0.91, +-2 MCSE covered log p(x) for 30 % of
            data points), and no variance-based interval repairs that.

    What holds for any guide is one-sided: the estimate rarely *over*-states log p(x). Because
    ``E[p_hat] = p(x)``, Markov's inequality gives ``P(log p_hat > log p(x) + t) <= exp(-t)``
    ("Sandwiching the marginal likelihood using bidirectional Monte Carlo", Grosse, Ghahramani &
    Adams, arXiv:1511.02543, Sec. 3), and for the mean over N independent data
    ``P(mean log p_hat > mean log p + t) <= exp(-N t)``. :meth:`lower_bound` and the
    ``log_likelihood_lower_95`` of :meth:`to_dict` are these 95 % lower confidence bounds on the
    true log-likelihood; they need no tail condition. How far *below* the truth the estimate is
    (its bias) is what a heavy tail leaves unknown; a larger K or a better guide shrinks it.
    """

    log_likelihood: Tensor
    elbo: Tensor
    num_particles: int
    mcse: Tensor

    @property
    def inference_gap(self) -> Tensor:
        """``(N,)`` log p(x) - ELBO, nats: estimates KL(q(z | x) || p(z | x)), the inference gap.

        In "Inference Suboptimality in Variational Autoencoders" (Cremer, Li & Duvenaud,
        arXiv:1801.03558) this total inference gap is the sum of the approximation gap (the best
        member of the guide family is not the posterior) and the amortization gap (the encoder
        does not output that best member); telling them apart needs a per-datum optimised guide.
        """
        return self.log_likelihood - self.elbo

    def lower_bound(self, confidence: float = 0.95) -> Tensor:
        """``(N,)`` lower confidence bounds on each true log p(x_n): ``log_likelihood - log(1 / (1 - confidence))``
        (with probability at least ``confidence`` each holds, for any guide; see the class docstring)."""
        return self.log_likelihood - math.log(1 / (1 - confidence))

    def to_dict(self) -> dict[str, float]:
        """JSON-ready means over the data: nats per datum, with ``*_mcse`` the Monte Carlo error
        of a mean (given the data) and ``log_likelihood_se`` the standard error over data."""
        n = len(self.log_likelihood)
        return {
            "log_likelihood": self.log_likelihood.mean().item(),
            "log_likelihood_mcse": (self.mcse.pow(2).sum().sqrt() / n).item(),
            "log_likelihood_se": (self.log_likelihood.std() / n**0.5).item() if n > 1 else float("nan"),
            "log_likelihood_lower_95": self.log_likelihood.mean().item() - math.log(20) / n,
            "elbo": self.elbo.mean().item(),
            "inference_gap": self.inference_gap.mean().item(),
            "num_particles": self.num_particles,
            "num_data": n,
        }


@dataclass
class IWAEBounds:
    """Per-datum IWAE_k estimates for several k, from one pool of particles per datum.

    Attributes:
        estimates: k -> ``(N,)`` mean over the disjoint groups of k pool particles of
            ``log (1/k) sum_{j in group} w_j``, nats; k = 1 is the ELBO.
        standard_errors: k -> ``(N,)`` Monte Carlo standard error of that mean (sd over groups /
            sqrt(groups)); NaN with a single group.
        num_groups: k -> number of groups averaged.
    """

    estimates: dict[int, Tensor]
    standard_errors: dict[int, Tensor]
    num_groups: dict[int, int]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """JSON-ready ``{"k": {"mean", "mcse", "num_groups"}}``: means over data, nats per datum."""
        return {str(k): {"mean": v.mean().item(),
                         "mcse": (self.standard_errors[k].pow(2).sum().sqrt() / len(v)).item(),
                         "num_groups": self.num_groups[k]} for k, v in self.estimates.items()}


def _log_weight_batches(
    ae: Autoencoder, data: tuple[Tensor, ...], num_particles: int, max_elements: int, batch_size: int
) -> Iterator[Tensor]:
    """``(K, B)`` log-weights for consecutive batches of the data, particles chunked (no_grad, eval).

    Pyro's validation (shapes, supports), as the caller set it, checks the first batch; the later ones,
    traced the same way, run without it (a third of the time of a small model's evaluation).
    """
    with evaluating(ae) as device:
        for i, batch in enumerate(batches(ae, data, batch_size, device)):
            per_particle = len(batch[0]) * max(batch[0][0].numel(), 1)
            with pyro.validation_enabled(False) if i else nullcontext():
                lw = torch.cat([log_weights(ae, *batch, num_particles=k)
                                for k in particle_chunks(num_particles, per_particle, max_elements)])
            yield lw


def log_mean_exp_mcse(log_w: Tensor) -> Tensor:
    """Delta-method standard error of ``log mean(w)`` from log-weights ``(K, B)``: ``(B,)``.

    ``sd(w) / (sqrt(K) mean(w))`` computed from the normalised weights ``w / mean(w) <= K`` so
    nothing overflows; the sample sd uses ``K - 1``.
    """
    k = log_w.shape[0]
    a = log_w - log_w.logsumexp(0) + math.log(k)
    if k == 1:
        return torch.full_like(a[0], math.nan)
    return (torch.expm1(a).pow(2).sum(0) / (k - 1)).sqrt() / math.sqrt(k)


@torch.no_grad()
def importance_estimate(
    ae: Autoencoder,
    *data: Tensor,
    num_particles: int = 5000,
    max_elements: int = 2**22,
    batch_size: int = 100,
) -> ImportanceEstimate:
    """Importance-sampled log p(x), its Monte Carlo error and the ELBO for every datum.

    Args:
        ae: an autoencoder whose latents are all local (inside the ``"data"`` plate), any number
            of latent sites.
        data: ``x`` ``(N, D_x)`` then covariates ``(N, ...)``; moved to ``ae``'s device chunk by chunk.
        num_particles: ``K`` importance samples per datum.
        max_elements: bound on ``particles x batch x D_x`` per chunk (memory).
        batch_size: data points per chunk.

    Returns:
        :class:`ImportanceEstimate` with ``(N,)`` CPU tensors in nats.

    Raises:
        ValueError: a latent site outside the ``"data"`` plate.
    """
    ll, elbo, mcse = [], [], []
    for lw in _log_weight_batches(ae, data, num_particles, max_elements, batch_size):
        ll.append((lw.logsumexp(0) - math.log(num_particles)).cpu())
        elbo.append(lw.mean(0).cpu())
        mcse.append(log_mean_exp_mcse(lw).cpu())
    return ImportanceEstimate(torch.cat(ll), torch.cat(elbo), num_particles, torch.cat(mcse))


@torch.no_grad()
def iwae_bounds(
    ae: Autoencoder,
    *data: Tensor,
    ks: Sequence[int] = (1, 5, 50),
    num_groups: int = 10,
    max_elements: int = 2**22,
    batch_size: int = 100,
) -> IWAEBounds:
    """IWAE_k estimates per datum for every k in ``ks`` from one pool of ``num_groups * max(ks)`` particles.

    For each k the pool is cut into ``pool // k`` disjoint groups of k particles; the estimate is
    the mean of the groups' ``log (1/k) sum w`` and its standard error comes from their spread.
    In expectation ``ELBO = IWAE_1 <= IWAE_k <= IWAE_{k'} <= log p(x)`` for ``k <= k'``
    (Burda, Grosse & Salakhutdinov, arXiv:1509.00519); single estimates can break the order.

    Args:
        ae: an autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates.
        ks: group sizes k, each >= 1.
        num_groups: groups at the largest k (pool size ``num_groups * max(ks)``).
        max_elements, batch_size: chunking, as in :func:`importance_estimate`.

    Returns:
        :class:`IWAEBounds` with ``(N,)`` CPU tensors in nats per k.

    Raises:
        ValueError: an empty ``ks``, a k below 1 or ``num_groups`` below 1.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or num_groups < 1:
        raise ValueError(f"need ks >= 1 and num_groups >= 1, got ks={ks}, num_groups={num_groups}")
    pool = num_groups * ks[-1]
    groups = {k: pool // k for k in ks}
    est: dict[int, list[Tensor]] = {k: [] for k in ks}
    se: dict[int, list[Tensor]] = {k: [] for k in ks}
    for lw in _log_weight_batches(ae, data, pool, max_elements, batch_size):
        for k, g in groups.items():
            bound = lw[: g * k].reshape(g, k, -1).logsumexp(1) - math.log(k)  # (G, B)
            est[k].append(bound.mean(0).cpu())
            se[k].append((bound.std(0) / g**0.5).cpu() if g > 1 else torch.full_like(bound[0], math.nan).cpu())
    return IWAEBounds({k: torch.cat(v) for k, v in est.items()}, {k: torch.cat(v) for k, v in se.items()}, groups)


@torch.no_grad()
def reconstruct(ae: Autoencoder, *data: Tensor, site: str = "x") -> Tensor:
    """Mean of p(x | z) at one draw ``z ~ q(z | x)``: ``(B, D_x)``."""
    guide_tr = poutine.trace(ae.guide).get_trace(*data)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data)
    return model_tr.nodes[site]["fn"].mean


@torch.no_grad()
def generate(ae: Autoencoder, *like: Tensor, site: str = "x") -> Tensor:
    """Mean of p(x | z) at prior draws ``z ~ p(z)``, one per row of ``like`` ``(B, D_x)``."""
    model_tr = poutine.trace(poutine.uncondition(ae.model)).get_trace(*like)
    return model_tr.nodes[site]["fn"].mean


@torch.no_grad()
def decode(ae: Autoencoder, latents: dict[str, Tensor], *like: Tensor, site: str = "x") -> Tensor:
    """Mean of p(x | z) at given latent values ``latents`` (site -> ``(B, ...)``): ``(B, D_x)``.

    ``like`` supplies the batch (its length ``B``) and any covariates.
    """
    model_tr = poutine.trace(poutine.condition(poutine.uncondition(ae.model), data=latents)).get_trace(*like)
    return model_tr.nodes[site]["fn"].mean
