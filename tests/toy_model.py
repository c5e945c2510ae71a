"""The 1-D toy model with closed forms (REFERENCES.md), shared by the tests.

``z ~ N(0, 1)``, ``x | z ~ N(z, 1)``, guide ``q(z | x) = N(a x + b, s^2)``: ``log p(x) = log N(x; 0, 2)``,
the exact posterior is ``N(x / 2, 1 / 2)``, ``d ELBO / d m = x - 2m`` and ``d ELBO / d s = 1/s - 2s``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder


class ToyModel(PyroModule):
    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


class ToyGuide(PyroModule):
    def __init__(self, a: float, b: float, s: float, family: type = dist.Normal) -> None:
        super().__init__()
        self.a, self.b, self.s = (nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in (a, b, s))
        self.family = family

    def forward(self, x, *covariates, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample("z", self.family(self.a * x + self.b, self.s).to_event(1))


def toy(a: float, b: float, s: float, family: type = dist.Normal) -> Autoencoder:
    return Autoencoder(ToyModel(), ToyGuide(a, b, s, family), config=None, name="toy")
