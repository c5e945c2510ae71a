"""QLAE's scalar quantization and the k-sparse autoencoder: exact checks on tiny tensors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from aezoo.core import save
from aezoo.guides.quantized import GridUniform, nearest_scalar, straight_through
from aezoo.inference import ENGINES
from aezoo.inference.terms.vq import VQ
from aezoo.models import MODELS, k_sparse_ae, load, qlae
from aezoo.progress import at_epoch

# -- QLAE ------------------------------------------------------------------------------------------


def test_quantization_is_the_nearest_value_of_each_dimension():
    torch.manual_seed(0)
    values = torch.randn(3, 5)  # (D, V): unsorted, its own values per dimension
    z_e = 2 * torch.randn(7, 3)
    z_q, codes = nearest_scalar(z_e, values)
    for b in range(7):
        for d in range(3):
            best = min(range(5), key=lambda v: abs(z_e[b, d].item() - values[d, v].item()))  # brute force
            assert codes[b, d] == best and z_q[b, d] == values[d, best]
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        nearest_scalar(z_e[:, :2], values)


def test_straight_through_has_the_quantized_value_and_the_identity_gradient():
    z_e = torch.tensor([0.3, -1.7, 2.2], requires_grad=True)
    values = torch.tensor([-1.0, 0.0, 1.0]).repeat(3, 1).requires_grad_()
    z_q, _ = nearest_scalar(z_e, values)
    out = straight_through(z_e, z_q)
    assert torch.equal(out, torch.tensor([0.0, -1.0, 1.0]))  # exactly the grid values: the prior's support
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(z_e.grad, torch.tensor([1.0, 2.0, 3.0]))
    assert values.grad is None  # the reconstruction path gives the codebook nothing


def test_grid_prior_is_uniform_over_the_grid():
    values = torch.tensor([[-1.0, 0.5], [0.0, 2.0], [3.0, 4.0]])  # D = 3, V = 2
    prior = GridUniform(values).expand([4])
    draws = prior.sample((100,))
    assert draws.shape == (100, 4, 3)
    assert all(torch.isin(draws[..., d], values[d]).all() for d in range(3))
    torch.testing.assert_close(prior.log_prob(draws), torch.full((100, 4), -3 * math.log(2)))
    off = torch.tensor([-1.0, 0.0, 3.5])
    assert GridUniform(values, validate_args=False).log_prob(off) == -math.inf
    with pytest.raises(ValueError):
        GridUniform(values, validate_args=True).log_prob(off)


def test_qlae_loss_is_reconstruction_plus_constant_and_gradients_reach_encoder_and_codebook(tiny, engine):
    ae, (x,) = tiny("qlae", n=10)
    cfg = ae.config
    svi = engine("svi", penalty=None)  # the ELBO part alone
    loss = svi.loss(ae, x, num_data=len(x))
    z_q = straight_through(ae.guide.encode(x), ae.guide.quantize(ae.guide.encode(x))[0])
    rec = ae.model.x_dist(z_q).log_prob(x)
    torch.testing.assert_close(loss, -rec.mean() + cfg.z_dim * math.log(cfg.num_values))
    loss.backward()
    first = ae.guide.encoder[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0  # straight through to the encoder
    assert ae.guide.codebook.values.grad is None or not ae.guide.codebook.values.grad.any()

    ae.zero_grad()
    term = VQ(beta=0.25, codebook_weight=1.0)
    term(ae, (x,), len(x), None, None).backward()
    z_e = ae.guide.encode(x).detach()
    z_q, codes = ae.guide.quantize(z_e)
    expected = torch.zeros_like(ae.guide.codebook.values)  # d/de of mean_b sum_d (sg[z_e] - e_code)^2
    expected.scatter_add_(1, codes.T, (-2 * (z_e - z_q.detach()) / len(x)).T)
    torch.testing.assert_close(ae.guide.codebook.values.grad, expected)
    assert expected.abs().sum() > 0


def test_codebook_usage_counts_every_datum_once_per_dimension(tiny):
    ae, (x,) = tiny("qlae", n=15)
    counts = qlae.codebook_usage(ae, x, batch_size=4)
    assert counts.shape == (ae.config.z_dim, ae.config.num_values)
    assert (counts.sum(1) == 15).all()
    codes = ae.guide.quantize(ae.guide.encode(x))[1]
    assert counts[0, codes[0, 0]] == (codes[:, 0] == codes[0, 0]).sum()


def test_qlae_refuses_engines_that_need_densities_and_bad_configs(tiny, engine):
    ae, data = tiny("qlae", n=8)
    for name in ("iwae", "nuts"):
        with pytest.raises(ValueError, match="does not apply"):
            engine(name).check(ae, *data)
    with pytest.raises(ValueError, match="num_values"):
        qlae.Config(num_values=1)
    with pytest.raises(ValueError, match="value_range"):
        qlae.Config(value_range=0.0)


# -- k-sparse autoencoder ------------------------------------------------------------------------


def test_top_k_keeps_exactly_k_entries_also_with_ties():
    h = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0],
                      [1.0, 1.0, 1.0, 1.0, 1.0],
                      [-5.0, -1.0, -2.0, -3.0, -4.0]])
    out = k_sparse_ae.keep_top_k(h, 2)
    assert ((out != 0).sum(1) == 2).all()
    assert out[0, 0] == 3 and out[0, 4] == 0 and (out[0, 1:4] == 2).sum() == 1  # one of the tied 2s
    assert torch.equal(out[2], torch.tensor([0.0, -1.0, -2.0, 0.0, 0.0]))  # the largest, negative or not
    with pytest.raises(ValueError, match="k must lie"):
        k_sparse_ae.keep_top_k(h, 6)


def test_k_schedule_falls_linearly_over_the_schedule_epochs():
    cfg = k_sparse_ae.Config(z_dim=200, k=25, k_start=100, k_schedule_epochs=10)
    expected = {0.0: 100, 2.0: 85, 4.0: 70, 5.0: 63, 9.5: 29, 10.0: 25, 17.0: 25}  # 100 - 7.5 e, half up
    for epoch, k in expected.items():
        with at_epoch(epoch):
            assert cfg.current_k() == k, epoch
    assert cfg.current_k() == 25  # outside a fit: the target
    with at_epoch(0.0):
        assert k_sparse_ae.Config(z_dim=50, k=10, k_start=100).current_k() == 50  # at most every unit
        assert dataclasses.replace(cfg, k_schedule_epochs=0).current_k() == 25


def test_the_guide_keeps_the_scheduled_k_in_training_and_alpha_k_at_test_time():
    torch.manual_seed(0)
    cfg = k_sparse_ae.Config(x_dim=12, z_dim=40, k=4, k_start=20, k_schedule_epochs=2)
    ae = k_sparse_ae.build(cfg)
    x = torch.randn(6, 12)
    with at_epoch(1.0):
        assert ((ae.guide(x) != 0).sum(1) == 12).all()
    assert ((ae.guide(x) != 0).sum(1) == 4).all()
    codes = k_sparse_ae.sparse_codes(ae, x, alpha=3.0, batch_size=4)
    assert codes.shape == (6, 40) and ((codes != 0).sum(1) == 12).all()
    dense = ae.guide.encoder(x).detach()
    torch.testing.assert_close(codes, k_sparse_ae.keep_top_k(dense, 12))  # the 12 largest linear activations
    assert ((k_sparse_ae.sparse_codes(ae, x, alpha=100.0) != 0).sum(1) == 40).all()  # at most every unit
    with pytest.raises(ValueError, match="alpha"):
        ae.guide.encode(x, alpha=0.5)


def test_dead_latents_are_the_units_zero_on_every_datum():
    codes = torch.tensor([[0.0, 1.5, 0.0, 0.0],
                          [0.0, 0.0, -2.0, 0.0],
                          [0.0, 3.0, 0.0, 0.0]])
    assert torch.equal(k_sparse_ae.dead_latents(codes), torch.tensor([True, False, False, True]))
    assert k_sparse_ae.dead_latents(codes).sum() == 2
    with pytest.raises(ValueError, match=r"\(N, H\)"):
        k_sparse_ae.dead_latents(codes[0])


def test_tied_decoder_shares_the_encoder_weight_tensor(tiny, engine, tmp_path):
    ae, data = tiny("k_sparse_ae")
    assert ae.model.weight is ae.guide.encoder.weight
    assert sum(p is ae.guide.encoder.weight for p in ae.parameters()) == 1  # optimised once
    engine("svi", model="k_sparse_ae").fit(ae, *data)
    loaded = load(save(ae, tmp_path / "run"))
    assert loaded.model.weight is loaded.guide.encoder.weight
    torch.testing.assert_close(loaded.model.weight, ae.guide.encoder.weight)
    untied, _ = tiny("k_sparse_ae", tied=False)
    assert untied.model.weight is not untied.guide.encoder.weight
    assert untied.model.weight.shape == untied.guide.encoder.weight.shape  # (H, D_x), used as W^T z


def test_k_sparse_config_errors():
    with pytest.raises(ValueError, match="at most z_dim"):
        k_sparse_ae.Config(z_dim=10, k=11, k_start=20)
    with pytest.raises(ValueError, match="k_start"):
        k_sparse_ae.Config(k=25, k_start=10)
    assert "k_sparse_ae" in MODELS and "qlae" in MODELS and "svi" in ENGINES
