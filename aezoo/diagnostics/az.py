"""ArviZ diagnostics: guide quality by Pareto k-hat, MCMC convergence, InferenceData export, plots.

Every arviz call of aezoo lives in this module (ARCHITECTURE trap 10). ArviZ is imported lazily
on first use (about 2.5 s), and InferenceData is built with ``from_dict`` only, which ArviZ 0.2x
(Python 3.11, ``InferenceData``) and 1.x (``xarray.DataTree``, no ``from_pyro``) both have.

Thresholds follow [1] and [3]: k-hat <= 0.7, split R-hat <= 1.01, bulk and tail ESS >= 100 per
chain. Log-likelihoods and log-weights are in nats per datum.

References:
    1. Yes, but Did It Work?: Evaluating Variational Inference, Yao et al., arXiv:1802.02538.
    2. Pareto Smoothed Importance Sampling, Vehtari, Simpson, Gelman, Yao & Gabry, arXiv:1507.02646.
    3. Rank-normalization, folding, and localization: An improved R-hat for assessing convergence
       of MCMC, Vehtari, Gelman, Simpson, Carpenter & Buerkner, arXiv:1903.08008.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder, FitResult, atomic_path
from aezoo.diagnostics._traces import batches, evaluating
from aezoo.traces import Traces, log_weights, max_plate_nesting, trace_pair

KHAT_MAX = 0.7
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


@functools.cache
def import_arviz() -> ModuleType:
    """The ``arviz`` module, imported once with ArviZ 0.2x's refactor ``FutureWarning`` silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz
    return arviz


def _from_dict(groups: dict[str, dict[str, np.ndarray]], **kwargs):
    """``az.from_dict`` with groups as keywords (ArviZ 0.x) or as one mapping (ArviZ 1.x)."""
    az = import_arviz()
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups, **kwargs)
    return az.from_dict(**groups, **kwargs)


