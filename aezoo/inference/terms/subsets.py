"""The sub-sampled training of multimodal VAEs: the ELBOs of modality subsets added to the joint ELBO.

Wu & Goodman train the product-of-experts MVAE on ``ELBO(X) + sum_m ELBO(x_m) + sum_j ELBO(X_j)``,
the joint ELBO, every unimodal ELBO and those of ``k`` random subsets ``X_j`` (Sec. 3.1 of [1]),
so that each expert also learns to stand alone (with the joint ELBO only, the unimodal posteriors
of a product are never trained and cross-modal generation fails). This term's value is
``-(1 / B) sum_b sum_{s} ELBO(x_{b, s})`` over the subsets ``s``: each single modality, then
``random`` subsets drawn per datum (each modality kept with probability 1/2), each restricted to
the modalities the datum has; a datum with none of a subset's modalities adds 0. With
``penalty_weight = 1`` the ``svi`` loss is [1]'s objective, negated, per datum. One particle per
subset; the model and guide read the subset through the covariate ``present``.

References:
    1. Multimodal Generative Models for Scalable Weakly-Supervised Learning, Wu & Goodman,
       arXiv:1802.05335.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from aezoo.core import rows
from aezoo.inference.terms import Term
from aezoo.traces import log_weights


@dataclass(frozen=True)
class ModalitySubsets(Term):
    """``-sum_s ELBO(x_s)`` per datum over the unimodal and ``random`` random subsets.

    Attributes:
        random: random subsets per datum and step (``k`` in [1]; >= 0).
    """

    site: ClassVar[str | None] = None
    random: int = 1

    def __post_init__(self) -> None:
        if self.random < 0:
            raise ValueError(f"modality_subsets random must be non-negative, got {self.random}")

    def check(self, ae, *batch: Tensor) -> None:
        if "present" not in ae.covariate_names or not hasattr(ae.model, "cfg"):
            raise ValueError(f"the penalty ModalitySubsets does not apply to {ae.name}: it needs a multimodal model "
                             "with the covariate 'present' (which modalities each datum has), e.g. mvae")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        i = 1 + ae.covariate_names.index("present")
        batch = (*batch, *(None,) * (1 + len(ae.covariates) - len(batch)))  # trailing covariates may be left off
        modalities = batch[:i]
        have = torch.stack([torch.full((len(batch[0]),), m is not None, device=batch[0].device) for m in modalities],
                           -1)
        if batch[i] is not None:
            have = have & batch[i]
        masks = [torch.eye(len(modalities), dtype=torch.bool, device=have.device)[m].expand_as(have)
                 for m in range(len(modalities))]
        masks += [torch.rand(have.shape, device=have.device) < 0.5 for _ in range(self.random)]
        total = batch[0].new_zeros(())
        for mask in masks:
            present = have & mask
            keep = present.any(-1)
            if keep.any():
                sub = rows((*modalities, present, *batch[i + 1:]), keep)
                total = total - log_weights(ae, *sub, num_particles=1).sum()
        return total / len(batch[0])
