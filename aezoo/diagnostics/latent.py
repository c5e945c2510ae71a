"""Latent diagnostics: the ELBO's reconstruction and KL terms, KL per latent unit, active units,
the mutual information I_q(x; z) and a posterior-collapse report.

Everything is per datum in nats, generic over the guide's latent sites (any number, each inside
the ``"data"`` plate) and the model's observed sites, chunked over data and particles, run under
``no_grad`` on ``ae``'s device, and returned on the CPU. A site's per-datum values are
flattened in C order to ``D`` coordinates (its other plate dims, then its event dims); unit
``j`` of site ``z`` is named ``"z[j]"``.

References:
    1. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519
       (active units, section 5.2).
    2. Lagging Inference Networks and Posterior Collapse in Variational Autoencoders, He,
       Spokoyny, Neubig & Berg-Kirkpatrick, arXiv:1901.05534 (the mutual information estimate).
    3. Don't Blame the ELBO! A Linear VAE Perspective on Posterior Collapse, Lucas, Tucker,
       Grosse & Norouzi, arXiv:1911.02469.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, kl_divergence

from aezoo.core import Autoencoder
from aezoo.diagnostics._traces import batches, evaluating, particle_means
from aezoo.traces import Traces, data_dim, trace_pair


def _as_mvn(d: dist.Distribution) -> MultivariateNormal | None:
    if isinstance(d, MultivariateNormal):
        return d
    if isinstance(d, Independent) and isinstance(d.base_dist, dist.Normal) and d.reinterpreted_batch_ndims == 1:
        return dist.MultivariateNormal(d.base_dist.loc, scale_tril=torch.diag_embed(d.base_dist.scale))
    return None


def _kl(q: dist.Distribution, p: dist.Distribution, value: Tensor, analytic: bool) -> Tensor:
    """KL(q || p) (batch shape): closed form if registered (Gaussians via MVN), else ``log q - log p`` at ``value``."""
    if analytic:
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            qg, pg = _as_mvn(q), _as_mvn(p)
            if qg is not None and pg is not None:
                return kl_divergence(qg, pg)
    return q.log_prob(value) - p.log_prob(value)


def _marginals(d: dist.Distribution, name: str) -> dist.Distribution:
    """Elementwise univariate marginals with batch shape ``batch + event`` (Independent unwrapped, MVN diagonal)."""
    while isinstance(d, Independent):
        d = d.base_dist
    if isinstance(d, MultivariateNormal):
        return dist.Normal(d.loc, d.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    if d.event_shape != ():
        raise NotImplementedError(f"no per-coordinate marginals for site {name!r} ({type(d).__name__})")
    return d


@dataclass
class ELBODecomposition:
    """ELBO = reconstruction - KL, per datum, in nats.

    Attributes:
        reconstruction: ``(N,)`` E_q[log p(x | z)] summed over the observed sites.
        kl: ``(N,)`` KL(q(z | x) || p(z)) summed over the latent sites (for a prior that depends on
            other latents, E_q of the conditional KL).
        kl_per_site: site -> ``(N,)`` its KL term.
        num_particles: ``K`` draws per datum.
    """

    reconstruction: Tensor
    kl: Tensor
    kl_per_site: dict[str, Tensor]
    num_particles: int

    @property
    def elbo(self) -> Tensor:
        """``(N,)`` reconstruction - KL, nats."""
        return self.reconstruction - self.kl

    def to_dict(self) -> dict[str, float | dict[str, float]]:
        """JSON-ready means over the data, nats per datum."""
        return {"elbo": self.elbo.mean().item(), "reconstruction": self.reconstruction.mean().item(),
                "kl": self.kl.mean().item(), "kl_per_site": {k: v.mean().item() for k, v in self.kl_per_site.items()},
                "num_particles": self.num_particles}


@torch.no_grad()
def elbo_decomposition(ae: Autoencoder, *data: Tensor, num_particles: int = 100, analytic_kl: bool = True,
                       batch_size: int = 100, max_elements: int = 2**22) -> ELBODecomposition:
    """Reconstruction and KL terms of the ELBO per datum.

    Args:
        ae: an autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates.
        num_particles: ``K`` draws ``z ~ q(z | x)`` per datum for the expectations.
        analytic_kl: closed-form KL per site where ``torch.distributions.kl_divergence`` has one
            (Gaussian guide/prior pairs always do); Monte Carlo ``log q - log p`` elsewhere.
        batch_size, max_elements: chunking over data and over ``particles x batch x D_x``.

    Returns:
        :class:`ELBODecomposition` of ``(N,)`` CPU tensors.

    Raises:
        ValueError: a latent site outside the ``"data"`` plate.
    """
    def stats(tr: Traces) -> dict[str, Tensor]:
        out = {"": tr.log_prob(tr.model, tr.observed)}
        for n in tr.latent:
            q, p = tr.guide.nodes[n], tr.model.nodes[n]
            out[n] = tr.per_datum(tr.masked(_kl(q["fn"], p["fn"], q["value"], analytic_kl), q), n, q).sum(-1)
        return out

    means = particle_means(ae, data, num_particles, batch_size, max_elements, stats)
    rec = means.pop("")
    return ELBODecomposition(rec, sum(means.values(), torch.zeros_like(rec)), means, num_particles)


@torch.no_grad()
def kl_per_dimension(ae: Autoencoder, *data: Tensor, num_particles: int = 1, analytic: bool = True,
                     batch_size: int = 100, max_elements: int = 2**22) -> dict[str, Tensor]:
    """Average over the data of the KL per latent coordinate, site -> ``(D,)`` nats.

    For factorised guides and priors (``Independent`` of univariate distributions, e.g. the
    diagonal Normal of a VAE) the coordinates' KLs sum to the site's KL. For a multivariate
    Normal (e.g. ``linear_gaussian``'s full-covariance guide) coordinate ``u`` gets the KL of
    the marginals, KL(N(m_u, S_uu) || prior marginal); these do not sum to the joint KL, which
    also holds the correlation terms. Without a closed form (or with ``analytic=False``) the
    coordinate KL is the Monte Carlo mean of ``log q_u(z_u) - log p_u(z_u)``, which then needs
    ``num_particles > 1``; priors that depend on other latents are averaged over draws too.

    A site whose guide or prior has no per-coordinate marginals (a flow guide, a mixture
    prior) gets NaN for every unit (and so never counts as collapsed by KL).
    """
    def stats(tr: Traces) -> dict[str, Tensor]:
        out = {}
        for n in tr.latent:
            q, p = tr.guide.nodes[n], tr.model.nodes[n]
            try:
                kl = _kl(_marginals(q["fn"], n), _marginals(p["fn"], n), q["value"], analytic)
            except NotImplementedError:  # e.g. a flow guide or a mixture prior: no per-unit KL, NaN
                kl = torch.full_like(q["value"], math.nan)
            ev = len(q["fn"].event_shape)
            out[n] = tr.per_datum(tr.masked(kl, q, ev), n, q, ev)
        return out

    return {n: v.mean(0) for n, v in particle_means(ae, data, num_particles, batch_size, max_elements, stats).items()}


@dataclass
class UnitActivity:
    """Activity of one latent site's units (Burda et al. 2015, section 5.2).

    Attributes:
        variance: ``(D,)`` variance over the data of E_q[z_u | x] (unbiased, over N data).
        active: ``(D,)`` bool, ``variance > threshold``.
        threshold: the activity threshold (0.01 in the paper).
    """

    variance: Tensor
    active: Tensor
    threshold: float

    @property
    def count(self) -> int:
        """Number of active units."""
        return int(self.active.sum())


@torch.no_grad()
def guide_means(ae: Autoencoder, *data: Tensor, num_particles: int = 1, batch_size: int = 100,
                max_elements: int = 2**22) -> dict[str, Tensor]:
    """E_q[z | x] per latent site: site -> ``(N, D)`` (other plate and event dims flattened), CPU.

    The guide distribution's mean, averaged over ``num_particles`` draws of the other latents it
    depends on (hierarchical guides; 1 suffices otherwise); a guide site without an analytic
    mean uses its draws instead.
    """
    def stats(tr: Traces) -> dict[str, Tensor]:
        out = {}
        for n in tr.latent:
            q = tr.guide.nodes[n]
            try:
                mean = q["fn"].mean.expand(q["value"].shape)
            except NotImplementedError:
                mean = q["value"]
            out[n] = tr.per_datum(mean, n, q, len(q["fn"].event_shape))
        return out

    return particle_means(ae, data, num_particles, batch_size, max_elements, stats)


def active_units(ae: Autoencoder, *data: Tensor, threshold: float = 0.01, num_particles: int = 1,
                 batch_size: int = 100, max_elements: int = 2**22) -> dict[str, UnitActivity]:
    """Active units per latent site: unit u is active when ``Var_x(E_q[z_u | x]) > threshold``.

    E_q[z_u | x] comes from :func:`guide_means`. Needs at least 2 data points ("Importance
    Weighted Autoencoders", Burda, Grosse & Salakhutdinov, arXiv:1509.00519, section 5.2).

    Returns:
        site -> :class:`UnitActivity` with ``(D,)`` CPU tensors.
    """
    means = guide_means(ae, *data, num_particles=num_particles, batch_size=batch_size, max_elements=max_elements)
    return {n: UnitActivity(v.var(0), v.var(0) > threshold, threshold) for n, v in means.items()}


@dataclass
class MutualInformation:
    """Estimate of I_q(x; z) under the guide and the empirical data distribution, nats.

    Attributes:
        value: the estimate.
        standard_error: sd over data of the per-datum terms / sqrt(N) (ignores their coupling
            through the shared aggregate posterior).
        upper_bound: ``log N``, the most the estimator can return.
    """

    value: float
    standard_error: float
    upper_bound: float


@torch.no_grad()
def mutual_information(ae: Autoencoder, *data: Tensor, num_particles: int = 1, batch_size: int = 100,
                       max_elements: int = 2**22) -> MutualInformation:
    """I_q(x; z) = E_x E_q(z|x)[log q(z | x) - log q(z)] with q(z) = 1/N sum_m q(z | x_m).

    The estimator of He et al. (arXiv:1901.05534): draw ``z_n ~ q(z | x_n)``, estimate
    ``log q(z_n)`` by ``logsumexp_m log q(z_n | x_m) - log N`` over all N data (the term m = n
    included), average ``log q(z_n | x_n) - log q(z_n)``. It is biased for finite N and at most
    ``log N``, so compare values computed on the same N. A guide that ignores x gives exactly 0.
    The cost is ``K N^2`` guide densities (one guide pass per chunk of data); subsample large
    data sets. All latent sites together form z.

    Args:
        ae: an autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates; ``N`` >= 2.
        num_particles: draws per datum.
        batch_size, max_elements: chunking; a guide pass handles ``batch_size`` data for at most
            ``max_elements // (batch_size * D_z)`` draws.

    Returns:
        :class:`MutualInformation`.
    """
    n_data, k = len(data[0]), num_particles
    with evaluating(ae) as device:
        values: dict[str, list[Tensor]] = {}
        diag, pos = [], {}
        for batch in batches(ae, data, batch_size, device):
            tr = trace_pair(ae, *batch, num_particles=k, model=False)
            diag.append(tr.log_prob(tr.guide, tr.latent))
            for n in tr.latent:
                site = tr.guide.nodes[n]
                pos[n] = site["value"].dim() - len(site["fn"].event_shape) + data_dim(n, site)
                values.setdefault(n, []).append(site["value"])
        z = {n: torch.cat(v, pos[n]) for n, v in values.items()}
        diag = torch.cat(diag, 1)  # (K, N): log q(z_n | x_n)
        d_z = sum(v.numel() for v in z.values()) // (k * n_data)
        rows = max(1, max_elements // (k * batch_size * max(d_z, 1)))
        terms = []
        for r0 in range(0, n_data, rows):
            r = min(rows, n_data - r0)
            cond = {}
            for n, v in z.items():  # draws of data r0..r0+r as particles: (K r, ..., 1 at the data dim, ...)
                c = v.narrow(pos[n], r0, r).movedim(pos[n], 1)
                cond[n] = c.reshape(k * r, *c.shape[2:]).unsqueeze(pos[n])
            lse = None
            for batch in batches(ae, data, batch_size, device):
                m = len(batch[0])
                given = {n: c.expand(*c.shape[: pos[n]], m, *c.shape[pos[n] + 1 :]) for n, c in cond.items()}
                tr = trace_pair(ae, *batch, num_particles=k * r, model=False, condition=given)
                part = tr.log_prob(tr.guide, list(cond)).logsumexp(1)  # (K r,)
                lse = part if lse is None else torch.logaddexp(lse, part)
            terms.append((diag[:, r0 : r0 + r] - (lse - math.log(n_data)).reshape(k, r)).mean(0).cpu())
    terms = torch.cat(terms)
    return MutualInformation(terms.mean().item(), (terms.std() / n_data**0.5).item(), math.log(n_data))


@dataclass
class CollapseReport:
    """Posterior-collapse summary: per-unit KL and activity, I_q(x; z) and the collapsed units.

    A unit is collapsed when it is inactive (``Var_x E_q[z_u | x] <= au_threshold``) and its
    average KL is at most ``kl_threshold`` nats: q(z_u | x) ignores x and sits on the prior.

    Attributes:
        kl_per_dimension: site -> ``(D,)`` average KL per unit, nats.
        units: site -> :class:`UnitActivity`.
        mutual_information: :class:`MutualInformation` of all latents with x.
        collapsed: names like ``"z[3]"``.
        kl_threshold, au_threshold: the thresholds used.
    """

    kl_per_dimension: dict[str, Tensor]
    units: dict[str, UnitActivity]
    mutual_information: MutualInformation
    collapsed: list[str]
    kl_threshold: float
    au_threshold: float

    @property
    def active_units(self) -> dict[str, int]:
        """site -> number of active units."""
        return {n: u.count for n, u in self.units.items()}

    def to_dict(self) -> dict:
        """JSON-ready: numbers, lists and strings only."""
        return {
            "active_units": self.active_units,
            "num_units": {n: len(u.active) for n, u in self.units.items()},
            "activity": {n: u.variance.tolist() for n, u in self.units.items()},
            "kl_per_dimension": {n: v.tolist() for n, v in self.kl_per_dimension.items()},
            "mutual_information": self.mutual_information.value,
            "mutual_information_se": self.mutual_information.standard_error,
            "mutual_information_upper_bound": self.mutual_information.upper_bound,
            "collapsed": list(self.collapsed),
            "kl_threshold": self.kl_threshold,
            "au_threshold": self.au_threshold,
        }


def collapse_report(ae: Autoencoder, *data: Tensor, kl_threshold: float = 0.01, au_threshold: float = 0.01,
                    num_particles: int = 1, batch_size: int = 100, max_elements: int = 2**22) -> CollapseReport:
    """Run :func:`kl_per_dimension`, :func:`active_units` and :func:`mutual_information` and name
    the collapsed units (inactive and KL <= ``kl_threshold`` nats); the MI costs ``K N^2`` guide
    densities, so pass a subsample of a large data set.

    Returns:
        :class:`CollapseReport`.
    """
    chunking = {"num_particles": num_particles, "batch_size": batch_size, "max_elements": max_elements}
    kl = kl_per_dimension(ae, *data, **chunking)
    units = active_units(ae, *data, threshold=au_threshold, **chunking)
    collapsed = [f"{n}[{j}]" for n, u in units.items()
                 for j in range(len(u.active)) if not u.active[j] and kl[n][j] <= kl_threshold]
    return CollapseReport(kl, units, mutual_information(ae, *data, **chunking), collapsed, kl_threshold, au_threshold)
