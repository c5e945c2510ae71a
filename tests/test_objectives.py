"""Objective components: the beta-weighted ELBO, KL warm-up and the capacity objective."""

from __future__ import annotations

from contextlib import nullcontext

import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aezoo.inference import ENGINES
from aezoo.inference.objectives import LatentScale
from aezoo.inference.terms.capacity import capacity_loss
from aezoo.progress import at_epoch, current_epoch, ramp


@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_beta_scales_exactly_the_kl_term(tiny, beta):
    ae, (x,) = tiny("vae", n=16)
    losses = {}
    for b in (1.0, beta):
        pyro.set_rng_seed(3)  # the same z draws for both, so the reconstruction terms cancel
        losses[b] = ENGINES["svi"](beta=b).loss(ae, x, num_data=len(x)).item()
    loc, scale = ae.guide.encode(x)
    kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).mean().item()
    assert losses[beta] - losses[1.0] == pytest.approx((beta - 1) * kl, rel=1e-4, abs=1e-4)


def test_large_beta_collapses_the_latents(tiny):
    """With beta = 50 the KL dominates: q(z | x) is pushed onto the prior (posterior collapse)."""
    from aezoo.diagnostics import collapse_report

    ae, (x,) = tiny("vae", n=200)
    ENGINES["svi"](beta=50.0, epochs=30, batch_size=50, lr=1e-2, progress=False).fit(ae, x)
    report = collapse_report(ae, x)
    assert report.active_units["z"] == 0 and len(report.collapsed) == ae.config.z_dim


def test_latent_scale_rejects_non_positive_beta():
    with pytest.raises(ValueError, match="positive"):
        LatentScale(0.0)


# KL warm-up and the capacity objective: schedules read the progress published by at_epoch.


def _kl_and_rec(ae, x, seed):
    """Per-datum analytic KL and log p(x | z) on the draws the guide makes after ``seed``."""
    loc, scale = ae.guide.encode(x)
    pyro.set_rng_seed(seed)
    z = Normal(loc, scale).rsample()
    return kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1), ae.model.x_dist(z).log_prob(x)


@pytest.mark.parametrize("epoch", [0.0, 1.0, 2.5, 4.0, 7.0, None])
def test_kl_warmup_weights_the_kl_by_the_schedule(tiny, epoch):
    ae, (x,) = tiny("vae", n=16)
    beta, warmup = 2.0, 4
    engine = ENGINES["svi"](beta=beta, kl_warmup_epochs=warmup)
    with (at_epoch(epoch) if epoch is not None else nullcontext()):
        pyro.set_rng_seed(3)
        warm = engine.loss(ae, x, num_data=len(x)).item()
        weight = engine.kl_weight()
    pyro.set_rng_seed(3)  # the same z draws: beta = 0 leaves -E[log p(x | z)]
    rec = ENGINES["svi"](beta=0.0).loss(ae, x, num_data=len(x)).item()
    kl, _ = _kl_and_rec(ae, x, 3)
    expected = beta * (1.0 if epoch is None else min(1.0, epoch / warmup))
    assert weight == expected
    assert warm - rec == pytest.approx(expected * kl.mean().item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("epoch", [0.0, 1.5, 3.0, 10.0, None])
def test_capacity_loss_is_reconstruction_plus_gamma_abs_kl_minus_c(tiny, epoch):
    ae, (x,) = tiny("vae", n=16)
    engine = ENGINES["svi"](capacity_max=5.0, capacity_epochs=3, gamma=7.0)
    with (at_epoch(epoch) if epoch is not None else nullcontext()):
        pyro.set_rng_seed(3)
        loss = engine.loss(ae, x, num_data=len(x))
        c = engine.capacity()
    assert c == 5.0 * (1.0 if epoch is None else min(1.0, epoch / 3))
    kl, rec = _kl_and_rec(ae, x, 3)
    expected = -rec.mean() + 7.0 * (kl - c).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_capacity_averages_the_kl_over_particles_before_the_absolute_value():
    rec = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    kl = torch.tensor([[1.0, 4.0], [3.0, 0.0]])
    assert capacity_loss(rec, kl, 2.5, 10.0).item() == pytest.approx(2.5 + 10.0 * (0.5 + 0.5) / 2)


class _Spy(ENGINES["svi"]):
    """Records the progress each loss call sees."""

    def loss(self, ae, *batch, num_data):
        SEEN.append(current_epoch())
        return super().loss(ae, *batch, num_data=num_data)


SEEN: list = []


@pytest.mark.parametrize("schedule", [{"kl_warmup_epochs": 2, "beta": 4.0},
                                      {"capacity_max": 3.0, "capacity_epochs": 2, "gamma": 10.0}],
                         ids=["warmup", "capacity"])
def test_schedules_follow_the_loop_and_train_every_parameter(tiny, schedule):
    ae, (x,) = tiny("vae", n=20)
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    SEEN.clear()
    fit = _Spy(epochs=2, batch_size=10, lr=1e-2, progress=False, **schedule).fit(ae, x)
    # the no-grad warm-up step, then epoch + step / steps, and each epoch's divergence check at its end
    assert SEEN == [None, 0.0, 0.5, 1.0, 1.0, 1.5, 2.0]
    assert torch.isfinite(fit.losses).all() and len(fit.losses) == 2
    assert all(not torch.equal(p, before[n]) for n, p in ae.named_parameters()), "a parameter did not move"


@pytest.mark.parametrize("fields", [
    {"kl_warmup_epochs": -1}, {"kl_warmup_epochs": 1.5}, {"capacity_max": -1.0},
    {"capacity_max": float("inf")}, {"capacity_max": 1.0, "gamma": 0.0}, {"capacity_max": 1.0, "capacity_epochs": -2},
    {"capacity_epochs": 3}, {"gamma": 10.0}, {"capacity_max": 1.0, "beta": 4.0},
    {"capacity_max": 1.0, "kl_warmup_epochs": 2},
])
def test_bad_schedule_settings_are_rejected(fields):
    with pytest.raises(ValueError):
        ENGINES["svi"](**fields)


def test_ramp_and_at_epoch_nest_and_reset():
    assert current_epoch() is None and ramp(4) == 1.0
    with at_epoch(1.0):
        assert ramp(4) == 0.25 and ramp(0) == 1.0
        with at_epoch(8):
            assert ramp(4) == 1.0
        assert current_epoch() == 1.0
    assert current_epoch() is None
