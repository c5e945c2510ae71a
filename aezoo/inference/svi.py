"""Stochastic variational inference: maximise the ELBO with Pyro's ``Trace_ELBO``.

With ``analytic_kl`` (default) Pyro's ``TraceMeanField_ELBO`` uses the closed-form
KL(q(z | x) || p(z)) wherever one is registered and a Monte Carlo estimate elsewhere; it needs
a mean-field model (latents independent given the data). Requires a guide over every latent
site; any guide works (score-function terms appear for non-reparameterised sites).

References:
    1. Auto-Encoding Variational Bayes, Kingma & Welling, arXiv:1312.6114.
    2. Stochastic Variational Inference, Hoffman, Blei, Wang & Paisley, arXiv:1206.7051.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.importance import max_plate_nesting
from aezoo.inference.loop import GradientEngine
from aezoo.inference.objectives import LatentScale


@dataclass(frozen=True)
class SVI(GradientEngine):
    """ELBO maximisation; ``loss`` is the negative ELBO in nats per datum.

    Attributes:
        num_particles: Monte Carlo samples per step (vectorised).
        analytic_kl: use closed-form KL terms (``TraceMeanField_ELBO``).
        beta: weight of the KL term (beta-VAE, Higgins et al. 2017); 1 is the ELBO. The loss
            reported is then the negative beta-weighted objective.
    """

    num_particles: int = 1
    analytic_kl: bool = True
    beta: float = 1.0

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        elbo_cls = TraceMeanField_ELBO if self.analytic_kl else Trace_ELBO
        elbo = elbo_cls(num_particles=self.num_particles, vectorize_particles=True,
                        max_plate_nesting=max_plate_nesting(ae, *batch))
        model, guide = ae.model, ae.guide
        if self.beta != 1.0:
            model, guide = LatentScale(self.beta)(model), LatentScale(self.beta)(guide)
        return elbo.differentiable_loss(model, guide, *batch, num_data=num_data) / num_data


ENGINE = SVI
