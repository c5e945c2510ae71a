"""Objective terms: small objects that engines compose with their bound, one per file.

A penalty term (:class:`Term`) adds ``weight * value`` to the ``svi`` engine's per-datum loss,
where ``value`` is computed on the same draws as the ELBO: the messages of the model and the
guide at the term's ``site`` (or, with ``site = None``, from the autoencoder and the batch
alone). ``aezoo fit ... --set engine.penalty=mmd --set engine.penalty_options=kernel=rbf,scale=2``
picks the term and sets its fields. The KL schedule terms :class:`~aezoo.inference.terms.warmup.KLWarmup`
and :class:`~aezoo.inference.terms.capacity.Capacity` change the ELBO's KL part instead; the
``svi`` engine builds them from its ``kl_warmup_epochs`` and ``capacity_*`` fields.

A term with parameters of its own (``critic``, WAE-GAN's discriminator) also has ``own_parameters``,
``optimizer`` and ``step``: the shared loop trains those parameters apart, in alternation
(:mod:`aezoo.inference.loop`).

Adding a term is one new file here (a frozen dataclass subclassing :class:`Term` with ``check``,
``__call__`` and a docstring citing its paper) plus one line in :data:`TERMS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from aezoo.core import Autoencoder, config_with, key_values
from aezoo.traces import guide_sites


@dataclass(frozen=True)
class Term:
    """A penalty added to an engine's loss; its fields are its options.

    Attributes:
        site: the latent site whose model and guide messages the term reads, or None.
    """

    site: ClassVar[str | None] = "z"

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """Raise ``ValueError`` (saying "does not apply") when the term cannot be computed for ``ae``."""
        if self.site is None:
            return
        site = guide_sites(ae, *batch).get(self.site)
        if site is None or site["value"].shape[:-1] != batch[0].shape[:1] or site["fn"].event_dim != 1:
            raise ValueError(f"the penalty {type(self).__name__} does not apply to {ae.name}: it needs a latent "
                             f"site {self.site!r} of shape (B, D_z) in the guide and the model")

    def __call__(self, ae: Autoencoder, batch: tuple[Tensor, ...], num_data: int, prior: dict | None,
                 posterior: dict | None) -> Tensor:
        """The term's value (a scalar, per datum), differentiable.

        Args:
            ae: the autoencoder; batch: ``(x, *covariates)`` of the minibatch; num_data: ``N``.
            prior, posterior: Pyro's messages (``fn``, ``value``) of the model and guide at :attr:`site`.
        """
        raise NotImplementedError


from aezoo.inference.terms import (  # noqa: E402  (they subclass Term above)
    classification,
    contractive,
    critic,
    dip,
    frechet,
    gsnn,
    koopman,
    mmd,
    sinkhorn,
    subsets,
    swd,
    vq,
)

TERMS: dict[str, type[Term]] = {"mmd": mmd.MMD, "swd": swd.SlicedWasserstein, "dip_i": dip.DipI,
                                "dip_ii": dip.DipII, "gsnn": gsnn.GSNN, "classification": classification.Classification,
                                "modality_subsets": subsets.ModalitySubsets, "vq": vq.VQ,
                                "contractive": contractive.Contractive,
                                "sinkhorn": sinkhorn.Sinkhorn, "critic": critic.Critic,
                                "frechet": frechet.Frechet, "koopman": koopman.Koopman}


def make_term(name: str, options: tuple[str, ...] = ()) -> Term:
    """The term ``name`` with ``options`` (``"field=value"`` texts, parsed to the fields' types).

    Raises:
        ValueError: unknown term, option or value (the message lists the valid ones).
    """
    if name not in TERMS:
        raise ValueError(f"unknown penalty {name!r}; choose one of {sorted(TERMS)} or none")
    pairs = key_values(options, "penalty_options", "kernel=rbf")
    return config_with(TERMS[name](), pairs, f"engine.penalty_options ({name}) ")


__all__ = ["TERMS", "Term", "make_term"]
