"""Mixed precision for an autoencoder's networks, with every likelihood and KL kept in full precision.

With ``amp`` the matrix-multiplying layers (``nn.Linear``, convolutions, recurrent layers) run under
``torch.autocast`` [1] and their outputs are cast back to the dtype of their weights (float32, or
float64 for a double model) at once, so the distributions, log-densities, KL terms, GP kernels and
the objective are all computed in full precision from full-precision parameters: only the networks'
matrix products are low precision. The low dtype is bfloat16 on CPUs and on GPUs that support it
(same exponent range as float32: no loss scaling needed) and float16 elsewhere, where the gradient
engines scale the loss with ``torch.amp.GradScaler`` [2].

References:
    1. Mixed Precision Training, Micikevicius et al., arXiv:1710.03740.
    2. torch.amp, https://pytorch.org/docs/stable/amp.html.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase)
"""The layer types run under autocast."""


def low_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CPU and on GPUs that support it, else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` when ``amp`` computes in float16 (loss scaling against underflow); None otherwise."""
    if amp and low_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def _cast(out: Any, dtype: torch.dtype) -> Any:
    if isinstance(out, torch.Tensor):
        return out.to(dtype) if out.is_floating_point() and out.dtype != dtype else out
    if isinstance(out, tuple):
        return tuple(_cast(o, dtype) for o in out)
    return out


@contextmanager
def networks_autocast(ae: nn.Module, device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Within the block, ``ae``'s :data:`LAYERS` compute under autocast and return full-precision outputs.

    Args:
        ae: the module whose layers are hooked (hooks are removed on exit).
        device: decides the autocast device type and the low dtype (:func:`low_dtype`).
        enabled: False: a no-op.
    """
    if not enabled:
        yield
        return
    dtype, stack, handles = low_dtype(device), [], []

    def enter(module: nn.Module, args: tuple) -> None:
        ctx = torch.autocast(device.type, dtype=dtype)
        ctx.__enter__()
        stack.append(ctx)

    def leave(module: nn.Module, args: tuple, out: Any) -> Any:
        stack.pop().__exit__(None, None, None)
        weight = next(module.parameters(), None)
        return _cast(out, weight.dtype if weight is not None else torch.float32)

    for module in ae.modules():
        if isinstance(module, LAYERS):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        while stack:  # a layer that raised left its autocast entered
            stack.pop().__exit__(None, None, None)
