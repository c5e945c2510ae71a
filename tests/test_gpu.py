"""GPU readiness: the deferred (no host sync) step, mixed precision, and CUDA-only checks (marked ``gpu``).

The deferred mode is what the loop runs on CUDA; here it is forced on the CPU (fused CPU optimisers take the
same ``found_inf`` flag), so its guarantees are tested on every machine.
"""

from __future__ import annotations

import math

import pytest
import torch

from aezoo.core import load_checkpoint
from aezoo.inference import ENGINES, amp, loop
from aezoo.inference.loop import Diverged
from aezoo.models import MODELS


def _vae(dtype=torch.float64, n=24):
    module = MODELS["vae"]
    cfg = module.Config(x_dim=6, z_dim=2, hidden_dims=(5,))
    torch.manual_seed(0)
    ae = module.build(cfg).to(dtype)
    return ae, module.example_data(cfg, n, seed=1)[0].to(dtype)


def _svi(**fields):
    return ENGINES["svi"](**{"epochs": 3, "batch_size": 8, "lr": 3e-2, "progress": False, **fields})


@pytest.fixture
def deferred(monkeypatch):
    monkeypatch.setattr(loop, "_defers", lambda device: True)


def test_deferred_steps_train_as_eager_ones(deferred):
    ae, x = _vae()
    fit = _svi().fit(ae, x)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(loop, "_defers", lambda device: False)
        ref_ae, x = _vae()
        ref = _svi().fit(ref_ae, x)
    # same draws, same Adam: fused and for-each kernels differ only in float64 rounding
    torch.testing.assert_close(fit.losses, ref.losses, rtol=1e-9, atol=1e-9)
    for name, value in ref_ae.state_dict().items():
        torch.testing.assert_close(ae.state_dict()[name], value, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_deferred_never_applies_a_bad_step(deferred, tmp_path, poison):
    seen, before = [], {}

    class Faulty(type(_svi())):
        def loss(self, ae, *batch, num_data):
            value = super().loss(ae, *batch, num_data=num_data)
            if not torch.is_grad_enabled():
                return value
            seen.append(1)
            if len(seen) == 5:  # epoch 2, step 2 (3 steps per epoch)
                before.update({k: v.clone() for k, v in ae.state_dict().items()})
                bad = torch.tensor(math.nan, dtype=value.dtype)
                if poison == "loss":
                    return value + bad
                p = next(ae.parameters())
                return value + (p.sum() * 0.0).sqrt()  # adds 0 to the loss; its gradient is 0 * inf = NaN
            return value

    ae, x = _vae()
    with pytest.raises(Diverged, match="the loss became nan in epoch 2" if poison == "loss" else
                       "a gradient became NaN or infinite in epoch 2"):
        Faulty(**{"epochs": 3, "batch_size": 8, "lr": 3e-2, "progress": False}).fit(
            ae, x, checkpoint=tmp_path / "c.pt")
    assert len(seen) == 6  # the epoch ran to its end (no read per step), then the flag stopped the fit
    for name, value in before.items():  # neither the bad step nor the one after it moved anything
        assert torch.equal(ae.state_dict()[name], value), name
    assert len(load_checkpoint(tmp_path / "c.pt")["losses"]) == 1  # the last good epoch


def test_deferred_divergence_bound(deferred):
    class Growing(type(_svi())):
        def loss(self, ae, *batch, num_data):
            value = super().loss(ae, *batch, num_data=num_data)
            return value * 1e4 if torch.is_grad_enabled() else value

    ae, x = _vae()
    with pytest.raises(Diverged, match="divergence_factor"):
        Growing(epochs=2, batch_size=8, progress=False).fit(ae, x)


def test_amp_runs_layers_in_bfloat16_and_returns_full_precision():
    ae, x = _vae(torch.float32)
    dtypes = []
    layer = next(m for m in ae.modules() if isinstance(m, torch.nn.Linear))
    layer.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))  # inside the autocast hooks
    with amp.networks_autocast(ae, torch.device("cpu")):
        loss = _svi().loss(ae, x, num_data=len(x))
        out = layer(x.new_zeros(2, layer.in_features))
    assert dtypes and set(dtypes) == {torch.bfloat16} and out.dtype == torch.float32
    assert loss.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    assert all(len(m._forward_hooks) == (1 if m is layer else 0) for m in ae.modules())  # hooks removed


def test_amp_fit_matches_full_precision():
    ae, x = _vae(torch.float32, n=64)
    half = _svi(amp=True, epochs=5).fit(ae, x)
    ref_ae, x = _vae(torch.float32, n=64)
    full = _svi(epochs=5).fit(ref_ae, x)
    assert torch.isfinite(half.losses).all() and half.losses[-1] < half.losses[0]
    # bfloat16 keeps 8 bits of mantissa (relative error 2^-9 per product): the per-datum loss (~4 nats) moves
    # by ~1e-2 at most; 0.1 nats is a deterministic bound, not a statistical one
    assert (half.losses - full.losses).abs().max() < 0.1, (half.losses, full.losses)


def test_amp_leaves_double_models_alone():
    ae, x = _vae(torch.float64)
    with amp.networks_autocast(ae, torch.device("cpu")):
        assert _svi().loss(ae, x, num_data=len(x)).dtype == torch.float64


@pytest.mark.gpu
def test_cuda_fit_reads_nothing_back_per_step():
    ae, x = _vae(torch.float32, n=64)
    ae = ae.cuda()
    calls = []
    real = torch.Tensor.item

    def item(self):
        calls.append(self.device.type)
        return real(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch.Tensor, "item", item)
        fit = _svi(epochs=2).fit(ae, x)  # x on the CPU: copied once through pinned memory
    steps = 2 * math.ceil(64 / 8)
    assert torch.isfinite(fit.losses).all()
    assert calls.count("cuda") < steps, calls  # warm-up and per-epoch checks only, not one per step


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_amp_fit(monkeypatch, fp16):
    if fp16:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # GradScaler path
    ae, x = _vae(torch.float32, n=64)
    fit = _svi(amp=True, epochs=3).fit(ae.cuda(), x.cuda())
    assert torch.isfinite(fit.losses).all() and fit.losses[-1] < fit.losses[0]


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's hook sees the poisoned loss's gradient
def test_float16_loss_scaling_trains_and_skips_a_bad_step(deferred, monkeypatch):
    monkeypatch.setattr(amp, "low_dtype", lambda device: torch.float16)  # the GradScaler path, here on the CPU
    seen, before = [], {}

    class Faulty(type(_svi())):
        def loss(self, ae, *batch, num_data):
            value = super().loss(ae, *batch, num_data=num_data)
            if torch.is_grad_enabled():
                seen.append(1)
                if len(seen) == 7:
                    before.update({k: v.clone() for k, v in ae.state_dict().items()})
                    return value * math.nan
            return value

    ae, x = _vae(torch.float32)
    with pytest.raises(Diverged, match="the loss became nan in epoch 3"):
        Faulty(epochs=3, batch_size=8, lr=3e-2, progress=False, amp=True).fit(ae, x)
    for name, value in before.items():
        assert torch.equal(ae.state_dict()[name], value), name
