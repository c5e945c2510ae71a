"""VQ-VAE: nearest-entry quantization, straight-through gradients, EMA codebook, the PixelCNN prior, the bound."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pyro import poutine

from aezoo.core import save
from aezoo.diagnostics import generate, importance_estimate
from aezoo.guides.codebook import GridPrior, VectorQuantizer, nearest, usage
from aezoo.inference import ENGINES
from aezoo.inference.code_prior import fit_prior
from aezoo.inference.terms.vq import VQ
from aezoo.models import load, vq_vae
from aezoo.nn import MaskedConv2d, PixelCNN


def test_nearest_matches_brute_force():
    torch.manual_seed(0)
    z_e, codebook = torch.randn(5, 3, 4), torch.randn(7, 4)
    codes = nearest(z_e, codebook)
    for idx in itertools.product(range(5), range(3)):
        dists = [float(((z_e[idx] - e) ** 2).sum()) for e in codebook]
        assert codes[idx].item() == dists.index(min(dists))


def test_forward_is_the_nearest_entry_and_gradients_go_straight_through(tiny):
    ae, (x,) = tiny("vq_vae", n=6)
    z_e = ae.guide.encode(x)
    z = poutine.trace(ae.guide).get_trace(x).nodes["z"]["value"]
    codebook = ae.guide.quantizer.codebook
    assert torch.equal(z, codebook[nearest(z_e, codebook)].flatten(1))
    assert z.shape == (6, 2 * 2 * 3)
    ae.model.x_dist(z).log_prob(x).sum().backward()  # the reconstruction only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.guide.encoder.parameters())
    assert codebook.grad is None  # the straight-through estimator gives the codebook nothing
    VQ()(ae, (x,), len(x), None, None).backward()
    assert codebook.grad is not None and codebook.grad.abs().sum() > 0  # the codebook term does


def toy_ema() -> VectorQuantizer:
    q = VectorQuantizer(3, 2, ema=True, decay=0.9, epsilon=0.1)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
        q.embed_sum.copy_(q.codebook)
    return q


def test_ema_update_equals_the_closed_form():
    q = toy_ema()
    z_e = torch.tensor([[0.1, -0.2], [0.2, 0.0], [1.2, 0.8], [0.9, 1.3], [1.1, 1.0], [0.0, 0.3]])
    _, codes = q.quantize(z_e)
    assert codes.tolist() == [0, 0, 1, 1, 1, 0]  # code 2 unused
    q.ema_update(z_e, codes)
    n_i = torch.tensor([3.0, 3.0, 0.0])
    s_i = torch.stack([z_e[[0, 1, 5]].sum(0), z_e[[2, 3, 4]].sum(0), torch.zeros(2)])
    big_n = 0.9 * torch.ones(3) + 0.1 * n_i  # N_i from 1
    m = 0.9 * torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]) + 0.1 * s_i  # m_i from e_i
    smoothed = (big_n + 0.1) / (big_n.sum() + 3 * 0.1) * big_n.sum()
    torch.testing.assert_close(q.cluster_size, big_n)
    torch.testing.assert_close(q.embed_sum, m)
    torch.testing.assert_close(q.codebook.detach(), m / smoothed[:, None])
    assert not q.codebook.requires_grad


def test_ema_restarts_dead_entries_at_batch_vectors():
    q = toy_ema()
    q.restart_threshold = 0.95  # code 2 (unused) falls to N = 0.9, codes 0 and 1 rise to 1.2
    z_e = torch.tensor([[0.1, -0.2], [0.2, 0.0], [1.2, 0.8], [0.9, 1.3]])
    q.ema_update(z_e, q.quantize(z_e)[1])
    assert q.cluster_size.tolist() == pytest.approx([1.1, 1.1, 1.0])
    assert (q.codebook[2] == z_e).all(-1).any() and torch.equal(q.embed_sum[2], q.codebook[2].detach())
    with pytest.raises(ValueError, match="ema=True"):
        vq_vae.Config(restart_threshold=1.0)


def test_the_ema_guide_updates_in_training_steps_only(tiny):
    ae, (x,) = tiny("vq_vae", n=6, ema=True)
    before = ae.guide.quantizer.codebook.detach().clone()
    with torch.no_grad():
        ae.guide(x)  # no gradients: an evaluation, e.g. the loop's divergence check
    ae.eval()
    ae.guide(x)
    assert torch.equal(ae.guide.quantizer.codebook, before)
    ae.train()
    ae.guide(x)
    assert not torch.equal(ae.guide.quantizer.codebook, before)
    z_e = ae.guide.encode(x)
    z_q, _ = ae.guide.quantize(z_e)
    commitment = (z_e - z_q).pow(2).flatten(1).sum(-1).mean()
    torch.testing.assert_close(VQ(beta=0.25)(ae, (x,), 6, None, None), 0.25 * commitment)  # no codebook term


def test_an_ema_fit_trains_every_gradient_parameter_and_moves_the_codebook(tiny, engine):
    ae, data = tiny("vq_vae", ema=True)
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    engine("svi", model="vq_vae").fit(ae, *data)
    for name, p in ae.named_parameters():
        trained = p.requires_grad or name.endswith("quantizer.codebook")  # the codebook by EMA, the rest by Adam
        assert torch.equal(p, before[name]) != trained, name  # the prior's network waits for fit_prior
    assert not ae.guide.quantizer.codebook.requires_grad


def raster_later(h: int, w: int, i: int, j: int, inclusive: bool) -> torch.Tensor:
    """``(H, W)`` True at the positions at or after (``inclusive``) / after ``(i, j)`` in raster order."""
    order = torch.arange(h * w).reshape(h, w)
    return order >= i * w + j if inclusive else order > i * w + j


@pytest.mark.parametrize("mask", ["A", "B"])
def test_masked_convolutions_are_causal(mask):
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, 5, mask)
    x = torch.randn(1, 2, 5, 5)
    for i, j in itertools.product(range(5), range(5)):
        later = raster_later(5, 5, i, j, inclusive=mask == "A")
        moved = torch.where(later, torch.randn(1, 2, 5, 5), x)
        assert torch.equal(conv(moved)[..., i, j], conv(x)[..., i, j]), (i, j)
        if mask == "B":  # B sees the centre, A does not (the same check with the centre moved fails for B)
            centre = x.clone()
            centre[..., i, j] += 1.0
            assert not torch.equal(conv(centre)[..., i, j], conv(x)[..., i, j])


def test_the_pixelcnn_logits_depend_on_earlier_codes_only():
    torch.manual_seed(0)
    net = PixelCNN(4, channels=6, layers=2)
    codes = torch.randint(4, (3, 4, 5))
    for i, j in itertools.product(range(4), range(5)):
        later = raster_later(4, 5, i, j, inclusive=True)
        moved = torch.where(later, torch.randint(4, (3, 4, 5)), codes)
        torch.testing.assert_close(net(moved)[:, i, j], net(codes)[:, i, j], rtol=0, atol=1e-6)
    assert not torch.allclose(net(codes)[:, -1, -1], net(torch.randint(4, (3, 4, 5)))[:, -1, -1])


def fitted_prior(num_codes: int = 3, grid=(2, 2)) -> GridPrior:
    torch.manual_seed(0)
    prior = GridPrior(num_codes, grid, channels=8, layers=1)
    prior.fitted.fill_(True)
    with torch.no_grad():
        for p in prior.net.parameters():
            p.mul_(3.0)  # far from uniform
    return prior


def test_the_prior_is_a_distribution_over_every_grid():
    prior = fitted_prior()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(81, 2, 2)
    log_p = prior.log_prob(grids)
    torch.testing.assert_close(log_p.logsumexp(0), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert log_p.max() - log_p.min() > 1.0  # not the uniform prior
    prior.fitted.fill_(False)
    torch.testing.assert_close(prior.log_prob(grids), torch.full((81,), -4 * math.log(3)))


def test_ancestral_samples_follow_the_prior():
    prior = fitted_prior()
    n = 20000
    draws = prior.sample(torch.Size([n]))
    index = (draws.reshape(n, 4) * torch.tensor([27, 9, 3, 1])).sum(-1)
    observed = torch.bincount(index, minlength=81).double()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(81, 2, 2)
    expected = prior.log_prob(grids).exp().double() * n
    keep = expected >= 5  # chi-square approximation; the rest pooled
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    chi2 += (observed[~keep].sum() - expected[~keep].sum()) ** 2 / expected[~keep].sum().clamp_min(1e-9)
    df = int(keep.sum())  # cells - 1, plus the pooled cell
    assert chi2 < df + 3.1 * math.sqrt(2 * df) + 10  # about the 0.1 % upper tail for df near 80


def test_the_bound_is_reconstruction_plus_prior_and_the_zoo_elbo(tiny):
    ae, (x,) = tiny("vq_vae", n=10)
    fit_prior(ae, x, epochs=2, batch_size=5)
    assert bool(ae.model.prior.fitted)
    ae.eval()
    z_q, codes = ae.guide.quantize(ae.guide.encode(x))
    expected = ae.model.x_dist(z_q.flatten(1)).log_prob(x) + ae.model.prior.log_prob(codes)
    got = vq_vae.bound(ae, x)
    torch.testing.assert_close(got, expected.detach())
    assert (ae.model.prior.log_prob(codes) != -4 * math.log(5)).all()  # the learned prior, not the uniform one
    est = importance_estimate(ae, x, num_particles=3)
    torch.testing.assert_close(est.log_likelihood, got)  # q(k | x) one-hot: every weight is the bound
    torch.testing.assert_close(est.elbo, got)
    loss = ENGINES["svi"]().loss(ae, x, num_data=len(x))  # the ELBO without the vq term
    torch.testing.assert_close(loss, -got.mean())


def test_fit_prior_fits_the_codes_and_is_saved_with_the_model(tiny, tmp_path):
    ae, (x,) = tiny("vq_vae", n=40)
    codes = ae.guide.codes(x)
    assert not codes.requires_grad
    result = fit_prior(ae, x, epochs=30, batch_size=10, lr=1e-2)
    uniform = 4 * math.log(5)
    assert result.losses.shape == (30,) and result.losses[-1] < min(result.losses[0], uniform)
    assert not any(p.requires_grad for p in ae.model.prior.parameters())  # the svi engine never trains it
    loaded = load(save(ae, tmp_path / "run"))
    assert bool(loaded.model.prior.fitted)
    torch.testing.assert_close(vq_vae.bound(loaded, x), vq_vae.bound(ae, x))
    with pytest.raises(ValueError, match="does not apply"):
        fit_prior(tiny("vae")[0], x)


def test_samples_decode_prior_grids_of_codebook_entries(tiny):
    ae, (x,) = tiny("vq_vae", n=4)
    fit_prior(ae, x, epochs=1)
    tr = poutine.trace(poutine.uncondition(ae.model)).get_trace(x)
    z = tr.nodes["z"]["value"].reshape(4, 2, 2, 3)
    codebook = ae.model.quantizer.codebook
    assert torch.equal(z, codebook.detach()[nearest(z, codebook)])
    images = generate(ae, x)
    assert images.shape == x.shape and ((images >= 0) & (images <= 1)).all()


def test_usage_perplexity_and_dead_codes():
    assert usage(torch.tensor([3, 3, 3])) == {"perplexity": pytest.approx(3.0), "dead_codes": 0, "num_codes": 3}
    assert usage(torch.tensor([2, 2, 0, 0])) == {"perplexity": pytest.approx(2.0), "dead_codes": 2, "num_codes": 4}
    assert usage(torch.tensor([5, 0, 0]))["perplexity"] == pytest.approx(1.0)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert usage(torch.tensor([1, 3]))["perplexity"] == pytest.approx(math.exp(h))
    with pytest.raises(ValueError, match="histogram"):
        usage(torch.zeros(3))


def test_codebook_usage_counts_every_position(tiny):
    ae, (x,) = tiny("vq_vae", n=12)
    report = vq_vae.codebook_usage(ae, x, batch_size=5)
    counts = torch.bincount(ae.guide.codes(x).reshape(-1), minlength=5)
    assert report["dead_codes"] == int((counts == 0).sum())
    assert report["perplexity"] == pytest.approx(usage(counts)["perplexity"])
    assert report["reconstruction_nll"] == pytest.approx(-vq_vae.bound(ae, x).mean().item() - 4 * math.log(5),
                                                         rel=1e-5)
    assert 0 < report["mse"] < 1
