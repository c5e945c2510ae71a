"""PV-RNN: per-datum adaptive vectors (the ``index`` covariate), the meta-prior and error regression."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from pyro import poutine

from aezoo.core import save
from aezoo.data import Dataset
from aezoo.inference import ENGINES
from aezoo.models import MODELS, load, pv_rnn
from aezoo.runs import covariates_of

CFG = pv_rnn.Config(hidden_dim=16, num_data=32, seq_len=20)


def svi(**fields):
    return ENGINES["svi"](**{"epochs": 1, "batch_size": 8, "lr": 1e-2, "progress": False, **fields})


@pytest.fixture(scope="module")
def fitted():
    """A PV-RNN fitted for 150 full-batch epochs on 32 switching-Lissajous sequences (about 5 s)."""
    torch.manual_seed(0)
    ae = pv_rnn.build(CFG)
    data = pv_rnn.example_data(CFG, 32, seed=0)
    svi(epochs=150, batch_size=32).fit(ae, *data)
    return ae


def test_the_data_path_supplies_the_index():
    x, mask, _ = pv_rnn.example_data(CFG, 10)
    ds = Dataset("curves", train=x[:6], test=x[6:], train_covariates={"mask": mask[:6]},
                 test_covariates={"mask": mask[6:]})
    ae = pv_rnn.build(CFG)
    train = covariates_of(ae, ds, "train")  # not refused though the data lack an index
    assert torch.equal(train[2], torch.arange(6)) and train[2].dtype == torch.int64
    assert torch.equal(ds.arrays("test", ("index",))[1], torch.arange(4))
    given = Dataset("curves", train=x[:6], test=x[6:], train_covariates={"index": torch.arange(6).flip(0)},
                    test_covariates={"index": torch.arange(4)})
    assert torch.equal(given.arrays("train", ("index",))[1], torch.arange(6).flip(0))
    assert given.kinds["index"] == "index"


def test_an_svi_step_moves_the_adaptive_vectors_of_its_minibatch_only():
    ae = pv_rnn.build(CFG)
    x, mask, index = pv_rnn.example_data(CFG, 32)
    before = ae.guide.adaptive.detach().clone()
    picked = torch.tensor([3, 17, 4, 30, 11])
    svi(batch_size=8).fit(ae, x[picked], mask[picked], index[picked])  # 5 data, batch 8: exactly one step
    moved = (ae.guide.adaptive.detach() != before).flatten(1).any(1)
    assert moved.nonzero().flatten().tolist() == sorted(picked.tolist())


def test_save_load_keeps_the_adaptive_vectors(tmp_path):
    ae = pv_rnn.build(CFG)
    data = pv_rnn.example_data(CFG, 32)
    svi(epochs=2).fit(ae, *data)
    assert ae.guide.adaptive.detach().abs().sum() > 0
    loaded = load(save(ae, tmp_path / "run"))
    assert torch.equal(loaded.guide.adaptive, ae.guide.adaptive)
    assert set(loaded.state_dict()) == set(ae.state_dict()) and "guide.adaptive" in ae.state_dict()
    assert not any(k.startswith("guide.cell") for k in ae.state_dict())  # the shared recurrence is stored once


@pytest.mark.parametrize("index, match, fit_match", [
    (torch.arange(32, 40), "out of range", "out of range"),
    (-torch.arange(8) - 1, "out of range", "out of range"),
    (torch.arange(8).float(), "integer", "integer"),
    (torch.arange(4), r"\(B,\) = \(8,\)", "one row per datum"),  # fit checks the lengths first
])
def test_a_bad_index_is_a_clear_error(index, match, fit_match):
    ae = pv_rnn.build(CFG)
    x, mask, _ = pv_rnn.example_data(CFG, 8)
    with pytest.raises(ValueError, match=match):
        ae.validate(x, mask, index)
    with pytest.raises(ValueError, match=match):
        ae.guide(x, mask, index)
    with pytest.raises(ValueError, match=fit_match):
        svi().fit(ae, x, mask, index)


def test_too_long_sequences_and_too_many_data_are_refused():
    ae = pv_rnn.build(CFG)
    x = pv_rnn.switching_lissajous(4, 25)
    with pytest.raises(ValueError, match="seq_len"):
        ae.validate(x)
    with pytest.raises(ValueError, match="num_data"):
        pv_rnn.example_data(CFG, 33)
    with pytest.raises(ValueError, match="num_data"):
        ae.guide(pv_rnn.switching_lissajous(33, 10))


def test_the_meta_prior_scales_the_latent_site_in_model_and_guide():
    ae = pv_rnn.build(dataclasses.replace(CFG, meta_prior=0.25))
    data = pv_rnn.example_data(CFG, 8)
    guide_tr = poutine.trace(ae.guide).get_trace(*data, num_data=16)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data, num_data=16)
    assert guide_tr.nodes["z"]["scale"] == model_tr.nodes["z"]["scale"] == 0.25 * 2
    assert model_tr.nodes["x"]["scale"] == 2


def test_the_path_density_is_the_product_of_its_steps():
    # log_prob (vectorised over time after one pass of the recurrence) equals the sum of the
    # per-step Normal densities met while stepping, and a step after the last observed one is not scored.
    torch.manual_seed(1)
    model = pv_rnn.build(CFG).model
    x, mask, _ = pv_rnn.example_data(CFG, 3)
    mask[0, 15:] = False
    prior = model.z_prior(x, mask)
    z = prior.rsample((2,))  # (2, 3, T, D_z)
    h, total = torch.zeros(2, 3, CFG.hidden_dim), torch.zeros(2, 3)
    for t in range(CFG.seq_len):
        loc, scale = pv_rnn.gaussian_head(model.to_prior(torch.tanh(h)))
        step = torch.distributions.Normal(loc, scale).log_prob(z[..., t, :]).sum(-1)
        total = total + step * torch.tensor([t < 15, True, True])
        h = model.cell(h, z[..., t, :])
    torch.testing.assert_close(prior.log_prob(z), total)


def test_error_regression_beats_the_prior_forecast(fitted):
    # 32 held-out sequences; the window shows the first 12 steps (the second cycle's orientation shows
    # from its 2nd step), the forecast covers the next 5 steps of that cycle. Paired per-window
    # differences d = mse(prior-only) - mse(regression): the test asks for a mean above 3 standard
    # errors (under "no improvement" a t above 3 has probability ~0.2%, so a pass is no accident).
    # Measured: mean d ~0.17 with t ~20; all seeds fixed, so the run is deterministic.
    x = pv_rnn.switching_lissajous(32, 17, seed=123)
    window, future = x[:, :12], x[:, 12:]
    before = {k: v.clone() for k, v in fitted.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in fitted.parameters()]
    prediction, losses = pv_rnn.error_regression(fitted, window, horizon=5, steps=60, lr=0.1)
    assert prediction.shape == (32, 5, 2) and losses.shape == (60,)
    assert losses[-10:].mean() < losses[:10].mean()
    prior = pv_rnn.prior_prediction(fitted, window, horizon=5)
    d = ((prior - future) ** 2).mean((1, 2)) - ((prediction - future) ** 2).mean((1, 2))
    print(f"mean d {d.mean():.4f}, t {d.mean() / (d.std() / len(d) ** 0.5):.1f}")
    assert d.mean() > 3 * d.std() / len(d) ** 0.5
    # the network weights are frozen: nothing of the fitted model moved, no gradient reached it
    assert all(torch.equal(v, fitted.state_dict()[k]) for k, v in before.items())
    assert all((g is None and p.grad is None) or (g is not None and torch.equal(g, p.grad))
               for g, p in zip(grads, fitted.parameters()))


def test_error_regression_rejects_bad_settings(fitted):
    x = pv_rnn.switching_lissajous(2, 8)
    with pytest.raises(ValueError, match="steps"):
        pv_rnn.error_regression(fitted, x, steps=0)
    with pytest.raises(ValueError, match="shape"):
        pv_rnn.error_regression(fitted, x[..., :1])


def test_the_model_is_registered():
    assert MODELS["pv_rnn"] is pv_rnn
