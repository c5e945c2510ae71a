"""Categorical latents: the Gumbel-softmax density and its limits, the relaxation's objective and schedule,
JointVAE's two capacities, and the exact log p(x) of the discrete model."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aezoo.diagnostics import importance_estimate
from aezoo.diagnostics.likelihood import decode
from aezoo.diagnostics.traversal import traversal_figure, traversals
from aezoo.guides.categorical import GumbelSoftmax, GumbelSoftmaxStraightThrough, one_hot, relaxed
from aezoo.inference import ENGINES
from aezoo.inference.terms.temperature import Relaxation, make_relaxation
from aezoo.progress import at_epoch

LOGITS = torch.tensor([[1.0, -0.5, 0.3, 2.0], [0.0, 0.0, -1.0, 0.5]])  # two variables, K = 4


def concrete_log_density(y, logits, tau):
    """Jang et al. eq. 3 / Maddison et al.'s Concrete density, written out."""
    k = y.shape[-1]
    log_pi = logits.log_softmax(-1)
    return (math.lgamma(k) + (k - 1) * math.log(tau) + (log_pi - (tau + 1) * y.log()).sum(-1)
            - k * (log_pi - tau * y.log()).logsumexp(-1))


@pytest.mark.parametrize("family", [dist.RelaxedOneHotCategorical, GumbelSoftmax])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_the_relaxed_density_is_the_concrete_density(family, tau):
    d = family(torch.tensor(tau), logits=LOGITS)
    y = d.rsample((50,))
    torch.testing.assert_close(d.log_prob(y), concrete_log_density(y, LOGITS, tau), rtol=1e-4, atol=1e-4)


def test_low_temperature_draws_are_nearly_one_hot_with_softmax_frequencies():
    n = 20000
    y = GumbelSoftmax(torch.tensor(0.01), logits=LOGITS).sample((n,))  # (n, 2, 4)
    # the top two Gumbel-perturbed scores lie within 0.06 of each other (y_max < 0.99) for a few % of draws
    assert (y.max(-1).values > 0.99).double().mean() > 0.9
    pi = LOGITS.softmax(-1)
    freq = torch.nn.functional.one_hot(y.argmax(-1), 4).double().mean(0)
    se = (pi * (1 - pi) / n).sqrt()
    assert ((freq - pi).abs() < 4 * se).all()  # binomial error; each of 8 fails with p ~ 6e-5
    se_soft = y.double().std(0) / n**0.5
    assert ((y.double().mean(0) - pi).abs() < 4 * se_soft + 1e-3).all()  # tau -> 0: E[y] -> pi


def test_high_temperature_draws_approach_uniform():
    y = GumbelSoftmax(torch.tensor(1000.0), logits=LOGITS).sample((200,))
    # the perturbed scores span < 25 nats (clamped Gumbels); / tau that moves softmax by < 0.7 %
    assert ((y - 0.25).abs() < 0.01).all()


