"""Multimodal VAE: one shared z, a decoder per modality, unimodal encoders combined as PoE, MoE or MoPoE.

Generative story, for each datum b of the ``"data"`` plate, with modalities ``m`` in
(``x``, ``x2``, ``y``)::

    z_b ~ N(0, I_{D_z})                              z: (B, D_z)
    x_b | z_b ~ p(x | decoder_x(z_b))                 x: (B, D_x)    an image
    x2_b | z_b ~ p(x2 | decoder_x2(z_b))              x2: (B, D_x2)  a second image modality
    y_b | z_b ~ Categorical(softmax(decoder_y(z_b)))  y: (B,)        a label modality

A modality the datum lacks is left out of the model (``present[b, m]`` False, or the covariate
None), which marginalises it exactly: the model's density is then p(x_S, z) for the subset ``S``
of present modalities, and importance sampling estimates log p(x_S).

Guide: unimodal Gaussian experts q_m(z | x_m) = N(mu_m(x_m), diag sigma_m(x_m)^2) combined over the
present modalities by ``aggregation`` (:mod:`aezoo.guides.experts`): ``"poe"`` (product with the
prior expert, MVAE [1]), ``"moe"`` (mixture, MMVAE [2]) or ``"mopoe"`` (mixture of the products of
all non-empty subsets, [3]). Amortized.

Training as the papers do (``svi``; the default, ``DEFAULT_ENGINE``, draws 3 particles, which for
the mixtures is the stratified estimator of [2]: each expert proposes once):

- MVAE: ``aggregation=poe`` with ``--set engine.penalty=modality_subsets`` (the ELBOs of the
  unimodal and of random subsets added, [1]'s sub-sampled training,
  :mod:`aezoo.inference.terms.subsets`);
- MMVAE: ``aggregation=moe``; ``--engine iwae`` (``estimator=dreg`` as [2]) with ``num_particles`` a
  multiple of 3 draws every expert equally often, a valid IWAE bound on log p(X) whose proposal is the
  stratified mixture (the estimator [2] writes, ``(1/M) sum_m log (1/K) sum_k w_mk``, is a different,
  looser bound of the same kind);
- MoPoE: ``aggregation=mopoe``, the joint ELBO alone ([3]).

Covariates (call order ``(x, x2, y, present)``): ``x2`` and ``y`` are modalities, left out when
None; ``present`` ``(B, 3)`` bool says per datum which of ``(x, x2, y)`` it has (None: all that are
given), so missing modalities at test time need no special model. Evaluation (coherence,
cross-modal likelihoods, diversity): :mod:`aezoo.diagnostics.multimodal`.

References:
    1. Multimodal Generative Models for Scalable Weakly-Supervised Learning, Wu & Goodman,
       arXiv:1802.05335.
    2. Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models, Shi,
       Siddharth, Paige & Torr, arXiv:1911.03393.
    3. Generalized Multimodal ELBO, Sutter, Daunhawer & Vogt, arXiv:2105.02470.
    4. On the Limitations of Multimodal VAEs, Daunhawer, Sutter, Chin-Cheong, Palumbo & Vogt,
       arXiv:2110.04121.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides.experts import AGGREGATIONS, mixture_of_products, product_of_experts, subsets
from aezoo.guides.normal import loc_scale
from aezoo.likelihoods import LIKELIHOODS, check_labels, check_x, x_dist
from aezoo.nn import MLP

MODALITIES = ("x", "x2", "y")
COVARIATES = (
    Covariate("x2", "continuous", doc="the second image modality (B, D_x2); None: absent for every datum"),
    Covariate("y", "label", doc="the label modality (B,); None: absent for every datum"),
    Covariate("present", "mask", doc="(B, 3) bool, which of (x, x2, y) each datum has; None: all that are given"),
)
DEFAULT_ENGINE = ("svi", {"num_particles": 3})


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    x2_dim: int = 784
    num_classes: int = 10
    z_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"  # of the image modalities x and x2; one of aezoo.likelihoods.LIKELIHOODS
    aggregation: str = "mopoe"  # one of aezoo.guides.experts.AGGREGATIONS

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose one of {AGGREGATIONS}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def widths(self) -> tuple[int, int, int]:
        """The input width of each modality's network: ``D_x``, ``D_x2`` and ``K`` (the one-hot label)."""
        return self.x_dim, self.x2_dim, self.num_classes


def presence(values: tuple[Tensor | None, ...], present: Tensor | None) -> Tensor:
    """``(B, M)`` bool: modality ``m`` counts for datum ``b`` when its tensor is given and ``present[b, m]``.

    Raises:
        ValueError: every modality is None.
    """
    given = [v for v in values if v is not None]
    if not given:
        raise ValueError("mvae needs at least one modality")
    have = torch.tensor([v is not None for v in values], device=given[0].device).expand(len(given[0]), -1)
    return have if present is None else have & present


