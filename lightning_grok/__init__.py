"""lightning_grok: grokking in ridge regression and networks (arXiv:2601.19791) on PyTorch Lightning.

``lightning_grok.GrokkingPhases`` is the public callback that finds t1 and t2 in any LightningModule's logged
metrics (``callbacks/grokking_phases.py``). It is imported on first use, so ``import lightning_grok`` stays cheap
(no torch, no Lightning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GrokkingPhases", "__version__"]

if TYPE_CHECKING:
    from lightning_grok.callbacks.grokking_phases import GrokkingPhases


def __getattr__(name: str) -> Any:
    if name == "GrokkingPhases":
        from lightning_grok.callbacks.grokking_phases import GrokkingPhases

        return GrokkingPhases
    raise AttributeError(f"module 'lightning_grok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
