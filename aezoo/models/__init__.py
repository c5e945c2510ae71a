"""The zoo: one module per entry; the registry key is the module name.

Each module exports ``Config`` (frozen dataclass), ``build(cfg) -> Autoencoder`` and
``example_data(cfg, n, seed) -> tuple[Tensor, ...]``; its docstring's first line is its
description in ``aezoo list``.
"""

from types import ModuleType

from aezoo.models import linear_gaussian, vae

_MODULES: list[ModuleType] = [linear_gaussian, vae]

MODELS: dict[str, ModuleType] = {m.__name__.rsplit(".", 1)[-1]: m for m in _MODULES}

__all__ = ["MODELS"]
