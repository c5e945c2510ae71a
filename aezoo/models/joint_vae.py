"""JointVAE: a Gaussian latent and categorical latents side by side, trained with a capacity for each.

Generative story, for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                                   z: (B, D_z) continuous
    z_c_b ~ prod_d OneHotCategorical(1/K, ..., 1/K)       z_c: (B, D_c, K) one-hot; D_c = num_discrete
    x_b | z_b, z_c_b ~ p(x | decoder([z_b, flatten z_c_b]))  x: (B, D_x); as in ``vae``

Guide: q(z_b | x_b) q(z_c_b | x_b) = N(mu(x_b), diag sigma(x_b)^2) prod_d Cat(softmax(logits_d(x_b))),
one encoder ``D_x -> hidden_dims -> 2 D_z + D_c K``.

The default engine is [1]'s objective: ``svi`` with the Gumbel-softmax relaxation of ``z_c`` at a
fixed temperature 0.67 (:mod:`aezoo.inference.terms.temperature`) and the capacity objective with a
capacity per site (``capacity_sites``): ``-E_q[log p(x | z, z_c)] + gamma |KL_z - C_z| + gamma |KL_c - C_c|``
per datum, ``KL_c`` the categorical KL ``sum_k q_k log(K q_k)`` summed over the ``D_c`` variables, each
``C`` rising linearly to its maximum over its own epochs. [1]'s MNIST settings: ``gamma = 30``,
``C_z`` to 5 nats and ``C_c`` to 5 nats over 25,000 iterations of 64 images (26.7 epochs of 60,000),
``C_c`` capped at ``log 10 = 2.30`` nats, which it reaches after 11,500 iterations (12 epochs): here
``capacity_sites=("z=5:27", "z_c=2.303:12")``. Outside the relaxation (diagnostics, ``rws``) ``z_c`` is
the exact one-hot site; :func:`aezoo.diagnostics.traversal.traversals` decodes each continuous unit
and each category.

References:
    1. Learning Disentangled Joint Continuous and Discrete Representations, Dupont, arXiv:1804.00104.
    2. Understanding disentangling in beta-VAE, Burgess et al., arXiv:1804.03599.
    3. Categorical Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.guides.categorical import one_hot
from aezoo.guides.normal import diagonal_normal
from aezoo.models import vae

DEFAULT_ENGINE = ("svi", {"relaxation": "gumbel_softmax", "relaxation_options": ("temperature=0.67",),
                          "capacity_sites": ("z=5:27", "z_c=2.303:12"), "gamma": 30.0, "lr": 5e-4, "batch_size": 64})


@dataclass(frozen=True)
class Config(vae.Config):
    z_dim: int = 10
    num_discrete: int = 1  # D_c categorical variables
    num_classes: int = 10  # K classes each
    hidden_dims: tuple[int, ...] = (512, 256)
    activation: str = "relu"


class Model(vae.Model):
    """p(z) p(z_c) p(x | z, z_c); the likelihood is ``vae``'s. See the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.decoder = cfg.decoder(cfg.z_dim + cfg.num_discrete * cfg.num_classes)  # vae's takes z alone

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            c = pyro.sample("z_c", self.c_dist(x))
            pyro.sample("x", self.x_dist(self.code(z, c)), obs=x)

    def c_dist(self, x: Tensor):
        """The uniform prior over one-hot codes, event shape ``(D_c, K)``."""
        return one_hot(x.new_zeros(self.cfg.num_discrete, self.cfg.num_classes))

    @staticmethod
    def code(z: Tensor, c: Tensor) -> Tensor:
        """The decoder's input ``(..., B, D_z + D_c K)`` from ``z`` ``(..., B, D_z)`` and ``c`` ``(..., B, D_c, K)``."""
        c = c.flatten(-2)
        shape = torch.broadcast_shapes(z.shape[:-1], c.shape[:-1])
        return torch.cat([z.expand(*shape, z.shape[-1]), c.expand(*shape, c.shape[-1])], -1)


class Guide(PyroModule):
    """q(z | x) q(z_c | x) from one encoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = cfg.encoder(2 * cfg.z_dim + cfg.num_discrete * cfg.num_classes)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian's parameters ``(B, 2 D_z)`` and the logits ``(B, D_c, K)``."""
        out, logits = self.encoder(x).split([2 * self.cfg.z_dim, self.cfg.num_discrete * self.cfg.num_classes], -1)
        return out, logits.unflatten(-1, (self.cfg.num_discrete, self.cfg.num_classes))

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            out, logits = self.encode(x)
            pyro.sample("z", diagonal_normal(out))
            pyro.sample("z_c", one_hot(logits))


def build(cfg: Config = Config()) -> Autoencoder:
    """A JointVAE with the encoder ``D_x -> hidden_dims -> 2 D_z + D_c K`` and the mirrored decoder."""
    cfg.no_flow("joint_vae")
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded), fit for its likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            like = torch.zeros(1)
            z, c = model.z_dist(like).sample((n,)), model.c_dist(like).sample((n,))
            return (model.x_dist(Model.code(z, c)).sample(),)
