"""Posterior collapse in a linear conditional VAE: the condition explains variance, so more units collapse.

Linear CVAE (the setting of Dang et al., "Beyond Vanilla Variational Autoencoders: Detecting
Posterior Collapse in Conditional and Hierarchical Variational Autoencoders", ICLR 2024):
``z ~ N(0, I)``, ``x | z, c ~ N(W z + B c + mu, sigma^2 I)`` with sigma fixed, a linear amortized
guide q(z | x, c) with a learned diagonal variance. Its marginal ``x | c ~ N(B c + mu, W W^T +
sigma^2 I)`` is probabilistic PCA of the residual ``x - B c - mu``, so at the maximum likelihood
(Tipping & Bishop) the column of W for each eigenvalue of the residual covariance
``Sigma_res = Cov(x) - Cov(x, c) Cov(c)^-1 Cov(c, x)`` at or below sigma^2 is zero and its unit
collapses: the stronger the input-output correlation, the smaller Sigma_res and the more units
collapse (Dang et al.'s finding for CVAEs), while a VAE of x alone keeps a unit per eigenvalue
of Cov(x) above sigma^2. The condition is derived here for this linear Gaussian case.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from aezoo.core import Autoencoder, Covariate
from aezoo.diagnostics import collapse_report
from aezoo.guides import AmortizedNormal
from aezoo.inference import ENGINES
from aezoo.models import linear_gaussian as lg

D_X, D_C, D_Z, SIGMA = 6, 3, 4, 1.0


class LinearCVAE(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(0.1 * torch.randn(D_X, D_Z, dtype=torch.float64))
        self.B = nn.Parameter(torch.zeros(D_X, D_C, dtype=torch.float64))
        self.mu = nn.Parameter(torch.zeros(D_X, dtype=torch.float64))

    def forward(self, x, c=None, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + c @ self.B.T + self.mu, SIGMA).to_event(1), obs=x)


class LinearGuide(PyroModule):
    """q(z | x, c) = N(E [x, c] + e, diag s^2): linear mean, one learned variance per unit."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D_X + D_C, D_Z).double()
        self.raw_scale = nn.Parameter(torch.zeros(D_Z, dtype=torch.float64))

    def forward(self, x, c=None, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            loc = self.linear(torch.cat([x, c], -1))
            pyro.sample("z", dist.Normal(loc, F.softplus(self.raw_scale).expand_as(loc)).to_event(1))


def data(n: int = 2000, seed: int = 0):
    """``(x, c)``: Cov(x) has 5 eigenvalues above sigma^2, the residual given c only 2."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, D_C, generator=g, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(D_X, D_X, generator=g, dtype=torch.float64))[0]
    residual = (torch.randn(n, D_X, generator=g, dtype=torch.float64)
                * torch.tensor([4.0, 2.5, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64).sqrt()) @ rot.T
    A = 1.5 * rot[:, 2:5]  # the condition drives three directions where the residual is small
    return c @ A.T + residual + 1.0, c


def eigenvalues_above(cov: torch.Tensor, threshold: float) -> int:
    return int((torch.linalg.eigvalsh(cov) > threshold).sum())


def fit(ae, *data):
    svi = ENGINES["svi"]
    svi(epochs=40, batch_size=100, lr=0.03, progress=False).fit(ae, *data)
    svi(epochs=15, batch_size=500, lr=0.003, progress=False).fit(ae, *data)  # anneal


def test_the_condition_collapses_the_units_it_explains():
    # Convergence, not Monte Carlo: over four seeds the collapsed units reached activity <= 1e-4 and KL
    # <= 1e-4 nats, the active ones activity >= 0.56 (the threshold is 0.01).
    x, c = data()
    xc, cc = x - x.mean(0), c - c.mean(0)
    cov_x, cov_xc, cov_c = xc.T @ xc / len(x), xc.T @ cc / len(x), cc.T @ cc / len(x)
    residual = cov_x - cov_xc @ torch.linalg.solve(cov_c, cov_xc.T)
    predicted_cvae, predicted_vae = eigenvalues_above(residual, SIGMA**2), eigenvalues_above(cov_x, SIGMA**2)
    assert (predicted_cvae, predicted_vae) == (2, 5)  # the data are built so the two predictions differ

    torch.manual_seed(0)
    cvae = Autoencoder(LinearCVAE(), LinearGuide(), None, "linear_cvae",
                       covariates=(Covariate("c", "continuous", required=True),))
    fit(cvae, x, c)
    report = collapse_report(cvae, x[:500], c[:500])
    assert report.active_units["z"] == predicted_cvae
    assert report.collapsed == [f"z[{j}]" for j, a in enumerate(report.units["z"].active.tolist()) if not a]

    cfg = lg.Config(x_dim=D_X, z_dim=D_Z, sigma=SIGMA)
    torch.manual_seed(0)
    vae = Autoencoder(lg.Model(cfg), AmortizedNormal("z", nn.Linear(D_X, 2 * D_Z)), cfg, "linear_vae").double()
    fit(vae, x)
    assert collapse_report(vae, x[:500]).active_units["z"] == min(D_Z, predicted_vae)  # every unit in use
