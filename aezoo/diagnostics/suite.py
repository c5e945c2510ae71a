"""The evaluation suite behind ``aezoo eval``: every diagnostic that applies, figures, one dict.

It combines the importance-sampled log-likelihood and its Monte Carlo error, IWAE_k bounds
against k, the ELBO decomposition, latent and collapse diagnostics, Pareto k-hat of the
importance weights, posterior predictive checks and the ArviZ export. The cheap, central
number (log p(x) with K particles) uses the whole test split; the costlier diagnostics use
its first ``max_points`` data points, as recorded in the output.

A deterministic (Delta) guide (``wae``, ``swae``) has ``log q = 0``, no density over z: the
importance-sampled log p(x), the ELBO, the IWAE_k bounds, the KL terms and Pareto k-hat do not
apply. The suite then records them as NaN with a ``note`` and reports the reconstruction
log-likelihood ``log p(x | z = encoder(x))`` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from aezoo import plots
from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Data, atomic_path, rows, to_device
from aezoo.diagnostics import az, latent, likelihood, ppc
from aezoo.diagnostics._traces import evaluating
from aezoo.diagnostics.representations import representation_gap
from aezoo.traces import guide_sites, is_deterministic

DETERMINISTIC_NOTE = ("deterministic (Delta) guide: log q = 0 is no density over z, so the importance-sampled "
                      "log p(x), the ELBO, IWAE_k bounds, KL terms and Pareto k-hat do not apply (NaN); "
                      "'reconstruction' is log p(x | z = encoder(x)), nats per datum")


@dataclass(frozen=True)
class Config:
    """What the suite computes, and on how much data.

    Attributes:
        num_particles: ``K`` for the test log-likelihood (5000 in Burda et al.).
        ks: the k of the IWAE_k-against-k curve.
        bound_groups: disjoint groups of ``max(ks)`` particles averaged per datum for that curve.
        max_points: data used by the costlier diagnostics (bounds, latents, k-hat, checks).
        khat_particles: importance samples per datum for Pareto k-hat.
        replicates: replicated data sets for the posterior predictive checks.
        export_points, export_draws: data and guide draws in ``posterior.nc``.
    """

    num_particles: int = 5000
    ks: tuple[int, ...] = (1, 5, 50, 500)
    bound_groups: int = 4
    max_points: int = 1000
    khat_particles: int = 1000
    replicates: int = 50
    export_points: int = 200
    export_draws: int = 100

    def __post_init__(self) -> None:
        check_sizes(self)  # num_particles, max_points, ... >= 1
        for name in ("ks", "bound_groups", "khat_particles", "replicates", "export_draws"):
            values = getattr(self, name)
            if any(v < 1 for v in (values if isinstance(values, tuple) else (values,))):
                raise ValueError(f"{name} must be at least 1, got {values}")


def run(ae: Autoencoder, data: Data, out_dir: str | Path, cfg: Config = Config(), labels: Tensor | None = None,
        image_shape: tuple[int, int] | None = None) -> dict[str, Any]:
    """Compute the suite on test data ``(x, *covariates)`` and write its figures to ``out_dir``.

    Args:
        ae: the autoencoder; every latent inside the ``"data"`` plate.
        data: ``x`` ``(N, D_x)`` then the model's covariates in ``ae.covariates`` order (None for an
            absent one); with covariates every figure is conditional: log p(x | covariates), ...
        out_dir: where the figures and ``posterior.nc`` go.
        cfg: what to compute. labels: ``(N,)`` colours of the latent-space figure, or None.
        image_shape: ``(H, W)`` to show ``x`` as images.

    Returns:
        JSON-ready dict: ``kind`` (``"importance"``, or ``"reconstruction"`` for a point-mass guide),
        ``log_likelihood``, ``bounds``, ``elbo_decomposition``, ``latent``, ``representations`` (mean
        against sampled codes), ``guide_quality``,
        ``predictive_checks``, ``subsample`` and ``figures`` (file names).
    """
    out_dir = Path(out_dir)
    sub = rows(data, slice(0, cfg.max_points))
    if _deterministic(ae, data):
        return _run_deterministic(ae, data, sub, out_dir, cfg, labels, image_shape)
    # one bar over the stages (shown on a terminal only: tqdm's disable=None); the first dominates (K x N)
    bar = tqdm(total=8, desc="evaluation", unit="stage", disable=None, leave=False)

    def stage(name: str, value):
        bar.set_postfix_str(name)
        bar.update()
        return value

    bar.set_postfix_str(f"log p(x), K={cfg.num_particles}")
    est = stage("IWAE_k bounds", likelihood.importance_estimate(ae, *data, num_particles=cfg.num_particles))
    save_per_datum(out_dir, est.log_likelihood)
    bounds = stage("ELBO terms", likelihood.iwae_bounds(ae, *sub, ks=cfg.ks, num_groups=cfg.bound_groups))
    decomposition = stage("latent units", latent.elbo_decomposition(ae, *sub, num_particles=10))
    collapse = stage("representations", latent.collapse_report(ae, *sub))
    representations = stage("Pareto k-hat", representation_gap(ae, *sub))
    quality = stage("predictive checks", az.guide_quality(ae, *sub, num_particles=cfg.khat_particles))
    checks = stage("ArviZ export", ppc.predictive_checks(ae, *sub, num_replicates=cfg.replicates))
    stage("figures", az.save_netcdf(az.to_inference_data(ae, *rows(data, slice(0, cfg.export_points)),
                                                         num_draws=cfg.export_draws), out_dir / "posterior.nc"))
    bar.close()

    bounds_dict = bounds.to_dict()
    ks = [int(k) for k in bounds_dict]
    figures = [
        plots.bounds_vs_k(ks, [bounds_dict[str(k)]["mean"] for k in ks], [bounds_dict[str(k)]["mcse"] for k in ks],
                          out_dir / "bounds.png", est.log_likelihood[: len(sub[0])].mean().item()),
        plots.histogram(quality.khat[torch.isfinite(quality.khat)], out_dir / "khat.png",
                        "Pareto k-hat of the importance weights", "k-hat", threshold=quality.threshold),
    ]
    site, codes, continuous = _codes(ae, sub)
    figures.append(plots.bar(collapse.kl_per_dimension[site], out_dir / "kl_per_dimension.png",
                             f"KL(q || p) per unit of {site}", "nats per datum", threshold=collapse.kl_threshold))
    figures.append(plots.latent_scatter(codes, None if labels is None else labels[: len(sub[0])],
                                        out_dir / "latent_space.png", f"E_q[{site} | x] of test data"))
    if continuous:
        figures.append(_traversal(ae, site, codes, collapse.units[site].variance, sub, out_dir, image_shape))
    return {
        "kind": "importance",
        "config": dataclasses.asdict(cfg),
        "subsample": len(sub[0]),
        "log_likelihood": est.to_dict(),
        "bounds": bounds_dict,
        "elbo_decomposition": decomposition.to_dict(),
        "latent": collapse.to_dict(),
        "representations": representations.to_dict(),
        "guide_quality": quality.to_dict(),
        "predictive_checks": checks.to_dict(),
        "figures": [p.name for p in figures] + ["posterior.nc"],
    }


PER_DATUM_FILE = "log_likelihood_per_datum.npy"


def save_per_datum(out_dir: Path, log_likelihood: Tensor) -> Path:
    """The per-datum test log-likelihood estimates ``(N,)`` as ``.npy``: what ``aezoo compare`` pairs across runs."""
    path = Path(out_dir) / PER_DATUM_FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, log_likelihood.double().numpy())
    return path


def run_mcmc(ae: Autoencoder, samples: dict[str, Tensor], stats: dict[str, Tensor], data: Data, out_dir: str | Path,
             predict: Callable | None = None, max_points: int = 1000) -> dict[str, Any]:
    """The suite for MCMC draws of a model's latent sites: convergence, trace and rank plots, prediction.

    Args:
        ae: the autoencoder whose ``model`` was sampled.
        samples, stats: ``FitResult.samples`` (site -> ``(C, S, ...)``) and ``FitResult.stats``.
        data: test data ``(x, *covariates)``, ``x`` ``(N, D_x)``; the first ``max_points`` are used for prediction.
        out_dir: where ``trace.png`` and ``rank.png`` go.
        predict: the model module's ``predict(ae, samples, x, covariates=...)`` -> ``(mean, variance, log_predictive)``
            (e.g. :func:`aezoo.models.bayesian_ae.predict`), or None.

    Returns:
        JSON-ready dict: ``mcmc`` (:func:`aezoo.diagnostics.az.mcmc_summary` without per-coordinate
        lists), ``prediction`` (posterior predictive log-density and squared error per datum, with
        standard errors, when ``predict`` is given), ``figures``.
    """
    out_dir = Path(out_dir)
    out: dict[str, Any] = {"mcmc": az.mcmc_summary(samples, stats, per_coordinate=False), "subsample": 0}
    figures = [az.trace_plot(samples, out_dir / "trace.png", stats), az.rank_plot(samples, out_dir / "rank.png")]
    if predict is not None:
        with evaluating(ae) as device:
            sub = to_device(rows(data, slice(0, max_points)), device)
            mean, variance, log_pred = predict(ae, samples, sub[0], covariates=sub[1:])
        sq_err = (mean - sub[0]).pow(2).sum(-1)
        n = len(sub[0])
        out["subsample"] = n
        out["prediction"] = {
            "log_predictive": log_pred.mean().item(), "log_predictive_se": (log_pred.std() / n**0.5).item(),
            "squared_error": sq_err.mean().item(), "squared_error_se": (sq_err.std() / n**0.5).item(),
            "predictive_variance": variance.sum(-1).mean().item(), "num_data": n,
        }
    out["figures"] = [p.name for p in figures]
    return out


def _guide_sites(ae: Autoencoder, data: Data) -> dict[str, Any]:
    """The guide's latent sites (name -> distribution), traced on two data points."""
    with evaluating(ae) as device:
        return {n: s["fn"] for n, s in guide_sites(ae, *to_device(rows(data, slice(0, 2)), device)).items()}


