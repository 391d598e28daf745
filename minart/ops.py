"""The art engine's public operations, one namespace for recipes, tests and benchmarks.

``from minart import ops`` then ``ops.fractal(...)``, ``ops.perona_malik(...)``,
``ops.minimize(...)``, ``ops.blend(...)`` and so on. Each name is defined once in its family
module (:mod:`minart.fractal`, :mod:`minart.diffusion`, :mod:`minart.minimize`,
:mod:`minart.composite`) and re-exported here.
"""

from .composite import *  # noqa: F403
from .composite import __all__ as _composite_all
from .diffusion import *  # noqa: F403
from .diffusion import __all__ as _diffusion_all
from .fractal import *  # noqa: F403
from .fractal import __all__ as _fractal_all
from .minimize import *  # noqa: F403
from .minimize import __all__ as _minimize_all

__all__ = [*_fractal_all, *_diffusion_all, *_minimize_all, *_composite_all]  # noqa: PLE0604
