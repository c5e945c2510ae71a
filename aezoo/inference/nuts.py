"""The No-U-Turn sampler [1] over the latent sites of any Pyro model (Pyro or NumPyro backend).

Everything but the trajectory length is :class:`aezoo.inference.hmc.HMC`: NUTS grows each
trajectory by doubling until it turns back on itself, up to ``2**max_tree_depth`` leapfrog steps.

References:
    1. The No-U-Turn Sampler: Adaptively Setting Path Lengths in Hamiltonian Monte Carlo,
       Hoffman & Gelman, arXiv:1111.4246.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyro.infer.mcmc as pyro_mcmc

from aezoo.checks import integer
from aezoo.inference.hmc import HMC


@dataclass(frozen=True)
class NUTS(HMC):
    """No-U-Turn sampler; fields as :class:`~aezoo.inference.hmc.HMC` (``num_steps`` unused).

    Attributes:
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps per draw.
    """

    max_tree_depth: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("max_tree_depth", self.max_tree_depth)

    def pyro_kernel(self, model: Callable, dtype=None, max_plate_nesting=None) -> pyro_mcmc.NUTS:
        return pyro_mcmc.NUTS(model, max_tree_depth=self.max_tree_depth, **self._pyro_args(dtype, max_plate_nesting))

    def numpyro_kernel(self, potential_fn: Callable | None = None, model: Callable | None = None):
        import numpyro.infer

        return numpyro.infer.NUTS(model, potential_fn=potential_fn, max_tree_depth=self.max_tree_depth,
                                  **self._numpyro_args())


ENGINE = NUTS
