"""An inverse-autoregressive-flow guide: an amortized diagonal Normal pushed through affine autoregressive maps.

``q(z | x)``: ``z_0 ~ N(mu(x), diag sigma(x)^2)``, then ``z_k = f_k(z_{k-1})`` for ``k = 1..K`` with
Pyro's ``AffineAutoregressive`` transforms (each an ``AutoRegressiveNN`` with its own random
variable order), ``z = z_K``; ``log q(z | x) = log N(z_0) - sum_k log |det df_k / dz_{k-1}|``. As in
[1] the flow is a function of ``z`` with an IAF's one-pass sampling and density of its own draws
(Pyro caches the inverse); unlike [1] the flow takes no context ``h(x)``: the amortization enters
through the base Normal. Fully reparameterised, so every engine applies.

References:
    1. Improved Variational Inference with Inverse Autoregressive Flow, Kingma, Salimans, Jozefowicz,
       Chen, Sutskever & Welling, arXiv:1606.04934.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
from pyro.nn import AutoRegressiveNN, PyroModule
from torch import Tensor, nn

from aezoo.guides.normal import AmortizedNormal


class AmortizedIAF(PyroModule):
    """q(site_b | x_b): the :class:`AmortizedNormal` of ``encoder`` followed by ``flow_layers`` IAF steps.

    Args:
        site: the latent site it proposes, e.g. ``"z"``.
        encoder: network ``(..., D_x) -> (..., 2 * D_z)``.
        z_dim: ``D_z``.
        flow_layers: the number ``K`` of affine autoregressive transforms (>= 1).
        hidden: hidden width of each transform's ``AutoRegressiveNN`` (default ``2 D_z``, at least 8).

    Raises:
        ValueError: ``flow_layers < 1``.
    """

    def __init__(self, site: str, encoder: nn.Module, z_dim: int, flow_layers: int, hidden: int | None = None):
        super().__init__()
        if flow_layers < 1:
            raise ValueError(f"an IAF guide needs flow_layers >= 1, got {flow_layers}")
        self.site = site
        self.base = AmortizedNormal(site, encoder)
        width = hidden or max(2 * z_dim, 8)
        self.flows = nn.ModuleList(T.AffineAutoregressive(AutoRegressiveNN(z_dim, [width])) for _ in range(flow_layers))

    def distribution(self, x: Tensor) -> dist.Distribution:
        """q(z | x) for ``x`` ``(B, D_x)``: batch shape ``(B,)``, event shape ``(D_z,)``."""
        loc, scale = self.base.encode(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), list(self.flows))

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, self.distribution(x))
