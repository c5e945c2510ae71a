"""Gaussian-mixture VAE: a categorical cluster latent, a Gaussian latent per cluster, MLP decoder.

Generative story, for each datum b of the ``"data"`` plate, ``C`` components::

    z_y_b ~ Categorical(softmax(logits))            z_y: (B,); logits: (C,) learned
    z_b | z_y_b ~ N(loc[z_y_b], diag scale[z_y_b]^2)  z: (B, D_z); loc, scale: (C, D_z) learned
    x_b | z_b ~ p(x | decoder(z_b))                   x: (B, D_x); as in ``vae``

Guide: q(z_y_b | x_b) = Categorical(logits=e_y(x_b)) and q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2),
one MLP encoder ``D_x -> hidden_dims -> C + 2 D_z``; z does not depend on z_y in the guide, so the
discrete site can be enumerated (``svi`` with ``elbo="traceenum"``, the default here) or sampled
(``rws``, ``svi`` with ``elbo="tracegraph"``). ``iwae`` does not apply: z_y has no reparameterisation.

The model indexes its per-component parameters by the value of ``z_y``, so it broadcasts over
enumeration dims left of its plates. ``z_dist`` is the marginal prior p(z), a Gaussian mixture.

References:
    1. Deep Unsupervised Clustering with Gaussian Mixture Variational Autoencoders, Dilokthanakul
       et al., arXiv:1611.02648.
    2. Semi-Supervised Learning with Deep Generative Models (M2), Kingma, Rezende, Mohamed &
       Welling, arXiv:1406.5298.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.models import vae

DEFAULT_ENGINE = ("svi", {"elbo": "traceenum"})


@dataclass(frozen=True)
class Config(vae.Config):
    z_dim: int = 10
    num_components: int = 10


class Model(vae.Model):
    """p(z_y) p(z | z_y) p(x | z); the decoder and likelihood are ``vae``'s. See the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.logits = nn.Parameter(torch.zeros(cfg.num_components))
        self.locs = nn.Parameter(torch.randn(cfg.num_components, cfg.z_dim))
        self.scales_raw = nn.Parameter(torch.zeros(cfg.num_components, cfg.z_dim))

    @property
    def weights(self) -> Tensor:
        """Mixture weights ``(C,)``."""
        return self.logits.softmax(-1)

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            y = pyro.sample("z_y", dist.Categorical(logits=self.logits))
            z = pyro.sample("z", dist.Normal(self.locs[y], self.scales[y]).to_event(1))
            pyro.sample("x", self.x_dist(z), obs=x)

    @property
    def scales(self) -> Tensor:
        """Component standard deviations ``(C, D_z)``."""
        return F.softplus(self.scales_raw) + 1e-3

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The marginal prior p(z) = sum_c w_c N(loc_c, diag scale_c^2), event shape ``(D_z,)``."""
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits),
                                      dist.Normal(self.locs, self.scales).to_event(1))


class Guide(PyroModule):
    """q(z_y | x) q(z | x) from one encoder network; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = cfg.encoder(cfg.num_components + 2 * cfg.z_dim)

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            logits, loc, raw = self.encoder(x).split([self.cfg.num_components, self.cfg.z_dim, self.cfg.z_dim], -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))
            pyro.sample("z_y", dist.Categorical(logits=logits))


def build(cfg: Config = Config()) -> Autoencoder:
    """A GMVAE with the encoder ``D_x -> hidden_dims -> C + 2 D_z`` and ``vae``'s decoder."""
    cfg.no_flow("gmvae")
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def generating_model(cfg: Config, seed: int = 0) -> Model:
    """The seeded random model behind :func:`example_data`: unequal weights, well separated components.

    Component means are 4 apart per dimension on average with scale 0.3 and weights
    ``softmax(randn(C))``; a Gaussian likelihood has noise scale 0.1.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            model.logits.normal_()
            model.locs.mul_(4.0)
            model.scales_raw.fill_(-1.05)  # softplus^-1(0.3)
            if cfg.likelihood == "gaussian":
                model.scale_raw.fill_(-2.25)  # softplus^-1(0.1)
    return model


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from :func:`generating_model` (seeded), fit for its likelihood."""
    model = generating_model(cfg, seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            y = torch.distributions.Categorical(logits=model.logits).sample((n,))
            z = model.locs[y] + model.scales[y] * torch.randn(n, cfg.z_dim)
            return (model.x_dist(z).sample(),)
