"""The codebook and commitment terms of vector-quantized autoencoders.

"Neural Discrete Representation Learning" (van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937),
eq. 3: the decoder sees the quantized code ``z_q = e_k`` (the nearest codebook entry of the
encoder's output ``z_e``) through the straight-through estimator, so neither the codebook nor the
encoder's pull toward it gets a gradient from the reconstruction; two terms supply them::

    codebook_weight * ||sg[z_e] - z_q||^2  +  beta * ||z_e - sg[z_q]||^2     (per datum, summed over the code)

with ``sg`` the stop-gradient. ``beta = 0.25`` is the paper's. A guide whose codebook learns by
exponential moving averages (its attribute ``ema`` True, [1]'s appendix) has no codebook term.
"Disentanglement via Latent Quantization" (Hsu, Dorrell, Whittington, Wu & Finn,
arXiv:2305.18378) uses the same two terms for its per-dimension scalar codebooks (their
"quantization" and "commitment" losses).

The term reads the guide's ``encode(x) -> z_e`` ``(B, ...)`` and ``quantize(z_e) -> (z_q, codes)``
(``z_q`` of ``z_e``'s shape, differentiable in the codebook); ``vq_vae`` and ``qlae`` provide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from aezoo.inference.terms import Term


@dataclass(frozen=True)
class VQ(Term):
    """``codebook_weight * ||sg[z_e] - z_q||^2 + beta * ||z_e - sg[z_q]||^2`` per datum.

    Attributes:
        beta: the commitment weight (>= 0; 0.25 in [1]).
        codebook_weight: the codebook term's weight (>= 0; 1 in [1]); ignored for an EMA codebook.
    """

    site: ClassVar[str | None] = None
    beta: float = 0.25
    codebook_weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.beta >= 0 and self.codebook_weight >= 0):
            raise ValueError(f"vq beta and codebook_weight must be non-negative, got {self.beta} and "
                             f"{self.codebook_weight}")

    def check(self, ae, *batch: Tensor) -> None:
        if not (hasattr(ae.guide, "encode") and hasattr(ae.guide, "quantize")):
            raise ValueError(f"the penalty VQ does not apply to {ae.name}: it needs a quantizing guide with "
                             "encode(x) and quantize(z_e) (e.g. vq_vae, qlae)")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        z_e = ae.guide.encode(batch[0])
        z_q, _ = ae.guide.quantize(z_e)
        commitment = (z_e - z_q.detach()).pow(2).flatten(1).sum(-1)
        if getattr(ae.guide, "ema", False):
            return self.beta * commitment.mean()
        codebook = (z_e.detach() - z_q).pow(2).flatten(1).sum(-1)
        return (self.codebook_weight * codebook + self.beta * commitment).mean()