def _numpy(tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


def _json(value):
    """Floats (nested lists for arrays) with NaN and infinities as ``None``, so JSON stays standard."""
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value if math.isfinite(value) else None


def _chunk(data: tuple[Tensor, ...], particles: int, batch_size: int, max_elements: int) -> int:
    """Data per chunk: at most ``batch_size``, and ``particles x chunk x D_x <= max_elements`` (memory)."""
    return max(1, min(batch_size, max_elements // (particles * max(data[0][0].numel(), 1))))


def pareto_khat(log_weights: Tensor, flat_tol: float = 1e-3) -> Tensor:
    """Pareto k-hat of the importance weights of each datum (PSIS [2] via ``az.psislw``).

    ``az.psislw`` takes samples on the last axis, hence the transpose. On weights that are all
    equal it finds no tail (at most 4 weights strictly above the cutoff) and returns ``+inf``;
    on weights differing only by rounding it fits noise (values from -4 to ``+inf``, with numpy
    RuntimeWarnings). Data whose log-weights span less than ``flat_tol`` nats are therefore set
    to ``-inf``: their weights agree within 0.1 % (default), the importance estimate is exact to
    ``flat_tol`` nats and there is no tail to fit (an exact guide, e.g. linear-Gaussian).

    Args:
        log_weights: ``(K, N)`` log importance weights, K particles per datum.
        flat_tol: spread in nats below which weights count as constant.

    Returns:
        ``(N,)`` float64 k-hat on the CPU; above 0.7 the guide is unreliable for that datum [1].

    Raises:
        ValueError: K < 25 (the tail, min(K/5, 3 sqrt(K)) weights, needs at least 5).
    """
    if log_weights.shape[0] < 25:
        raise ValueError(f"Pareto k-hat needs at least 25 particles per datum, got {log_weights.shape[0]}")
    lw = log_weights.detach().double().cpu().T  # (N, K): samples last
    flat = (lw.max(1).values - lw.min(1).values) < flat_tol
    khat = torch.full((len(lw),), -math.inf, dtype=torch.float64)
    if not flat.all():
        khat[~flat] = torch.from_numpy(np.asarray(import_arviz().psislw(lw[~flat].numpy())[1], dtype=float))
    return khat


@dataclass
class GuideQuality:
    """Per-datum Pareto k-hat of a guide's importance weights.

    Attributes:
        khat: ``(N,)`` k-hat per datum; ``-inf`` where the weights are constant (see :func:`pareto_khat`).
        threshold: k-hat above which a datum counts as badly covered (0.7 [1]).
        num_particles: ``K`` importance samples per datum.
    """

    khat: Tensor
    threshold: float
    num_particles: int

    @property
    def share_above(self) -> float:
        """Share of data points with k-hat above ``threshold``, in [0, 1]."""
        return float((self.khat > self.threshold).double().mean())

    def to_dict(self) -> dict:
        """JSON-ready: ``threshold, num_particles, share_above, khat_max, khat_median`` (over data
        with a fitted tail), ``num_flat`` (constant weights) and ``khat`` (list; non-finite as ``None``)."""
        fitted = self.khat[self.khat > -math.inf]  # +inf (too few distinct tail weights) stays, as None
        return {
            "threshold": self.threshold,
            "num_particles": self.num_particles,
            "share_above": self.share_above,
            "khat_max": _json(float(fitted.max())) if len(fitted) else None,
            "khat_median": _json(float(fitted.median())) if len(fitted) else None,
            "num_flat": int((self.khat == -math.inf).sum()),
            "khat": _json(self.khat.tolist()),
        }


def guide_quality(
    ae: Autoencoder,
    *data: Tensor,
    num_particles: int = 1000,
    threshold: float = KHAT_MAX,
    batch_size: int = 100,
    max_elements: int = 2**24,
) -> GuideQuality:
    """Pareto k-hat of the importance weights p(x_n, z) / q(z | x_n), z ~ q, for every datum [1].

    Args:
        ae: an autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates; moved to ``ae``'s device chunk by chunk.
        num_particles: ``K`` (the PSIS tail holds min(K/5, 3 sqrt(K)) weights).
        threshold: see :class:`GuideQuality`.
        batch_size, max_elements: at most ``batch_size`` data per chunk, fewer where
            ``K x B x D_x`` would exceed ``max_elements`` (memory).

    Returns:
        :class:`GuideQuality`.
    """
    step = _chunk(data, num_particles, batch_size, max_elements)
    with evaluating(ae) as device:
        khat = [pareto_khat(log_weights(ae, *b, num_particles=num_particles)) for b in batches(ae, data, step, device)]
    return GuideQuality(torch.cat(khat), threshold, num_particles)


def mcmc_summary(
    samples: dict[str, Tensor], stats: dict[str, Tensor] | None = None, per_coordinate: bool = True
) -> dict:
    """Convergence diagnostics of MCMC draws [3]: rank-normalised split R-hat, bulk/tail ESS, MCSE.

    Args:
        samples: site -> ``(C, S, *site_shape)`` draws, C >= 2 chains for a meaningful R-hat.
        stats: engine statistics; ``"diverging"`` ``(C, S)`` bool is counted when present.
        per_coordinate: also list each coordinate's values (nested lists of ``site_shape``).

    Returns:
        JSON-ready dict: ``num_chains, num_draws, thresholds {r_hat, ess_per_chain}``, ``sites``
        (site -> ``r_hat_max, ess_bulk_min, ess_tail_min, mcse_mean_max`` and, with
        ``per_coordinate``, ``r_hat, ess_bulk, ess_tail, mcse_mean``), the overall ``r_hat_max,
        ess_bulk_min, ess_tail_min``, ``r_hat_ok`` (max <= 1.01), ``ess_ok`` (both minima >= 100 C)
        and, with ``"diverging"`` in ``stats``, ``divergences`` and ``divergences_ok``. NaN
        (e.g. R-hat of constant draws) is written as ``None`` and makes its flag false.
    """
    az = import_arviz()
    chains, draws = next(iter(samples.values())).shape[:2]
    idata = _from_dict({"posterior": _numpy(samples)})
    found = {"r_hat": az.rhat(idata, method="rank"), "ess_bulk": az.ess(idata, method="bulk"),
             "ess_tail": az.ess(idata, method="tail"), "mcse_mean": az.mcse(idata, method="mean")}
    out = {"num_chains": chains, "num_draws": draws, "sites": {name: {} for name in samples},
           "thresholds": {"r_hat": RHAT_MAX, "ess_per_chain": ESS_PER_CHAIN_MIN}}
    for key, op in (("r_hat", np.max), ("ess_bulk", np.min), ("ess_tail", np.min), ("mcse_mean", np.max)):
        label = f"{key}_{'max' if op is np.max else 'min'}"
        values = {name: np.asarray(found[key][name].values, dtype=float) for name in samples}
        for name, v in values.items():
            out["sites"][name][label] = _json(float(op(v)))
            if per_coordinate:
                out["sites"][name][key] = _json(v.tolist())
        out[label] = float(op(np.concatenate([v.ravel() for v in values.values()])))  # NaN propagates
    out["r_hat_ok"] = bool(out["r_hat_max"] <= RHAT_MAX)
    out["ess_ok"] = bool(min(out["ess_bulk_min"], out["ess_tail_min"]) >= ESS_PER_CHAIN_MIN * chains)
    if stats and "diverging" in stats:
        out["divergences"] = int(stats["diverging"].sum())
        out["divergences_ok"] = out["divergences"] == 0
    return {k: _json(v) if isinstance(v, float) else v for k, v in out.items()}


def _export_chunk(ae: Autoencoder, batch: tuple[Tensor, ...], num: int, latents: dict[str, Tensor]) -> dict:
    """Group -> site -> ``(num, B, ...)`` tensor for one chunk of B data (observed data: ``(B, ...)``).

    The model runs under a ``num``-particle plate, on draws of the guide (replayed) or, when
    ``latents`` (site -> ``(num, B, *event)``) is given, on those values (conditioned).
    """
    if latents:
        nesting = max_plate_nesting(ae, *batch)
        with pyro.plate("particles", num, dim=-nesting - 1):
            model_tr = poutine.trace(poutine.condition(ae.model, data=latents)).get_trace(*batch)
        tr = Traces(guide=None, model=prune_subsample_sites(model_tr), nesting=nesting, num_particles=num,
                    batch_size=len(batch[0]), device=batch[0].device)
        missing = sorted({n for n, s in tr.model.nodes.items() if s["type"] == "sample" and not s["is_observed"]})
        if missing or not set(latents) <= set(tr.observed):
            raise ValueError(f"MCMC sites {sorted(latents)} are not the model's latents (unset: {missing})")
    else:
        tr = trace_pair(ae, *batch, num_particles=num)
    observed = [n for n in tr.observed if n not in latents]  # conditioned latents count as observed
    out = {
        "log_likelihood": {n: tr.log_prob(tr.model, [n]) for n in observed},
        "observed_data": {n: tr.model.nodes[n]["value"] for n in observed},
    }
    if not latents:
        out["posterior"] = {n: tr.per_datum(s["value"], n, s, len(s["fn"].event_shape))
                            for n, s in ((n, tr.guide.nodes[n]) for n in tr.latent)}
        joint = tr.log_prob(tr.model, [n for n, s in tr.model.nodes.items() if s["type"] == "sample"])
        out["sample_stats"] = {"log_weight": joint - tr.log_prob(tr.guide, tr.latent)}
    return out


def _event_dims(name: str, ndim: int) -> list[str]:
    return [f"{name}_dim"] if ndim == 1 else [f"{name}_dim_{i}" for i in range(ndim)]


def to_inference_data(
    ae: Autoencoder,
    *data: Tensor,
    result: FitResult | None = None,
    num_draws: int = 100,
    batch_size: int = 100,
    max_elements: int = 2**24,
):
    """Export a fit as ArviZ InferenceData (``xarray.DataTree`` on ArviZ 1.x), built with ``from_dict``.

    Groups (dims in brackets; ``datum`` indexes the N data points, ``<site>_dim`` a site's event):

    - ``posterior``: each local latent site ``[chain, draw, datum, <site>_dim]``: ``num_draws``
      guide draws z ~ q(z | x) as one chain (``<site>_dim`` flattens the site's other plates and
      event dims), or ``result.samples`` when it holds MCMC draws ``(C, S, N, *event)``.
    - ``log_likelihood``: each observed site ``[chain, draw, datum]``: log p(x_n | z) at each
      draw, nats, from replaying the model with the draw (any site names).
    - ``sample_stats``: guide draws: ``log_weight [chain, draw, datum]`` = log p(x_n, z) -
      log q(z | x_n); MCMC: the entries of ``result.stats`` shaped ``(C, S, ...)`` (the group is
      absent when there are none).
    - ``observed_data``: each observed site ``[datum, <site>_dim]``. Covariates are not exported.

    Args:
        ae: an autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates; moved to ``ae``'s device chunk by chunk.
        result: an engine's result; MCMC draws are used when ``result.samples`` is non-empty.
        num_draws: guide draws per datum (ignored for MCMC results).
        batch_size, max_elements: at most ``batch_size`` data per chunk, fewer where
            ``draws x B x D_x`` would exceed ``max_elements`` (memory).

    Returns:
        ``arviz.InferenceData`` with attrs ``aezoo_model`` and ``posterior_source`` (guide/mcmc).

    Raises:
        ValueError: an MCMC site that is not a local latent ``(C, S, N, ...)`` of the model, or a
            site outside the ``"data"`` plate.
    """
    n = len(data[0])
    samples = dict(result.samples) if result is not None else {}
    bad = [k for k, v in samples.items() if v.dim() < 3 or v.shape[2] != n]
    if bad:
        raise ValueError(f"MCMC sites {bad} are not shaped (C, S, N={n}, ...): per-datum export needs local latents")
    chains, draws = next(iter(samples.values())).shape[:2] if samples else (1, num_draws)
    parts: dict[str, dict[str, list[Tensor]]] = {}
    step = _chunk(data, chains * draws, batch_size, max_elements)
    with evaluating(ae) as device:
        for i, batch in enumerate(batches(ae, data, step, device)):
            rows = slice(i * step, (i + 1) * step)
            latents = {k: v[:, :, rows].flatten(0, 1).to(device) for k, v in samples.items()}
            for group, sites in _export_chunk(ae, batch, chains * draws, latents).items():
                for name, value in sites.items():
                    parts.setdefault(group, {}).setdefault(name, []).append(value.cpu())
    cat = {g: {k: torch.cat(v, dim=int(g != "observed_data")) for k, v in p.items()} for g, p in parts.items()}
    per_draw = {g: {k: v.reshape(chains, draws, *v.shape[1:]) for k, v in cat.get(g, {}).items()}
                for g in ("posterior", "log_likelihood", "sample_stats")}
    if samples:
        per_draw["posterior"] = samples
        per_draw["sample_stats"] = {k: v for k, v in result.stats.items() if tuple(v.shape[:2]) == (chains, draws)}
    dims = {k: ["datum", *_event_dims(k, v.dim() - 3)] for k, v in per_draw["posterior"].items()}
    dims.update({k: ["datum"] for k in [*per_draw["log_likelihood"], "log_weight"]})
    attrs = {"aezoo_model": ae.name, "posterior_source": "mcmc" if samples else "guide"}
    idata = _from_dict({g: _numpy(v) for g, v in per_draw.items()}, dims=dims, attrs=attrs)
    # a second call: dims are keyed by variable name across groups, and observed "x" has event dims
    obs = cat.get("observed_data", {})
    obs_dims = {k: ["datum", *_event_dims(k, v.dim() - 1)] for k, v in obs.items()}
    idata["observed_data"] = _from_dict({"observed_data": _numpy(obs)}, dims=obs_dims, attrs=attrs)["observed_data"]
    return idata


def save_netcdf(idata, path: str | Path) -> Path:
    """Write InferenceData to a NetCDF-4 file with the h5netcdf engine (ArviZ's dependency); returns ``path``."""
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return Path(path)


def load_netcdf(path: str | Path):
    """Read a file written by :func:`save_netcdf` with ``az.from_netcdf``, loaded into memory."""
    az = import_arviz()
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path))


def _plot(samples: dict[str, Tensor], path, max_vars: int, stats: dict | None, figsize, draw) -> Path:
    """Draw up to ``max_vars`` scalar ``(C, S)`` traces ``site[i, j]``, spread over the sites, to a PNG."""
    traces = {}
    for name, v in samples.items():
        flat = v.detach().cpu().reshape(*v.shape[:2], -1).numpy()
        for i in range(min(max(1, max_vars // len(samples)), flat.shape[-1])):
            index = np.unravel_index(i, tuple(v.shape[2:]))
            traces[f"{name}[{', '.join(map(str, index))}]" if index else name] = flat[..., i]
    traces = dict(list(traces.items())[:max_vars])
    groups = {"posterior": traces}
    if stats and "diverging" in stats:
        groups["sample_stats"] = {"diverging": stats["diverging"].cpu().numpy()}
    fig = Figure(figsize=figsize(len(traces)), layout="constrained")  # no pyplot: any backend, no leaks
    with warnings.catch_warnings():  # ArviZ 0.23 plots use an API matplotlib 3.11 deprecates: not ours to fix
        warnings.filterwarnings("ignore", "Passing a dict or None as alias_mapping", DeprecationWarning)
        draw(import_arviz(), _from_dict(groups), fig, len(traces))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(path)


def trace_plot(
    samples: dict[str, Tensor], path: str | Path, stats: dict[str, Tensor] | None = None, max_vars: int = 4
) -> Path:
    """ArviZ trace plot of MCMC draws: per-chain density and trace, one row per coordinate.

    Args:
        samples: site -> ``(C, S, *site_shape)``; the first coordinates of each site are drawn.
        path: PNG file to write.
        stats: engine statistics; ``"diverging"`` ``(C, S)`` is marked on the traces.
        max_vars: most coordinates drawn, spread over the sites.
    """
    return _plot(samples, path, max_vars, stats, lambda n: (9, 1.9 * n),
                 lambda az, idata, fig, n: az.plot_trace(idata, axes=fig.subplots(n, 2, squeeze=False)))


def rank_plot(samples: dict[str, Tensor], path: str | Path, max_vars: int = 4) -> Path:
    """ArviZ rank plot: per-chain histograms of pooled ranks, flat when chains mix [3]; as :func:`trace_plot`."""
    return _plot(samples, path, max_vars, None, lambda n: (3.2 * n, 3),
                 lambda az, idata, fig, n: az.plot_rank(idata, ax=fig.subplots(1, n, squeeze=False)[0]))
