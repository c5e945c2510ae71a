"""Posterior collapse in a two-level linear hierarchical VAE: the top layer keeps fewer units than a VAE.

Linear Markovian HVAE (the setting of Dang et al., "Beyond Vanilla Variational Autoencoders:
Detecting Posterior Collapse in Conditional and Hierarchical Variational Autoencoders", ICLR 2024,
with the bottom map fixed to the identity so that the solution is unique)::

    z2 ~ N(0, I_{D_2}),   z1 | z2 ~ N(U z2 + b, eta^2 I_D),   x | z1 ~ N(z1, sigma^2 I_D)

with eta and sigma fixed, and the guide q(z1 | x) q(z2 | z1), linear means and one learnable
variance per unit at each level. Derivation: the marginal ``x ~ N(b, U U^T + (eta^2 + sigma^2) I)``
is probabilistic PCA with noise ``tau^2 = eta^2 + sigma^2``, so at the maximum likelihood (Tipping &
Bishop) the column of U for each eigenvalue of Cov(x) at or below tau^2 is zero. The ELBO reaches
that maximum only where the guide holds the exact posterior ``p(z1 | x) p(z2 | z1)`` (z2 is
independent of x given z1): the learnable diagonal variances hold it when Cov(x) is axis-aligned
and the columns of U are orthogonal, which forces each z2 unit onto one eigen-direction, so exactly
``#{lambda_i > eta^2 + sigma^2}`` z2 units are active and the others equal their prior (collapse),
while a one-level linear VAE with the same emission noise keeps ``#{lambda_i > sigma^2}``. Every z1
unit stays active: its posterior mean moves with x by the gain ``P_i / (P_i + sigma^2)``,
``P_i = max(lambda_i - tau^2, 0) + eta^2``, so its activity is ``gain_i^2 lambda_i``. The threshold
grows with the level's own variance eta^2: the hierarchy collapses units at the top that a single
layer keeps, Dang et al.'s observation for HVAEs with learnable encoder variance.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder
from aezoo.diagnostics import collapse_report
from aezoo.guides import AmortizedNormal
from aezoo.inference import ENGINES
from aezoo.models import linear_gaussian as lg

D, D_2, SIGMA2, ETA2 = 6, 4, 0.5, 0.5
SPECTRUM = (4.0, 2.5, 1.8, 0.8, 0.2, 0.1)  # three above eta^2 + sigma^2 = 1, four above sigma^2


class LinearHVAE(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.U = nn.Parameter(0.1 * torch.randn(D, D_2, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(D, dtype=torch.float64))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(D_2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.U.T + self.b, ETA2**0.5).to_event(1))
            pyro.sample("x", dist.Normal(z1, SIGMA2**0.5).to_event(1), obs=x)


class LinearMarkovGuide(PyroModule):
    """q(z1 | x) q(z2 | z1): linear means, one learned variance per unit at each level."""

    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.Linear(D, D).double()
        self.up2 = nn.Linear(D, D_2).double()
        self.raw1 = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.raw2 = nn.Parameter(torch.zeros(D_2, dtype=torch.float64))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            loc1 = self.up1(x)
            z1 = pyro.sample("z1", dist.Normal(loc1, F.softplus(self.raw1).expand_as(loc1)).to_event(1))
            loc2 = self.up2(z1)
            pyro.sample("z2", dist.Normal(loc2, F.softplus(self.raw2).expand_as(loc2)).to_event(1))


def data(n: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64) * torch.tensor(SPECTRUM, dtype=torch.float64).sqrt() + 1


def fit(ae, x):
    svi = ENGINES["svi"]
    svi(epochs=40, batch_size=100, lr=0.03, analytic_kl=False, progress=False).fit(ae, x)
    svi(epochs=15, batch_size=500, lr=0.003, analytic_kl=False, progress=False).fit(ae, x)  # anneal


def test_the_top_layer_keeps_only_the_directions_above_both_variances():
    x = data()
    xc = x - x.mean(0)
    cov = xc.T @ xc / len(x)
    lam = torch.linalg.eigvalsh(cov)
    predicted_z2 = min(D_2, int((lam > ETA2 + SIGMA2).sum()))
    predicted_vae = min(D_2, int((lam > SIGMA2).sum()))
    prior_var = (lam - ETA2 - SIGMA2).clamp(min=0) + ETA2
    activity_z1 = (prior_var / (prior_var + SIGMA2)) ** 2 * lam  # per eigen-direction, ascending
    predicted_z1 = int((activity_z1 > 0.01).sum())
    assert (predicted_z2, predicted_vae, predicted_z1) == (3, 4, D)  # the data are built so they differ

    torch.manual_seed(0)
    hvae = Autoencoder(LinearHVAE(), LinearMarkovGuide(), None, "linear_hvae")
    fit(hvae, x)
    report = collapse_report(hvae, x[:500])
    assert report.active_units["z2"] == predicted_z2
    assert report.active_units["z1"] == predicted_z1
    # each z1 unit's activity is its direction's gain^2 lambda; a variance over 500 data has a relative
    # standard error sqrt(2 / 499) = 6.3 %: four of them (over four seeds the largest deviation was 6.5 %)
    measured = report.units["z1"].variance.sort().values
    assert torch.allclose(measured, activity_z1.to(measured), rtol=4 * (2 / 499) ** 0.5)
    assert report.collapsed == [f"z2[{j}]" for j, a in enumerate(report.units["z2"].active.tolist()) if not a]

    cfg = lg.Config(x_dim=D, z_dim=D_2, sigma=SIGMA2**0.5)
    torch.manual_seed(0)
    vae = Autoencoder(lg.Model(cfg), AmortizedNormal("z", nn.Linear(D, 2 * D_2)), cfg, "linear_vae").double()
    fit(vae, x)
    assert collapse_report(vae, x[:500]).active_units["z"] == predicted_vae
