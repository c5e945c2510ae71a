"""Prior selection for Bayesian autoencoders: the DSW estimate and ``select_prior`` (Tran et al. 2021).

Tolerances come from the Monte Carlo error measured in the test itself: the DSW between two
samples of one distribution is not 0 but of order ``n^(-1/2)`` (one-dimensional Wasserstein
distances between two empirical measures, maximised over directions), and shrinks as ``n`` grows;
a shift must stand out of that null spread.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from aezoo.inference.penalties import sliced_wasserstein
from aezoo.inference.prior_selection import PriorSelection, diversity, dsw, prior_objective, select_prior
from aezoo.models import bayesian_ae

D = 5


@pytest.fixture(autouse=True)
def _local_params():
    with pyro.settings.context(module_local_params=True):
        yield


def _null(n: int, reps: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([dsw(torch.randn(n, D, generator=g), torch.randn(n, D, generator=g),
                            num_projections=50, steps=30, seed=i) for i in range(reps)])


def test_dsw_is_small_between_samples_of_one_distribution_and_shrinks_with_n():
    small, large = _null(250), _null(1000)
    # finite-sample value ~ c / sqrt(n): 4x the data should about halve it (allow 0.7 for MC error)
    assert large.mean() < 0.7 * small.mean()
    assert large.mean() < 2 * math.sqrt(D / 1000)


def test_dsw_grows_with_a_shift_and_lies_between_sliced_and_max_sliced():
    n = 500
    null = _null(n, seed=1)
    threshold = null.mean() + 4 * null.std()
    g = torch.Generator().manual_seed(2)
    values = []
    for shift in (0.5, 1.0, 2.0):
        x, y = torch.randn(n, D, generator=g), torch.randn(n, D, generator=g)
        y[:, 0] += shift
        value = dsw(x, y, num_projections=50, steps=50)
        sw = sliced_wasserstein(x, y, num_projections=2000).sqrt()  # uniform slicing: about shift / sqrt(D)
        assert value > threshold
        assert value > sw  # the learned slicing finds the informative direction
        assert value < shift + threshold  # max-sliced (the best single direction) is about the shift
        values.append(float(value))
    assert values[0] < values[1] < values[2]


def test_diversity_of_orthonormal_and_repeated_directions():
    assert diversity(torch.eye(4)) == pytest.approx(0.25)  # only the diagonal: 4 of 16 pairs
    assert diversity(torch.ones(3, 1).expand(3, 2) / math.sqrt(2)) == pytest.approx(1.0)


def _prior_predictive(cfg: bayesian_ae.Config, groups: int = 100, per_group: int = 5) -> torch.Tensor:
    """example_data-style draws, a new network from the prior for every group of points."""
    return torch.cat([bayesian_ae.example_data(cfg, per_group, seed=g)[0] for g in range(groups)])


@pytest.mark.parametrize("start_factor", [0.2, 5.0])
def test_select_prior_recovers_the_scale_that_generated_the_data(start_factor):
    true = 1.0
    kw = dict(x_dim=16, z_dim=2, hidden_dims=(20,), likelihood="gaussian")
    x = _prior_predictive(bayesian_ae.Config(**kw, prior_scale=true))
    ae = bayesian_ae.build(bayesian_ae.Config(**kw, prior_scale=0.3))  # the configured scale is irrelevant
    result = select_prior(ae, x, num_steps=80, init_scale=true * start_factor, batch_size=200,
                          num_weight_draws=8, num_projections=50)
    assert isinstance(result, PriorSelection)
    assert true / 1.5 < result.prior_scale < true * 1.5
    summary = result.to_dict()
    assert summary["dsw_last"] < 0.7 * summary["dsw_first"]  # the curve decreases
    assert len(summary["curve"]) == len(summary["scales"]) == 80
    assert result.config(ae.config).prior_scale == result.prior_scale
    at = prior_objective(ae, x[:300], [result.prior_scale, 4 * true], steps=40, num_weight_draws=8)
    assert at[0] < at[1]  # better than a far-off scale


def test_select_prior_rejects_a_sample_output_for_bernoulli():
    ae = bayesian_ae.build(bayesian_ae.Config(x_dim=4, z_dim=1, hidden_dims=(3,)))
    with pytest.raises(ValueError, match="reparameterisable"):
        select_prior(ae, torch.ones(10, 4), num_steps=1, output="sample")
    result = select_prior(ae, torch.ones(10, 4), num_steps=2, num_weight_draws=2, slice_warmup=1)
    assert result.settings["output"] == "relaxed" and result.prior_scale > 0
