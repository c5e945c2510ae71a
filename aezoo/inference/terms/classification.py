"""The classification term of semi-supervised VAEs: -log q(y | x) on the labelled data.

Kingma et al.'s M2 objective (eq. 9) adds ``alpha E_labelled[-log q(y | x)]`` so that the
classifier q(y | x), which the ELBO trains only through the unlabelled data, also learns from the
labels. This term's value is ``(1 / B) sum_b 1[y_b labelled] (-log q(y_b | x_b))`` over the
minibatch, an unbiased estimate of ``(N_l / N) E_labelled[-log q(y | x)]`` per datum; with the
``svi`` loss per datum (-ELBO / N), ``penalty_weight = 0.1 N / N_l`` is the paper's ``alpha = 0.1 N``
(60 for 100 labels among 60,000 images). Unlabelled entries are -1. It reads the guide's
``label_logits(x)`` and the covariate ``y``.

References:
    1. Semi-Supervised Learning with Deep Generative Models, Kingma, Rezende, Mohamed & Welling,
       arXiv:1406.5298.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from aezoo.inference.terms import Term


@dataclass(frozen=True)
class Classification(Term):
    """``-log q(y | x)`` on the labelled data of the minibatch, per datum."""

    site: ClassVar[str | None] = None

    def check(self, ae, *batch: Tensor) -> None:
        if not hasattr(ae.guide, "label_logits") or "y" not in ae.covariate_names:
            raise ValueError(f"the penalty Classification does not apply to {ae.name}: it needs a guide with "
                             "label_logits(x) and a covariate 'y' (e.g. m2)")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        x, y = batch[0], batch[1 + ae.covariate_names.index("y")]
        if y is None:
            return x.new_zeros(())
        nll = F.cross_entropy(ae.guide.label_logits(x), y.clamp_min(0), reduction="none")
        return (nll * (y >= 0)).sum() / len(x)
