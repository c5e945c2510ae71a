"""The IAF guide and the VampPrior: densities against independent computations, and what each buys."""

from __future__ import annotations

import json
import math

import pyro.distributions as dist
import pytest
import torch

from aezoo import cli
from aezoo.diagnostics import importance_estimate
from aezoo.guides import AmortizedIAF
from aezoo.inference import ENGINES
from aezoo.models import MODELS, linear_gaussian, vamp_vae, vlae
from aezoo.nn import MLP


def test_iaf_log_density_is_the_change_of_variables():
    torch.manual_seed(0)
    guide = AmortizedIAF("z", torch.nn.Linear(6, 8), z_dim=4, flow_layers=3)
    x = torch.randn(5, 6)
    q = guide.distribution(x)
    z = q.rsample()
    loc, scale = guide.base.encode(x)
    # invert by hand through the transforms, summing the log-Jacobians (Pyro's TransformedDistribution)
    value, log_det = z, torch.zeros(5)
    for t in reversed(guide.flows):
        prev = t.inv(value)
        log_det = log_det + t.log_abs_det_jacobian(prev, value)
        value = prev
    expected = dist.Normal(loc, scale).to_event(1).log_prob(value) - log_det
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-5, atol=1e-5)


def test_iaf_guide_beats_the_normal_guide_on_a_correlated_posterior():
    # PPCA with a fixed W whose exact posterior has correlated coordinates: the diagonal Normal
    # guide cannot reach log p(x); the flow gets closer. Same data, model, budget and seed.
    cfg = linear_gaussian.Config(x_dim=3, z_dim=2)
    torch.manual_seed(0)
    base = linear_gaussian.build(cfg)
    with torch.no_grad():
        base.model.W.copy_(torch.tensor([[2.0, 1.8], [1.0, 1.2], [0.5, -0.4]]))
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        x = torch.randn(200, 2, generator=g) @ base.model.W.T + base.model.mu + 0.3 * torch.randn(200, 3, generator=g)
    gaps = {}
    for layers in (0, 4):
        encoder = MODELS["vae"].Config(x_dim=3, z_dim=2, hidden_dims=(16,)).encoder(4)
        guide = AmortizedIAF("z", encoder, 2, layers) if layers else MODELS["vae"].Config(
            x_dim=3, z_dim=2, hidden_dims=(16,)).guide()
        ae = type(base)(base.model, guide, cfg, "linear_gaussian")
        for p in ae.model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(1)
        ENGINES["svi"](epochs=150, batch_size=50, lr=1e-2, num_particles=4, analytic_kl=False,
                       progress=False).fit(ae, x)
        est = importance_estimate(ae, x, num_particles=2000)
        gaps[layers] = (est.log_likelihood - est.elbo).mean().item()  # E log p(x) - ELBO: KL(q || posterior)
    assert gaps[4] < 0.5 * gaps[0], gaps  # measured: 0.024 vs 0.55 nats


def test_vampprior_density_is_the_mixture_of_the_guide_at_the_pseudo_inputs():
    cfg = vamp_vae.Config(x_dim=10, z_dim=3, hidden_dims=(8,), num_pseudo=7)
    torch.manual_seed(0)
    ae = vamp_vae.build(cfg)
    z = torch.randn(5, 3)
    loc, scale = ae.guide.encode(torch.sigmoid(ae.model.pseudo))
    per_component = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(1))  # (5, K)
    expected = per_component.logsumexp(-1) - math.log(7)
    torch.testing.assert_close(ae.model.z_dist(z).log_prob(z), expected)
    # the prior's gradient reaches the shared encoder and the pseudo-inputs
    ae.model.z_dist(z).log_prob(z).sum().backward()
    assert ae.model.pseudo.grad.abs().sum() > 0 and all(p.grad is not None for p in ae.guide.parameters())


def test_gated_layers_are_the_gated_linear_unit_and_refuse_conv():
    torch.manual_seed(0)
    net = MLP(6, (5, 4), 3, "gated")
    assert [type(m).__name__ for m in net] == ["GatedLinear", "GatedLinear", "Linear"]
    x = torch.randn(2, 6)
    first = net[0]
    torch.testing.assert_close(first(x), first.h(x) * torch.sigmoid(first.g(x)))
    assert vamp_vae.Config().activation == "gated"  # Tomczak & Welling's layers; tanh collapses on MNIST
    with pytest.raises(ValueError, match="gated activation applies to MLP"):
        vamp_vae.build(vamp_vae.Config(x_dim=64, network="conv", image_shape=(8, 8), channels=(4,)))


def test_flow_and_vampprior_from_the_command_line(tmp_path, capsys):
    small = ["--set", "model.z_dim=3", "--set", "model.hidden_dims=16", "--train-size", "200", "--test-size", "20",
             "--epochs", "1", "--num-particles", "20", "--no-progress"]
    for model, extra in (("vae", ["--set", "model.flow_layers=2"]), ("vamp_vae", ["--set", "model.num_pseudo=10"])):
        out = tmp_path / model
        assert cli.main(["fit", model, "--data", "digits", "--binarize", "static", *extra, *small,
                         "--out", str(out)]) == 0, capsys.readouterr().err
        assert json.loads((out / "metrics.json").read_text())["kind"] == "importance"
    assert cli.main(["fit", "wae", "--set", "model.flow_layers=2", *small, "--out", str(tmp_path / "w")]) == 2
    assert "flow_layers" in capsys.readouterr().err


def test_vlae_prior_density_is_the_change_of_variables_and_the_flow_trains():
    cfg = vlae.Config(x_dim=10, z_dim=3, hidden_dims=(8,), prior_flows=2, prior_hidden=8)
    torch.manual_seed(0)
    ae = vlae.build(cfg)
    prior = ae.model.z_dist(torch.zeros(1))
    z = prior.sample((6,))
    value, log_det = z, torch.zeros(6)
    for t in reversed(prior.transforms):
        prev = t.inv(value)
        log_det = log_det + t.log_abs_det_jacobian(prev, value)
        value = prev
    expected = dist.Normal(0.0, 1.0).expand([3]).to_event(1).log_prob(value) - log_det
    torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-5, atol=1e-5)
    x = vlae.example_data(cfg, 32)[0]
    before = [p.detach().clone() for p in ae.model.flows.parameters()]
    ENGINES["svi"](epochs=2, batch_size=16, lr=1e-2, progress=False).fit(ae, x)
    assert all(not torch.equal(a, b) for a, b in zip(before, ae.model.flows.parameters()))


@pytest.mark.parametrize("name", ["hvae", "vamp_vae", "vlae"])
def test_new_entries_declare_no_covariates(name):
    assert getattr(MODELS[name], "COVARIATES", ()) == ()
