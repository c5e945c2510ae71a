"""Inference engines and objectives; the registry key is the engine's module name."""

from types import ModuleType

from aezoo.inference import hmc, iwae, nuts, rws, sghmc, svi
from aezoo.inference.loop import GradientEngine

_MODULES: list[ModuleType] = [svi, iwae, rws, hmc, nuts, sghmc]

ENGINES: dict[str, type] = {m.__name__.rsplit(".", 1)[-1]: m.ENGINE for m in _MODULES}

__all__ = ["ENGINES", "GradientEngine"]
