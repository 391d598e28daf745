"""minart: generative art from fractals, Perona-Malik diffusion and learned-kernel minimization.

The library is pure PyTorch and never imports Prefect; ``minart.flows`` and ``minart.tasks``
(the repository's ``flows/`` and ``tasks/`` folders) wrap it for orchestration.

``import minart`` itself is light: the names below load their module (and torch) on first use,
so the ``minart`` script can answer Ctrl-C during its start-up in one line (:mod:`minart._entry`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_MODULES = ("errors", "ops", "recipe", "registry", "stages")
_NAMES = {
    "CacheError": "errors",
    "MediaError": "errors",
    "MinartError": "errors",
    "ParamError": "errors",
    "RecipeError": "errors",
    "ShapeError": "errors",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "parse_recipe": "recipe",
    "get_stage": "registry",
}

__all__ = [
    "CacheError",
    "MediaError",
    "MinartError",
    "ParamError",
    "Recipe",
    "RecipeError",
    "ShapeError",
    "__version__",
    "errors",
    "get_stage",
    "load_recipe",
    "ops",
    "parse_recipe",
    "recipe",
    "registry",
    "stages",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from . import errors, ops, recipe, registry, stages
    from .errors import CacheError, MediaError, MinartError, ParamError, RecipeError, ShapeError
    from .recipe import Recipe, load_recipe, parse_recipe
    from .registry import get_stage


def __getattr__(name: str) -> Any:
    """Load ``minart.<module>`` or one of its public names on first use (PEP 562)."""
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
