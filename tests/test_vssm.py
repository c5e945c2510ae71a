"""The VSSM: parallel scan == sequential loop, prefix-conditioned generation, and the ``mnist_rows`` data."""

from __future__ import annotations

import pytest
import torch

from aezoo.models import vssm
from aezoo.nn import LinearRecurrence, linear_scan


def random_vssm(seed: int = 0, **cfg) -> torch.nn.Module:
    """A float64 VSSM with random weights and recurrences from fast (0.5) to very slow (0.999) decay."""
    torch.manual_seed(seed)
    ae = vssm.build(vssm.Config(**cfg)).double()
    with torch.no_grad():
        for name, p in ae.named_parameters():
            if name.endswith("nu_log"):
                p.copy_((-(0.5 + 0.499 * torch.rand_like(p)).log()).log())
            else:
                p.normal_(0, 0.3)
    return ae


@pytest.mark.parametrize("T", [1, 2, 7, 64, 500])
def test_linear_scan_equals_the_recurrence(T):
    g = torch.Generator().manual_seed(T)
    lam = 0.5 + 0.499 * torch.rand(5, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    h, expected = h0, []
    for t in range(T):  # the definition, written out independently of the module
        h = lam * h + b[..., t, :]
        expected.append(h)
    for chunk in (1, 7, 32, 1000):  # one chunk per step, uneven chunks, the default, one chunk for all
        torch.testing.assert_close(linear_scan(lam, b, h0, chunk=chunk), torch.stack(expected, -2), rtol=0, atol=1e-6)
    torch.testing.assert_close(linear_scan(lam, b), linear_scan(lam, b, torch.zeros_like(h0)), rtol=0, atol=0)


@pytest.mark.parametrize("T", [1, 37, 500])
def test_parallel_decode_equals_sequential_decode(T):
    ae = random_vssm(T)
    z = torch.randn(3, T, ae.model.cfg.z_dim, dtype=torch.float64)
    with torch.no_grad():
        fast = ae.model.x_dist(z, parallel=True).base_dist.logits
        slow = ae.model.x_dist(z, parallel=False).base_dist.logits
        assert fast.abs().max() > 1  # not a degenerate, near-constant decoder
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
        x = torch.bernoulli(torch.full((3, T, ae.model.cfg.x_dim), 0.5, dtype=torch.float64))
        q_fast, q_slow = ae.guide.posterior(x, parallel=True), ae.guide.posterior(x, parallel=False)
        torch.testing.assert_close(q_fast.mean, q_slow.mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(q_fast.variance, q_slow.variance, rtol=0, atol=1e-6)
        torch.manual_seed(1)
        gen_fast = vssm.generate(ae, 3, T, prefix=x[:, : (T + 1) // 2], sample=False)
        torch.manual_seed(1)
        gen_slow = vssm.generate(ae, 3, T, prefix=x[:, : (T + 1) // 2], parallel=False, sample=False)
    torch.testing.assert_close(gen_fast, gen_slow, rtol=0, atol=1e-6)


def test_recurrence_matches_its_loop_from_a_state():
    torch.manual_seed(0)
    rec = LinearRecurrence(4, 6, r_min=0.9, r_max=0.999).double()
    u, h0 = torch.randn(2, 300, 4, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rec(u, h0), rec(u, h0, parallel=False), rtol=0, atol=1e-6)
        # resuming from the last state continues the sequence exactly (generation can be resumed [1])
        whole = rec(u, h0)
        torch.testing.assert_close(rec(u[:, 200:], whole[:, 199]), whole[:, 200:], rtol=0, atol=1e-9)


def test_prefix_generation_reconstructs_the_prefix_and_conditions_the_rest():
    ae = random_vssm(3)
    P, D_x = 6, ae.model.cfg.x_dim
    g = torch.Generator().manual_seed(0)
    prefix = torch.bernoulli(torch.full((4, P, D_x), 0.5, dtype=torch.float64), generator=g)
    with torch.no_grad():
        torch.manual_seed(7)
        recon = ae.model.x_dist(ae.guide.posterior(prefix).sample()).mean  # the prefix's own reconstruction
        for T, parallel in [(P, True), (20, True), (50, False)]:
            torch.manual_seed(7)
            out = vssm.generate(ae, 4, T, prefix=prefix, parallel=parallel, sample=False)
            assert out.shape == (4, T, D_x)
            # causality: the first P outputs are the reconstruction, whatever T and the prior latents after P
            torch.testing.assert_close(out[:, :P], recon, rtol=0, atol=1e-10)
        # the continuation carries the prefix's decoder state: another prefix, same latents after P, other outputs
        torch.manual_seed(7)
        a = vssm.generate(ae, 4, 20, prefix=prefix, sample=False)
        torch.manual_seed(7)
        b = vssm.generate(ae, 4, 20, prefix=1 - prefix, sample=False)
    assert (a[:, P] - b[:, P]).abs().max() > 1e-3
    # one (P, D_x) prefix is shared by all n sequences
    with torch.no_grad():
        shared = vssm.generate(ae, 3, 10, prefix=prefix[0])
    assert shared.shape == (3, 10, D_x) and set(shared.unique().tolist()) <= {0.0, 1.0}


def test_bad_input_is_a_clear_error():
    ae = random_vssm(0)
    with pytest.raises(ValueError, match="prefix must be"):
        vssm.generate(ae, 2, 5, prefix=torch.zeros(2, 6, 28))  # longer than T
    with pytest.raises(ValueError, match="prefix must be"):
        vssm.generate(ae, 2, 5, prefix=torch.zeros(3, 2, 28))  # n does not match
    with pytest.raises(ValueError, match="n and T"):
        vssm.generate(ae, 0, 5)
    with pytest.raises(ValueError, match="expected inputs of shape"):
        LinearRecurrence(3, 4)(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="r_min"):
        LinearRecurrence(3, 4, r_min=0.9, r_max=1.0)
    with pytest.raises(ValueError, match="likelihood"):
        vssm.Config(likelihood="poisson")


def test_mnist_rows_are_the_images_rows(monkeypatch):
    from aezoo.data import DATASETS, base, images, pixel_rows

    try:
        base.mnist_path()
    except FileNotFoundError:
        pytest.skip("MNIST file not installed")
    arrays = images.mnist_arrays()  # read once; the loader below reuses them
    monkeypatch.setattr(pixel_rows, "mnist_arrays", lambda: arrays)
    assert DATASETS["mnist_rows"].layout == "sequences"
    data = pixel_rows.mnist_rows("none", train_size=7, test_size=5)
    assert data.train.shape == (7, 28, 28) and data.test.shape == (5, 28, 28) and data.layout == "sequences"
    # time step t is image row t: pixels 28 t .. 28 t + 27 of the flat image
    torch.testing.assert_close(data.train[3, 10], torch.as_tensor(arrays[0][3, 280:308]))
    torch.testing.assert_close(data.test_labels, torch.as_tensor(arrays[3][:5]).long())
    static = pixel_rows.mnist_rows("static", train_size=7, test_size=5)
    assert set(static.train.unique().tolist()) <= {0.0, 1.0}


def test_a_fitted_vssm_continues_the_prefix_it_is_given():
    """Two patterns, each one row repeated over T = 10 steps; the prefix's 3 rows fix which one follows.

    The prior latents after the prefix carry no information, so the continuation can only follow the
    prefix through the decoder's recurrent state. Over n = 400 generated sequences the mean of a
    pixel has standard error <= 0.5 / sqrt(400) = 0.025, so the gap between the pattern's on and off
    pixels (about 0.4 and 0.7 in a seeded run) has error <= 0.035; the threshold 0.2 is > 5 standard
    errors below the smaller gap (failure rate from Monte Carlo error well below 1e-6; training is seeded).
    """
    from aezoo.inference import ENGINES

    torch.manual_seed(0)
    on = torch.tensor([1.0, 1, 1, 0, 0, 0])
    labels = torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(0))
    x = torch.where(labels[:, None, None] == 0, on, 1 - on).expand(200, 10, 6).clone()
    ae = vssm.build(vssm.Config(x_dim=6, z_dim=2, hidden_dim=16, state_dim=16, num_layers=1))
    ENGINES["svi"](epochs=30, batch_size=50, lr=1e-2, seed=0).fit(ae, x)
    torch.manual_seed(1)
    for pattern in (on, 1 - on):
        rest = vssm.generate(ae, 400, 10, prefix=pattern.expand(3, 6), sample=False)[:, 3:]  # (400, 7, 6)
        gap = rest[..., pattern == 1].mean() - rest[..., pattern == 0].mean()
        assert gap > 0.2, f"the continuation does not follow the prefix {pattern.tolist()}: gap {gap:.3f}"
