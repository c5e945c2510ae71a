"""Per-datum importance weights log p(x_b, z_b^k) - log q(z_b^k | x_b) with vectorised particles.

Pyro's ``vectorized_importance_weights`` sums over the batch; here a ``"particles"`` plate sits
left of the ``"data"`` plate and nothing is summed across data points, so per-datum bounds and
log-likelihoods follow by a logsumexp over particles alone ("Importance Weighted Autoencoders",
Burda, Grosse & Salakhutdinov, arXiv:1509.00519).
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder


def max_plate_nesting(ae: Autoencoder, *data: Tensor) -> int:
    """How many batch dims the model and guide use (their plates), found by one trace; cached."""
    cached = getattr(ae, "_max_plate_nesting", None)
    if cached is not None:
        return cached
    probe = [d[:2] for d in data]
    with torch.random.fork_rng(devices=[probe[0].device] if probe[0].is_cuda else []):  # leave the RNG as it was
        guide_tr = poutine.trace(ae.guide).get_trace(*probe)
        model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*probe)
    dims = [-f.dim for tr in (guide_tr, model_tr) for s in tr.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized]
    ae._max_plate_nesting = max(dims, default=0)
    return ae._max_plate_nesting


def log_weights(ae: Autoencoder, *data: Tensor, num_particles: int, num_data: int | None = None) -> Tensor:
    """Importance log-weights per particle and datum, differentiable (reparameterised guides).

    Args:
        ae: an autoencoder whose latent sites all lie inside the ``"data"`` plate.
        data: ``x`` ``(B, D_x)`` then covariates.
        num_particles: ``K``.
        num_data: ``N`` passed to model and guide; it changes their plate scale, not the weights.

    Returns:
        ``(K, B)`` log-weights in nats.

    Raises:
        ValueError: a sample site outside the ``"data"`` plate (a global latent): its log-density
            cannot be split per datum, so per-datum weights do not exist.
    """
    dim = -max_plate_nesting(ae, *data) - 1
    with pyro.plate("particles", num_particles, dim=dim):
        guide_tr = poutine.trace(ae.guide).get_trace(*data, num_data=num_data)
        model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data, num_data=num_data)
    nesting = -dim
    total = 0.0
    for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
        for name, site in prune_subsample_sites(tr).nodes.items():
            if site["type"] != "sample":
                continue
            data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == "data"]
            if not data_dims:
                raise ValueError(
                    f"site {name!r} is outside the 'data' plate; per-datum importance weights need local latents"
                )
            lp = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
            lp = lp.reshape((1,) * (nesting - lp.dim()) + lp.shape)
            others = [d for d in range(1, nesting) if d != nesting + data_dims[0]]
            total = total + sign * (lp.sum(others, keepdim=True) if others else lp)
    return total.reshape(total.shape[0], -1).expand(num_particles, len(data[0]))
