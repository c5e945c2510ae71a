"""Graph autoencoder: the VGAE's inner-product decoder with a deterministic GCN encoder.

Generative story (that of :mod:`aezoo.models.vgae`), for each graph b of the ``"data"`` plate::

    z_b ~ N(0, I)                                         z: (B, V, D_z)
    x_b,ij | z_b ~ Bernoulli(sigmoid(z_b,i . z_b,j))      x: (B, V, V), each pair i < j in mask_b once

Guide: q(z_b | adjacency_b, features_b) = delta(z_b - GCN(features_b, adjacency_b)), a point mass.

Covariates ``(x, features, adjacency, mask)`` as in :mod:`aezoo.models.vgae`. Default objective
(``DEFAULT_ENGINE``): the reconstruction log-likelihood alone, ``log p(x | z = GCN(...))``, as the
GAE of [1] (``svi`` with ``beta = 0``: the prior does not enter). With a point-mass guide there is
no density over z: the importance-sampling engines (``iwae``, ``rws``) and log p(x) do not apply.

References:
    1. Variational Graph Auto-Encoders, Kipf & Welling, arXiv:1611.07308.
"""

from __future__ import annotations

from aezoo.core import Autoencoder
from aezoo.models import vgae
from aezoo.models.vgae import COVARIATES, Config, example_data

DEFAULT_ENGINE = ("svi", {**vgae.DEFAULT_ENGINE[1], "beta": 0.0})


def build(cfg: Config = Config()) -> Autoencoder:
    """A GAE: the GCN encoder ``F -> hidden_dims -> D_z`` per node and the inner-product decoder."""
    return Autoencoder(vgae.Model(cfg), vgae.Guide(cfg, deterministic=True), cfg, name=__name__.rsplit(".", 1)[-1],
                       covariates=COVARIATES)


__all__ = ["COVARIATES", "Config", "DEFAULT_ENGINE", "build", "example_data"]