def test_straight_through_draws_are_one_hot_with_relaxed_gradients():
    logits = LOGITS.clone().requires_grad_()
    d = GumbelSoftmaxStraightThrough(torch.tensor(0.5), logits=logits)
    y = d.rsample((10,))
    assert ((y == 0) | (y == 1)).all() and (y.sum(-1) == 1).all()
    (y * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = y._unquantize
    torch.testing.assert_close(d.log_prob(y), concrete_log_density(soft, LOGITS, 0.5), rtol=1e-4, atol=1e-4)


def test_the_kl_between_relaxations_is_the_categorical_kl_to_the_uniform_prior():
    q = LOGITS.softmax(-1)
    paper = (q * (q * 4).log()).sum(-1)  # Jang et al.: sum_k q_k log(q_k / (1/K))
    kl = kl_divergence(GumbelSoftmax(torch.tensor(0.5), logits=LOGITS),
                       GumbelSoftmax(torch.tensor(0.5), logits=torch.zeros(4)))
    torch.testing.assert_close(kl, paper)
    both = kl_divergence(relaxed(one_hot(LOGITS), 0.5, True), relaxed(one_hot(torch.zeros(2, 4)), 0.5, True))
    torch.testing.assert_close(both, paper.sum())  # through the Independent wrappers, summed over variables
    assert relaxed(dist.Normal(0.0, 1.0), 0.5) is None


@pytest.mark.parametrize("epoch, expected", [(None, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, math.exp(-0.005)),
                                             (7.5, math.exp(-1e-5 * 4500)), (200.0, 0.5)])
def test_the_temperature_follows_the_papers_schedule(epoch, expected):
    relaxation = Relaxation(temperature=0.5, rate=1e-5, every=500)
    steps = 600  # e.g. 60,000 images in minibatches of 100; t = 600 e, updated every 500 steps
    if epoch is None:
        assert relaxation.value(steps) == expected
        return
    with at_epoch(epoch):
        assert relaxation.value(steps) == pytest.approx(expected, rel=1e-12)
        engine = ENGINES["svi"](batch_size=100, relaxation="gumbel_softmax",
                                relaxation_options=("rate=1e-5", "every=500"))
        assert engine.relaxed(60000).temperature == pytest.approx(expected, rel=1e-12)
    with at_epoch(3.0):
        assert Relaxation(temperature=0.67).value(steps) == 0.67  # rate 0: constant


def test_bad_relaxation_settings_are_rejected(tiny):
    for fields in ({"relaxation": "gumbel"}, {"relaxation_options": ("rate=1",)},
                   {"relaxation": "gumbel_softmax", "elbo": "traceenum"},
                   {"relaxation": "gumbel_softmax", "relaxation_options": ("temperature=0",)},
                   {"relaxation": "gumbel_softmax", "relaxation_options": ("straight_through=true",)}):
        with pytest.raises(ValueError):
            ENGINES["svi"](**fields)
    ae, (x,) = tiny("vae", n=4)
    with pytest.raises(ValueError, match="does not apply"):
        ENGINES["svi"](relaxation="gumbel_softmax").check(ae, x)
    assert make_relaxation("straight_through").straight_through


@pytest.mark.parametrize("name", ["gumbel_softmax", "straight_through"])
def test_the_relaxed_loss_is_the_papers_negative_elbo(tiny, name):
    ae, (x,) = tiny("gumbel_vae", n=16)
    engine = ENGINES["svi"](relaxation=name, relaxation_options=("temperature=0.5",))
    pyro.set_rng_seed(3)
    loss = engine.loss(ae, x, num_data=100)
    logits = ae.guide.encode(x)
    pyro.set_rng_seed(3)  # the same uniforms behind the guide's relaxed draw
    y = (GumbelSoftmaxStraightThrough if name == "straight_through" else GumbelSoftmax)(
        torch.tensor(0.5), logits=logits).rsample()
    q = logits.softmax(-1)
    kl = (q * (q * 3).log()).sum((-2, -1))
    expected = -(ae.model.x_dist(y).log_prob(x) - kl).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_score_function_and_relaxed_fits_train_every_parameter(tiny, engine):
    for fields in ({"elbo": "tracegraph"}, {"relaxation": "straight_through"}):
        ae, (x,) = tiny("gumbel_vae", n=16)
        before = {n: p.detach().clone() for n, p in ae.named_parameters()}
        result = engine("svi", **fields).fit(ae, x)
        assert torch.isfinite(result.losses).all()
        assert not [n for n, p in ae.named_parameters() if torch.equal(p.detach(), before[n])]


def test_joint_vae_pays_each_capacity_on_its_own_kl(tiny):
    ae, (x,) = tiny("joint_vae", n=16)
    engine = ENGINES["svi"](relaxation="gumbel_softmax", relaxation_options=("temperature=0.67",),
                            capacity_sites=("z=5:4", "z_c=1:2"), gamma=7.0)
    with at_epoch(1.0):  # C_z = 5 / 4, C_c = 1 / 2
        pyro.set_rng_seed(3)
        loss = engine.loss(ae, x, num_data=len(x))
    out, logits = ae.guide.encode(x)
    loc, scale = out[:, :2], torch.nn.functional.softplus(out[:, 2:]) + 1e-5
    pyro.set_rng_seed(3)  # the guide draws z, then z_c
    z = Normal(loc, scale).rsample()
    c = GumbelSoftmax(torch.tensor(0.67), logits=logits).rsample()
    rec = ae.model.x_dist(ae.model.code(z, c)).log_prob(x)
    kl_z = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
    q = logits.softmax(-1)
    kl_c = (q * (q * 3).log()).sum((-2, -1))
    expected = -rec.mean() + 7.0 * ((kl_z - 1.25).abs().mean() + (kl_c - 0.5).abs().mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for sites in (("z_x=1",), ("z=1",)):  # not a site; a site left without a capacity
        with pytest.raises(ValueError, match="capacity_sites"):
            ENGINES["svi"](relaxation="gumbel_softmax", capacity_sites=sites).loss(ae, x, num_data=len(x))
    for sites in (("z",), ("z=-1",), ("z=1:x",), ("z=1", "z=2")):
        with pytest.raises(ValueError, match="capacity_sites"):
            ENGINES["svi"](capacity_sites=sites)


def test_importance_sampling_gives_the_discrete_models_exact_log_likelihood(tiny):
    ae, (x,) = tiny("gumbel_vae", n=6)  # 2 variables x 3 classes: 9 codes
    codes = torch.tensor(list(itertools.product(range(3), repeat=2)))
    z = torch.nn.functional.one_hot(codes, 3).float()  # (9, 2, 3)
    with torch.no_grad():
        log_px_z = ae.model.x_dist(z.unsqueeze(1)).log_prob(x)  # (9, B)
    exact = (log_px_z - math.log(9)).logsumexp(0)
    est = importance_estimate(ae, x, num_particles=4000)
    # weights are bounded (finite support), so the estimate is near normal: 4 MCSE plus its bias ~ MCSE^2 / 2
    assert ((est.log_likelihood - exact).abs() < 4 * est.mcse + est.mcse**2).all()
    guide_tr = pyro.poutine.trace(ae.guide).get_trace(x)
    assert set(guide_tr.nodes["z"]["value"].unique().tolist()) == {0.0, 1.0}  # exact one-hot outside a fit


def test_traversals_decode_each_unit_and_each_class(tiny, tmp_path):
    ae, (x,) = tiny("joint_vae", n=4)
    grids = traversals(ae, x)
    assert grids["z"].shape == (2, 7, 12) and grids["z_c"].shape == (2, 3, 12)
    out, logits = ae.guide.encode(x[:1])
    c = torch.nn.functional.one_hot(logits.argmax(-1), 3).float()
    c[0, 1] = torch.tensor([0.0, 0.0, 1.0])  # variable 1 set to class 2
    z = out[:, :2].clone()
    torch.testing.assert_close(grids["z_c"][1, 2], decode(ae, {"z": z, "z_c": c}, x[:1])[0])
    z[0, 0] = 3.0
    c = torch.nn.functional.one_hot(logits.argmax(-1), 3).float()
    torch.testing.assert_close(grids["z"][0, -1], decode(ae, {"z": z, "z_c": c}, x[:1])[0])
    assert traversal_figure(grids, tmp_path / "traversal.png", (3, 4)).exists()
