"""Koopman VAE: the transition for regular and irregular times, the spectral term, the temporal scores, the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aezoo.data import load
from aezoo.data.series import drop_steps, sines, windows
from aezoo.diagnostics.temporal import discriminative_score, predictive_score
from aezoo.inference import ENGINES
from aezoo.inference.terms import make_term
from aezoo.inference.terms.koopman import eigenvalue_moduli, spectral_penalty
from aezoo.models import MODELS

KVAE = MODELS["koopman_vae"]
TINY = KVAE.Config(x_dim=3, z_dim=3, hidden_dim=4, hidden_dims=(4,), seq_len=6)


def test_regular_steps_equal_the_irregular_code_path_with_unit_gaps():
    ae = KVAE.build(TINY)
    z = torch.randn(4, 6, 3)
    ones = torch.ones(4, 6)
    torch.testing.assert_close(ae.model.transition(z, ones), ae.model.transition(z), rtol=1e-5, atol=1e-6)
    # A^dt is a semigroup: two half steps are one step
    half = ae.model.transition(ae.model.transition(z, 0.5 * ones), 0.5 * ones)
    torch.testing.assert_close(half, ae.model.transition(z), rtol=1e-5, atol=1e-6)
    x = torch.zeros(4, 6, 3)
    t = torch.arange(6.0).expand(4, 6) + 3.0  # regular times, not starting at 0
    with torch.no_grad():
        loc_reg, scale_reg, _ = ae.model.step(z, ae.model.z_prior(x).dt)
        irregular = ae.model.transition(z, ones) + ae.model.to_loc(ae.model.gru(torch.cat([z, ones[..., None]], -1))[0])
        torch.testing.assert_close(loc_reg, irregular, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ae.model.z_prior(x, t).log_prob(z), ae.model.z_prior(x).log_prob(z))
        torch.testing.assert_close(ae.model.residual(z, t), ae.model.residual(z), rtol=1e-5, atol=1e-6)


def test_irregular_gaps_change_the_prior_and_are_checked():
    ae = KVAE.build(TINY)
    x, z = torch.zeros(2, 6, 3), torch.randn(2, 6, 3)
    t = torch.tensor([0.0, 1, 3, 4, 7, 8]).expand(2, 6)
    assert not torch.allclose(ae.model.z_prior(x, t).log_prob(z), ae.model.z_prior(x).log_prob(z))
    draw = ae.model.z_prior(x, t).rsample((5,))
    assert draw.shape == (5, 2, 6, 3) and torch.isfinite(draw).all()
    with pytest.raises(ValueError, match="increasing"):
        ae.validate(x, None, t.flip(-1))
    with pytest.raises(ValueError, match="shape"):
        ae.validate(x, None, t[:, :4])


def test_eigenvalue_moduli_are_those_of_the_one_step_operator():
    g = torch.randn(5, 5, generator=torch.Generator().manual_seed(3)) * 0.5
    expected = torch.linalg.eigvals(torch.linalg.matrix_exp(g.double())).abs().sort().values
    torch.testing.assert_close(eigenvalue_moduli(g.double()).sort().values, expected)


def test_the_bound_penalty_is_positive_exactly_when_violated():
    inside, edge, outside = torch.tensor([0.2, 0.9, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.01])
    assert spectral_penalty(inside) == 0 and spectral_penalty(edge) == 0
    assert spectral_penalty(outside) > 0
    assert spectral_penalty(outside, radius=1.02) == 0
    target = spectral_penalty(torch.tensor([0.3, 1.0]), "target", num_modes=1)
    assert target == 0 and spectral_penalty(torch.tensor([0.3, 0.9]), "target") > 0
    term = make_term("koopman")
    ae = KVAE.build(TINY)
    with torch.no_grad():
        ae.model.generator.copy_(torch.diag(torch.tensor([-0.1, -0.2, -0.01])))
        assert term.spectral(ae) == 0
        ae.model.generator[2, 2] = 0.05
        assert term.spectral(ae) > 0
    with pytest.raises(ValueError, match="mode"):
        make_term("koopman", ("mode=spiral",))


def test_training_with_the_term_pulls_the_spectrum_inside_the_bound():
    torch.manual_seed(0)
    ae = KVAE.build(TINY)
    with torch.no_grad():
        ae.model.generator.copy_(torch.diag(torch.tensor([0.3, 0.2, -0.5])))  # |lambda| = 1.35, 1.22, 0.61
    data = KVAE.example_data(TINY, 24, seed=0)
    before = eigenvalue_moduli(ae.model.generator.detach()).max()
    engine = ENGINES["svi"](epochs=15, batch_size=8, lr=0.05, progress=False, penalty="koopman", penalty_weight=10.0,
                            penalty_options=("eig_weight=10",))
    result = engine.fit(ae, *data)
    after = eigenvalue_moduli(ae.model.generator.detach()).max()
    assert torch.isfinite(result.losses).all() and before > 1.3
    assert after <= 1.01, after  # the quadratic penalty leaves at most a sliver above the bound
    assert make_term("koopman", ("pred_weight=0", "radius=1.01")).spectral(ae) == 0


def test_the_term_refuses_models_without_a_koopman_operator(tiny):
    ae, data = tiny("dmm")
    with pytest.raises(ValueError, match="does not apply"):
        make_term("koopman").check(ae, *data)


# -- scores ------------------------------------------------------------------------------------------------------

SCORE_ARGS = {"hidden_dim": 8, "steps": 150, "batch_size": 64, "lr": 1e-2}


def test_discriminative_score_near_zero_for_the_data_distribution_and_near_half_for_noise():
    real, same = sines(400, seed=0), sines(400, seed=1)
    # Same distribution: held-out accuracy ~ Binomial(n, 1/2) / n with n = 160 test sequences, so
    # |acc - 1/2| <= 3.29 * 0.5 / sqrt(n) fails with probability 0.1%.
    n_test = 2 * round(0.2 * 400)
    assert discriminative_score(real, same, seed=0, **SCORE_ARGS) <= 3.29 * 0.5 / math.sqrt(n_test)
    noise = torch.rand(400, 24, 5, generator=torch.Generator().manual_seed(2))
    assert discriminative_score(real, noise, seed=0, **SCORE_ARGS) >= 0.4


def test_predictive_score_prefers_the_data_distribution_and_checks_shapes():
    real, same = sines(300, seed=0), sines(300, seed=1)
    noise = torch.rand(300, 24, 5, generator=torch.Generator().manual_seed(2))
    good, bad = predictive_score(real, same, **SCORE_ARGS), predictive_score(real, noise, **SCORE_ARGS)
    assert 0 <= good < 0.7 * bad
    one_channel = predictive_score(real[..., :1], same[..., :1], **SCORE_ARGS)
    assert math.isfinite(one_channel)
    with pytest.raises(ValueError, match="share"):
        predictive_score(real, same[..., :3])
    with pytest.raises(ValueError, match="shape"):
        discriminative_score(real[0], same)


# -- data ------------------------------------------------------------------------------------------------------


def test_sines_follow_timegan_and_the_irregular_variant_keeps_the_times():
    x = sines(50, seed=4)
    assert x.shape == (50, 24, 5) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x, sines(50, seed=4))
    data = load("sines", train_size=40, test_size=10)
    assert data.train.shape == (40, 24, 5) and data.train_covariates["mask"].all()
    assert torch.equal(data.train_covariates["t"][0], torch.arange(24.0)) and data.kinds["t"] == "time"
    for drop in (0.3, 0.5, 0.7):
        irregular = load("sines_irregular", train_size=40, test_size=10, drop=drop)
        t = irregular.train_covariates["t"]
        assert irregular.train.shape == (40, 24 - round(drop * 24), 5) and (t.diff(dim=-1) > 0).all()
        idx = t.long()[..., None].expand(-1, -1, 5)
        torch.testing.assert_close(irregular.train, data.train.gather(1, idx))  # the kept steps, unchanged
    assert not torch.equal(drop_steps(x, 0.5, seed=0)[1], drop_steps(x, 0.5, seed=1)[1])
    with pytest.raises(ValueError, match="drop"):
        drop_steps(x, 1.0)


def test_windows_are_chronological_and_standardised_with_train_statistics():
    series = np.arange(100.0) ** 1.5
    train, test = windows(series, T=10, train_fraction=0.8)
    mean, std = series[:80].mean(), series[:80].std()
    assert train.shape == (71, 10, 1) and test.shape == (11, 10, 1)
    torch.testing.assert_close(train[0, :, 0], torch.tensor((series[:10] - mean) / std, dtype=torch.float32))
    torch.testing.assert_close(test[0, 0, 0], torch.tensor((series[80] - mean) / std, dtype=torch.float32))
    with pytest.raises(ValueError, match="too short"):
        windows(series[:30], T=10)


@pytest.mark.parametrize("name", ["sunspots", "co2"])
def test_statsmodels_series_load_offline(name):
    pytest.importorskip("statsmodels")
    data = load(name)
    assert data.train.shape[1:] == (24, 1) and data.test.shape[1:] == (24, 1)
    assert torch.isfinite(data.train).all() and torch.isfinite(data.test).all()
    assert abs(data.train.mean()) < 0.3 and len(data.train) > 3 * len(data.test) > 0
