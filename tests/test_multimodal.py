"""Multimodal VAEs: the expert aggregations against closed forms, missing modalities, the estimators.

The product of Gaussian experts is checked against the product of densities (their log-ratio is
constant in z), the mixtures against an explicit logsumexp, the stratified sampler by which
components it draws, and the importance-sampled log p(y) of the label modality alone against a
plain Monte Carlo average over the prior, E_{p(z)}[p(y | z)].
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from aezoo.data import views
from aezoo.diagnostics import importance_estimate
from aezoo.diagnostics import multimodal as mm
from aezoo.guides.experts import UniformMixture, mixture_of_products, product_of_experts, subsets
from aezoo.inference import ENGINES
from aezoo.inference.terms import make_term
from aezoo.models import MODELS
from aezoo.traces import log_weights


def experts(b: int = 4, m: int = 3, d: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, m, d, generator=g, dtype=torch.float64),
            0.3 + torch.rand(b, m, d, generator=g, dtype=torch.float64))


def test_product_of_experts_is_the_product_of_the_densities():
    loc, scale = experts()
    present = torch.tensor([[True, True, True], [True, False, True], [False, False, True], [False, False, False]])
    p_loc, p_scale = product_of_experts(loc, scale, present)
    z = torch.randn(5, 4, 2, dtype=torch.float64)  # five points per datum
    product = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + sum(
        dist.Normal(loc[:, m], scale[:, m]).log_prob(z).sum(-1) * present[:, m] for m in range(3))
    ratio = dist.Normal(p_loc, p_scale).log_prob(z).sum(-1) - product  # log N_poe - log prod: constant in z
    torch.testing.assert_close(ratio - ratio[0], torch.zeros_like(ratio))
    torch.testing.assert_close(p_loc[3], torch.zeros(2, dtype=torch.float64))  # no expert: the prior
    torch.testing.assert_close(p_scale[3], torch.ones(2, dtype=torch.float64))


def test_mixture_density_is_the_logsumexp_of_its_components():
    loc, scale = experts()
    available = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [True, True, False]])
    q = UniformMixture(loc, scale, available)
    z = torch.randn(6, 4, 2, dtype=torch.float64)
    dens = torch.stack([dist.Normal(loc[:, c], scale[:, c]).log_prob(z).sum(-1).exp() for c in range(3)], -1)
    expected = ((dens * available).sum(-1) / available.sum(-1)).log()
    torch.testing.assert_close(q.log_prob(z), expected)
    torch.testing.assert_close(q.mean[1], (loc[1, 0] + loc[1, 2]) / 2)


def test_stratified_draws_take_every_available_component_in_turn():
    loc, _ = experts()
    available = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [True, True, True]])
    q = UniformMixture(loc, torch.full_like(loc, 1e-9), available)
    draws = q.expand((6, 4)).rsample()  # six particles of four data
    component = (draws.unsqueeze(-2) - loc).abs().sum(-1).argmin(-1)  # (6, 4): which component each draw is
    for b in range(4):
        counts = torch.bincount(component[:, b], minlength=3)
        torch.testing.assert_close(counts, 6 // available[b].sum() * available[b].long())
    # unstratified draws (no particle dim) are uniform over the available components: binomial error bounds
    single = UniformMixture(loc[:1].expand(20000, -1, -1), torch.full_like(loc[:1], 1e-9).expand(20000, -1, -1),
                            available[1:2].expand(20000, -1))
    first = ((single.rsample() - loc[0, 0]).abs().sum(-1) < 1e-6).double().mean()
    assert abs(first - 0.5) < 4 * math.sqrt(0.25 / 20000)


def test_draws_are_reparameterised_within_their_component():
    loc, scale = experts()
    loc.requires_grad_(True)
    UniformMixture(loc, scale, torch.ones(4, 3, dtype=torch.bool)).expand((3, 4)).rsample().sum().backward()
    torch.testing.assert_close(loc.grad, torch.ones_like(loc))  # each component drawn once per datum, slope 1


def test_mixture_of_products_keeps_the_subsets_of_the_present_modalities():
    loc, scale = experts(b=2)
    members = subsets(3)
    assert members.shape == (7, 3) and members.sum(-1).tolist() == [1, 1, 1, 2, 2, 2, 3]
    q = mixture_of_products(loc, scale, torch.tensor([[True, False, True], [True, True, True]]), members)
    keep = [row.tolist() for row in members[q.available[0]]]
    assert keep == [[True, False, False], [False, False, True], [True, False, True]] and q.available[1].all()
    pair_loc, _ = product_of_experts(loc[0, [0, 2]], scale[0, [0, 2]], torch.ones(2, dtype=torch.bool), prior=False)
    torch.testing.assert_close(q.loc[0, 4], pair_loc)  # the {x, y} component is the product of x's and y's experts
    assert subsets(3, singletons_only=True).equal(torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one present"):
        mixture_of_products(loc, scale, torch.zeros(2, 3, dtype=torch.bool), members)


@pytest.mark.parametrize("aggregation", ["poe", "moe", "mopoe"])
def test_a_missing_modality_is_left_out_of_model_and_guide(aggregation, tiny):
    ae, (x, x2, y, _) = tiny("mvae", n=6, aggregation=aggregation)
    hidden = torch.tensor([True, False, True]).expand(6, -1)
    z = torch.randn(6, ae.config.z_dim)
    none = poutine.trace(poutine.condition(ae.model, {"z": z})).get_trace(x, None, y)
    masked = poutine.trace(poutine.condition(ae.model, {"z": z})).get_trace(x, x2, y, hidden)
    torch.testing.assert_close(none.log_prob_sum(), masked.log_prob_sum())
    q_none, q_masked = ae.guide.posterior(x, None, y), ae.guide.posterior(x, x2, y, hidden)
    torch.testing.assert_close(q_none.log_prob(z), q_masked.log_prob(z))
    with pytest.raises(ValueError, match="none of their modalities"):
        ae.validate(x, x2, y, torch.zeros(6, 3, dtype=torch.bool))


def test_label_marginal_by_importance_sampling_matches_the_prior_average(tiny):
    # log p(y) with x and x2 masked out: importance sampling with q(z | y) against E_{p(z)}[p(y | z)]
    # q(z | y) is set to N(0.3 c, 1.3^2) for class c: broader than the prior, so the weights are bounded
    ae, (x, x2, y, _) = tiny("mvae", n=4, aggregation="moe", z_dim=1)
    head = ae.guide.encoders[2][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, math.log(math.expm1(1.3))]))
        ae.guide.encoders[2][0].weight.copy_(0.3 * torch.arange(3.0).expand_as(ae.guide.encoders[2][0].weight))
    only_y = torch.tensor([False, False, True]).expand(4, -1)
    est = importance_estimate(ae, x, x2, y, only_y, num_particles=20000)
    with torch.no_grad():
        z = torch.randn(200000, 1, 1)
        probs = ae.model.modality_dist(2, z).log_prob(y).exp()  # (200000, 4)
    exact, se = probs.mean(0).log(), probs.std(0) / probs.mean(0) / math.sqrt(len(z))
    assert ((est.log_likelihood - exact).abs() < 4 * (se + est.mcse)).all(), (est.log_likelihood, exact)


def test_conditional_of_a_label_is_a_distribution_over_classes(tiny):
    ae, (x, x2, y, _) = tiny("mvae", n=5)
    probs = []
    for c in range(ae.config.num_classes):  # the same seed: the same draws of q(z | x) for every class
        pyro.set_rng_seed(3)
        cond = mm.conditional_log_likelihoods(ae, x, x2, torch.full_like(y, c), num_particles=50)
        probs.append(cond["y|x"].exp())
        assert (cond["x2|x,y"] < 0).all()
    torch.testing.assert_close(sum(probs), torch.ones(5), atol=1e-5, rtol=0)


def test_modality_subsets_adds_each_unimodal_elbo(tiny):
    ae, data = tiny("mvae", n=6, aggregation="poe")
    term = make_term("modality_subsets", ("random=0",))
    term.check(ae, *data)
    pyro.set_rng_seed(1)
    value = term(ae, data, 6, None, None)
    pyro.set_rng_seed(1)
    expected = 0.0
    for m in range(3):
        present = data[3] & torch.eye(3, dtype=torch.bool)[m]
        keep = present.any(-1)
        sub = (*(d[keep] for d in data[:3]), present[keep])
        expected = expected - log_weights(ae, *sub, num_particles=1).sum() / 6
    torch.testing.assert_close(value, expected)
    with pytest.raises(ValueError, match="does not apply"):
        term.check(*tiny("vae"))


def test_views_pair_each_image_with_another_of_its_class():
    labels = torch.randint(4, (200,), generator=torch.Generator().manual_seed(0)).numpy()
    partner = views.partners(labels, seed=1)
    assert (labels[partner] == labels).all() and (partner != torch.arange(200).numpy()).all()
    assert (views.partners(labels, seed=1) == partner).all()
    grey = torch.rand(200, 784)
    torch.testing.assert_close(views.as_digits("x2", views.second_view(grey, labels, 1)), grey[partner])


@pytest.mark.slow
def test_a_trained_mopoe_generates_coherently():
    # Real multi-view MNIST, 6,000 images, 5 epochs: cross-modal and joint coherence far above chance.
    ds = pytest.importorskip("aezoo.data").load("mnist_views", "dynamic", 6000, 300)
    pyro.set_rng_seed(0)
    ae = MODELS["mvae"].build(MODELS["mvae"].Config())
    ENGINES["svi"](epochs=5, batch_size=100, lr=1e-3, num_particles=3, progress=False).fit(
        ae, *ds.arrays("train", ("x2", "y")), transform=ds.transform)
    judge = mm.digit_classifier()
    assert judge.test_accuracy > 0.95
    scores = mm.coherence(ae, *ae.prepare(*ds.arrays("test", ("x2", "y")))[:3], judge)
    # measured over two seeds: x->y 0.76-0.81, y->x 0.88-0.90, joint 0.35-0.36 (chance: 0.1, 0.1, 0.01)
    assert scores["x->y"] > 0.5 and scores["y->x"] > 0.5 and scores["joint"] > 0.15, scores
