"""The Sinkhorn term (coupled_vae) and the stepped critic term (wae_gan) with the shared loop."""

from __future__ import annotations

import math

import ot
import pytest
import torch
from pyro import poutine

from aezoo.inference.terms import make_term
from aezoo.inference.terms.critic import Critic
from aezoo.inference.terms.sinkhorn import sinkhorn_cost


@pytest.mark.parametrize("epsilon", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_sinkhorn_cost_approaches_the_exact_transport_cost(epsilon, cost):
    # <P_eps, C> - W lies in [0, eps (H(P_eps) - H(P*))] <= [0, eps min(log B, log M)]: the bound shrinks with eps
    gen = torch.Generator().manual_seed(3)
    q, p = torch.randn(7, 2, generator=gen, dtype=torch.float64), torch.randn(5, 2, generator=gen, dtype=torch.float64)
    exact = ot.emd2(torch.full((7,), 1 / 7, dtype=torch.float64), torch.full((5,), 1 / 5, dtype=torch.float64),
                    ot.dist(q, p, metric=cost)).item()
    value = sinkhorn_cost(q, p, epsilon, cost, iterations=20000).item()
    assert -1e-9 <= value - exact <= epsilon * math.log(5) + 1e-9


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="epsilon"):
        make_term("sinkhorn", ("epsilon=0",))
    with pytest.raises(ValueError, match="cost"):
        make_term("sinkhorn", ("cost=manhattan",))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        sinkhorn_cost(torch.zeros(3), torch.zeros(3, 1), 0.1)


def messages(ae, batch):
    guide_tr = poutine.trace(ae.guide).get_trace(*batch)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*batch)
    return model_tr.nodes["z"], guide_tr.nodes["z"]


@pytest.mark.parametrize("prior_samples", [0, 13])
def test_sinkhorn_gradient_reaches_the_encoder_only(tiny, prior_samples):
    ae, data = tiny("coupled_vae", n=10)
    term = make_term("sinkhorn", (f"prior_samples={prior_samples}",))
    term.check(ae, *data)
    prior, posterior = messages(ae, data)
    value = term(ae, data, 10, prior, posterior)
    assert value.shape == () and value > 0
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.guide.parameters())
    assert all(p.grad is None for p in ae.model.parameters())


def test_critic_does_not_apply_without_a_critic_network(tiny):
    ae, data = tiny("wae", n=8)
    with pytest.raises(ValueError, match="does not apply"):
        Critic().check(ae, *data)


def test_critic_step_moves_the_critic_only(tiny):
    ae, data = tiny("wae_gan", n=10)
    term = Critic()
    term.check(ae, *data)
    own = term.own_parameters(ae)
    critic = {n for n, p in ae.named_parameters() if any(p is q for q in own)}
    assert critic == {n for n, _ in ae.named_parameters() if n.startswith("critic.")}
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    loss = term.step(ae, data, term.optimizer(own))
    assert math.isfinite(loss)
    after = dict(ae.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed == critic


def test_critic_learns_to_tell_shifted_codes_from_prior_draws(tiny):
    # codes far from N(0, I): a trained critic's cross-entropy falls well below log 4 (chance)
    ae, data = tiny("wae_gan", n=32)
    with torch.no_grad():
        ae.guide.encoder[-1].bias.add_(4.0)
    term = Critic(lr=1e-2)
    optim = term.optimizer(term.own_parameters(ae))
    losses = [term.step(ae, data, optim) for _ in range(100)]
    assert losses[0] > 0.9 * math.log(4) and sum(losses[-10:]) / 10 < 0.5 * math.log(4)


def test_the_loop_steps_the_critic_apart_from_the_autoencoder(tiny, engine, monkeypatch):
    # the main optimiser must leave the critic alone (it gets gradients from -log D(z) but is not its parameter)
    ae, data = tiny("wae_gan", n=20)
    calls = []
    monkeypatch.setattr(Critic, "step", lambda self, ae, batch, optim: calls.append(len(batch[0])) or 0.0)
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    engine("svi", model="wae_gan").fit(ae, *data)
    after = dict(ae.named_parameters())
    unchanged = {n for n in before if torch.equal(before[n], after[n].detach())}
    assert unchanged == {n for n in before if n.startswith("critic.")}
    assert calls == [8, 8, 4]  # one critic step before each of the epoch's minibatch steps


def test_the_checkpoint_carries_the_critics_optimiser(tiny, engine, tmp_path):
    ae, data = tiny("wae_gan", n=16)
    ckpt = tmp_path / "fit.pt"
    engine("svi", model="wae_gan").fit(ae, *data, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    (saved,) = state["term_optims"]
    assert len(saved["state"]) == len(list(ae.critic.parameters()))
    assert any(k.startswith("critic.") for k in state["model"])
    with pytest.raises(ValueError, match="another objective"):  # the same run, resumed without the critic
        engine("svi", model="wae_gan", penalty="mmd", penalty_options=(), epochs=2).fit(ae, *data, checkpoint=ckpt)


def test_debiased_sinkhorn_vanishes_between_equal_samples_only():
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    sharp, debiased = make_term("sinkhorn", ("epsilon=0.1",)), make_term("sinkhorn", ("epsilon=0.1", "debiased=true"))
    assert sharp.cost_between(q, q) > 1e-4  # the entropic plan of a sample with itself is not the identity
    torch.testing.assert_close(debiased.cost_between(q, q), q.new_zeros(()), atol=1e-9, rtol=0)
    assert debiased.cost_between(q, q + 1.0) > 0.5  # a shift by 1 in each of 3 dims: W_2^2 = 3