def _deterministic(ae: Autoencoder, data: Data) -> bool:
    """True when every latent site of the guide is a point mass."""
    sites = _guide_sites(ae, data)
    return bool(sites) and all(is_deterministic(fn) for fn in sites.values())


def _codes(ae: Autoencoder, data: Data) -> tuple[str, Tensor, bool]:
    """What the latent figures show: the first continuous latent site (else the first latent site, e.g. the
    one-hot codes of ``gumbel_vae``, whose means are class probabilities), its guide means ``(N, D)``, and
    whether it is continuous (only a continuous site is traversed)."""
    sites = _guide_sites(ae, data)
    continuous = [n for n, fn in sites.items() if not fn.support.is_discrete]
    site = (continuous or list(sites))[0]
    means = latent.guide_means(ae, *data)
    return site, means[site].reshape(len(data[0]), -1), bool(continuous)


def _run_deterministic(ae: Autoencoder, data: Data, sub: Data, out_dir: Path, cfg: Config, labels: Tensor | None,
                       image_shape: tuple[int, int] | None) -> dict[str, Any]:
    """The suite for a point-mass guide: reconstruction, latent activity, predictive checks, export."""
    nan = float("nan")
    rec = latent.elbo_decomposition(ae, *data, num_particles=1).reconstruction
    collapse = latent.collapse_report(ae, *sub)
    checks = ppc.predictive_checks(ae, *sub, num_replicates=cfg.replicates)
    az.save_netcdf(az.to_inference_data(ae, *rows(data, slice(0, cfg.export_points)), num_draws=cfg.export_draws),
                   out_dir / "posterior.nc")
    site, codes, continuous = _codes(ae, sub)
    figures = [plots.latent_scatter(codes, None if labels is None else labels[: len(sub[0])],
                                    out_dir / "latent_space.png", f"encoder({site}) of test data")]
    if continuous:
        figures.append(_traversal(ae, site, codes, collapse.units[site].variance, sub, out_dir, image_shape))
    return {
        "kind": "reconstruction",
        "config": dataclasses.asdict(cfg),
        "subsample": len(sub[0]),
        "note": DETERMINISTIC_NOTE,
        "log_likelihood": {"log_likelihood": nan, "log_likelihood_mcse": nan, "log_likelihood_se": nan,
                           "elbo": nan, "inference_gap": nan, "num_particles": cfg.num_particles,
                           "num_data": len(data[0]), "reconstruction": rec.mean().item(),
                           "reconstruction_se": (rec.std() / len(rec) ** 0.5).item() if len(rec) > 1 else nan},
        "bounds": {},
        "elbo_decomposition": {"reconstruction": rec.mean().item()},
        # dead units: exactly 0 on every datum, i.e. never selected by a sparse encoder (k_sparse_ae's top k)
        "latent": {**collapse.to_dict(), "dead_units": {site: int((codes == 0).all(0).sum())}},
        "guide_quality": {"share_above": nan},
        "predictive_checks": checks.to_dict(),
        "figures": [p.name for p in figures] + ["posterior.nc"],
    }


def _traversal(ae: Autoencoder, site: str, codes: Tensor, activity: Tensor, data: Data, out_dir: Path,
               image_shape: tuple[int, int] | None, units: int = 8, steps: int = 7) -> Path:
    """Decode the mean code with each of the most active units moved through -3..3 (prior sds)."""
    order = activity.argsort(descending=True)[:units]
    values = torch.linspace(-3, 3, steps)
    base = codes.mean(0)
    grid = base.repeat(len(order), steps, 1)
    for row, u in enumerate(order):
        grid[row, :, u] = values
    device = next(ae.parameters()).device
    flat = grid.reshape(-1, grid.shape[-1]).to(device)
    like = to_device(rows(data, torch.zeros(len(flat), dtype=torch.long)), device)  # the first datum's covariates
    images = likelihood.decode(ae, {site: flat}, *like)
    return plots.latent_traversal(images.reshape(len(order), steps, -1), order.tolist(), values,
                                  out_dir / "latent_traversal.png",
                                  image_shape)