def network_input(m: int, value: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Modality ``m``'s value as a network input: images as they are, labels one-hot."""
    return F.one_hot(value.long(), num_classes).to(dtype) if MODALITIES[m] == "y" else value


class Model(PyroModule):
    """p(z) prod_m p(x_m | z) over the present modalities; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoders = nn.ModuleList(MLP(cfg.z_dim, cfg.hidden_dims[::-1], w, cfg.activation) for w in cfg.widths)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.ParameterList(nn.Parameter(torch.zeros(w)) for w in cfg.widths[:2])

    def forward(self, x: Tensor, x2: Tensor | None = None, y: Tensor | None = None, present: Tensor | None = None,
                num_data: int | None = None) -> None:
        values = (x, x2, y)
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1))
            for m, value in enumerate(values):
                if value is not None:
                    fn = self.modality_dist(m, z)
                    pyro.sample(MODALITIES[m], fn if present is None else fn.mask(present[:, m]), obs=value)

    def modality_dist(self, m: int, z: Tensor) -> dist.Distribution:
        """p(x_m | z) for ``z`` ``(..., B, D_z)``: images with event shape ``(D,)``, the label a Categorical."""
        out = self.decoders[m](z)
        if MODALITIES[m] == "y":
            return dist.Categorical(logits=out)
        scale = F.softplus(self.scale_raw[m]) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale)

    def validate(self, x: Tensor, x2: Tensor | None = None, y: Tensor | None = None,
                 present: Tensor | None = None) -> None:
        """``ValueError`` for data that do not fit: the images (:func:`aezoo.likelihoods.check_x`, ``x2`` under
        its own name), labels outside ``[0, num_classes)``, or a ``present`` mask that is not ``(B, 3)`` bool
        with at least one modality per datum."""
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        if x2 is not None:
            try:
                check_x(x2, self.cfg.x2_dim, self.cfg.likelihood)
            except ValueError as err:
                raise ValueError(f"mvae modality 'x2': {err}".replace("model.x_dim", "model.x2_dim")) from None
            if len(x2) != len(x):
                raise ValueError(f"mvae modality 'x2' has {len(x2)} rows for {len(x)} rows of x")
        if y is not None:
            check_labels(y, self.cfg.num_classes, "mvae")
        if present is not None:
            if present.dtype != torch.bool or present.shape != (len(x), len(MODALITIES)):
                raise ValueError(f"mvae 'present' must be bool of shape (B, {len(MODALITIES)}) (which of "
                                 f"{MODALITIES} each datum has), got {present.dtype} {tuple(present.shape)}")
            if not bool(presence((x, x2, y), present).any(-1).all()):
                raise ValueError("mvae 'present': some data have none of their modalities; drop those rows")


class Guide(PyroModule):
    """q(z | x_S): the unimodal experts of the present modalities, combined by ``aggregation``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleList(MLP(w, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation) for w in cfg.widths)
        self.register_buffer("members", subsets(len(MODALITIES), singletons_only=cfg.aggregation == "moe"),
                             persistent=False)

    def experts(self, values: tuple[Tensor | None, ...], have: Tensor) -> tuple[Tensor, Tensor]:
        """Means and standard deviations ``(B, M, D_z)`` of the unimodal experts (0 and 1 where absent)."""
        locs, scales = [], []
        dtype = next(self.parameters()).dtype
        for m, value in enumerate(values):
            if value is None:
                locs.append(have.new_zeros(len(have), self.cfg.z_dim, dtype=dtype))
                scales.append(torch.ones_like(locs[-1]))
                continue
            loc, scale = loc_scale(self.encoders[m](network_input(m, value, self.cfg.num_classes, dtype)))
            locs.append(loc)
            scales.append(scale)
        return torch.stack(locs, -2), torch.stack(scales, -2)

    def posterior(self, x: Tensor | None, x2: Tensor | None = None, y: Tensor | None = None,
                  present: Tensor | None = None) -> dist.Distribution:
        """q(z | x_S) with batch shape ``(B,)`` and event shape ``(D_z,)``; any modality may be None here.

        Raises:
            ValueError: no modality, or a datum with none present.
        """
        have = presence((x, x2, y), present)
        loc, scale = self.experts((x, x2, y), have)
        if self.cfg.aggregation == "poe":
            return dist.Normal(*product_of_experts(loc, scale, have)).to_event(1)
        return mixture_of_products(loc, scale, have, self.members)

    def forward(self, x: Tensor, x2: Tensor | None = None, y: Tensor | None = None, present: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", self.posterior(x, x2, y, present))


def build(cfg: Config = Config()) -> Autoencoder:
    """A multimodal VAE: per-modality encoders ``D_m -> hidden_dims -> 2 D_z`` and decoders ``D_z -> D_m``."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, x2, y, present)``: ``n`` seeded draws of a randomly initialised model; ``present`` drops each
    modality of a datum with probability 1/4, keeping at least ``x`` or one other."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            z = torch.randn(n, cfg.z_dim)
            x, x2, y = (model.modality_dist(m, z).sample() for m in range(len(MODALITIES)))
        present = torch.rand(n, len(MODALITIES)) > 0.25
        present[:, 0] |= ~present[:, 1:].any(-1)
        return x, x2, y, present
