"""The MMD penalty between the aggregate posterior q(z) and the prior p(z): InfoVAE and WAE-MMD.

Unbiased MMD^2 ([1], Lemma 6) between the guide's draws of ``z`` for the minibatch and as many
draws from the model's distribution at ``z``, per particle, averaged. With the ``svi`` engine,
``beta = 1 - alpha`` and ``penalty_weight = alpha + lambda - 1`` give InfoVAE [3] (eq. 6);
``beta = 0`` with a Delta guide gives WAE-MMD [2] with cost ``-log p(x | z)``. A one-datum
minibatch carries no MMD term (the U-statistic needs two draws).

References:
    1. A Kernel Two-Sample Test, Gretton, Borgwardt, Rasch, Schoelkopf & Smola, JMLR 2012.
    2. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    3. InfoVAE: Information Maximizing Variational Autoencoders, Zhao, Song & Ermon, arXiv:1706.02262.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.inference.penalties import KERNELS, mmd
from aezoo.inference.terms import Term


def prior_draw(prior: dict) -> Tensor:
    """One draw from the model's distribution at the site, reparameterised where it can be."""
    fn = prior["fn"]
    return fn.rsample() if fn.has_rsample else fn.sample()


@dataclass(frozen=True)
class MMD(Term):
    """MMD^2(q(z), p(z)) with an IMQ or RBF kernel.

    Attributes:
        kernel: ``"imq"`` (inverse multiquadric, as in [2]) or ``"rbf"``.
        scale: the kernel's sigma^2 (the prior variance, 1 for N(0, I)); ``C = 2 D_z scale``.
    """

    kernel: str = "imq"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown mmd kernel {self.kernel!r}; choose one of {KERNELS}")
        if not self.scale > 0:
            raise ValueError(f"the mmd kernel scale must be positive, got {self.scale}")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        q = posterior["value"]
        if q.shape[-2] < 2:
            return q.new_zeros(())  # one datum: no MMD U-statistic
        return mmd(q, prior_draw(prior).expand(q.shape), self.kernel, self.scale).mean()
