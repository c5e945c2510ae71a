"""The adversarial (GAN) penalty on the latent space of WAE-GAN: a critic with parameters of its own.

A discriminator ``D_gamma(z) = sigmoid(f_gamma(z))`` (the network ``ae.critic``, built by the model,
e.g. :mod:`aezoo.models.wae_gan`) tells prior draws ``z' ~ p(z)`` from codes ``z ~ q(z | x)``. The
term's value, added to the loss with weight ``lambda`` (``penalty_weight``), is the encoder's
non-saturating adversarial loss ([1], Algorithm 2)::

    value = mean_b -log D(z_b)                               (gradient to the encoder, not the critic)

and before every step of the autoencoder the shared loop (:mod:`aezoo.inference.loop`) makes one
step of the critic alone, on the same minibatch, with its own optimiser (Adam)::

    critic loss = mean_b [-log D(z'_b) - log(1 - D(z_b))]     z' ~ p(z), z = codes (detached)

This is the loop's protocol for a term with parameters of its own: :meth:`Critic.own_parameters`
(left out of the autoencoder's optimiser), :meth:`Critic.optimizer` and :meth:`Critic.step`. The
critic is a submodule of the ``Autoencoder``, so ``state_dict``, save/load and checkpoints carry
its weights; the loop checkpoints its optimiser's state.

References:
    1. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    2. Adversarial Autoencoders, Makhzani, Shlens, Jaitly, Goodfellow & Frey, arXiv:1511.05644.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyro import poutine
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.inference.terms import Term
from aezoo.inference.terms.mmd import prior_draw


@dataclass(frozen=True)
class Critic(Term):
    """The encoder's loss ``-log D(z)`` against the critic ``ae.<module>``, trained in alternation.

    Attributes:
        module: the name of the critic network on the autoencoder, ``(..., D_z) -> (..., 1)`` logits.
        lr: the critic's Adam learning rate (5e-4 in [1] for MNIST).
        beta1: the critic's Adam ``beta_1`` (0.5 in [1]).
    """

    module: str = "critic"
    lr: float = 5e-4
    beta1: float = 0.5

    def __post_init__(self) -> None:
        if not self.lr > 0 or not 0 <= self.beta1 < 1:
            raise ValueError(f"the critic needs lr > 0 and 0 <= beta1 < 1, got lr={self.lr}, beta1={self.beta1}")

    def network(self, ae: Autoencoder) -> nn.Module:
        """The critic ``ae.<module>``.

        Raises:
            ValueError: ``ae`` has no such network ("does not apply").
        """
        net = getattr(ae, self.module, None)
        if not isinstance(net, nn.Module):
            raise ValueError(f"the penalty Critic does not apply to {ae.name}: it needs a discriminator network "
                             f"ae.{self.module} on the latent codes (e.g. the wae_gan model)")
        return net

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        super().check(ae, *batch)
        self.network(ae)

    def own_parameters(self, ae: Autoencoder) -> list[nn.Parameter]:
        """The critic's parameters: trained by :meth:`step`, left out of the autoencoder's optimiser."""
        return list(self.network(ae).parameters())

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The critic's own Adam."""
        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, 0.999))

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        return F.softplus(-self.network(ae)(posterior["value"])).mean()  # -log sigmoid(f(z))

    def critic_loss(self, ae: Autoencoder, batch: tuple[Tensor, ...]) -> Tensor:
        """The critic's cross-entropy on the minibatch's codes (detached) and as many prior draws."""
        with torch.no_grad():
            guide_tr = poutine.trace(ae.guide).get_trace(*batch)
            model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*batch)
            codes = guide_tr.nodes[self.site]["value"]
            draws = prior_draw(model_tr.nodes[self.site]).expand(codes.shape)
        net = self.network(ae)
        return F.softplus(-net(draws)).mean() + F.softplus(net(codes)).mean()

    def step(self, ae: Autoencoder, batch: tuple[Tensor, ...], optimizer: torch.optim.Optimizer) -> float:
        """One optimiser step of the critic alone on ``batch`` ``(x, *covariates)``; its loss before the step."""
        loss = self.critic_loss(ae, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()
