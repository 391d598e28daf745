"""minart: generative art from fractals, Perona-Malik diffusion and learned-kernel minimization.

The library is pure PyTorch and never imports Prefect; ``minart.flows`` and ``minart.tasks``
(the repository's ``flows/`` and ``tasks/`` folders) wrap it for orchestration.
"""

from . import errors, ops, recipe, registry, stages
from .errors import CacheError, MediaError, MinartError, ParamError, RecipeError, ShapeError
from .recipe import Recipe, load_recipe, parse_recipe
from .registry import get_stage

__version__ = "0.1.0"

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
