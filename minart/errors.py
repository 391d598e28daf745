"""Exceptions raised by minart, all subclasses of :class:`MinartError`.

Every error renders as one line an artist can act on::

    recipes/ocean.yaml:14:7: step 'soften': dt=0.4 exceeds the stability bound 0.25 for scheme
    'classic'; use dt <= 0.25 or substep: auto

Library functions raise them with only the message; the recipe layer fills in ``file``, ``line``,
``column`` and ``step`` with :meth:`MinartError.at` as the error passes through it.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "Interrupted",
    "MediaError",
    "MinartError",
    "ParamError",
    "RecipeError",
    "ShapeError",
]


class MinartError(Exception):
    """Base class of every error minart raises on bad input.

    Args:
        message: what is wrong and, where possible, what to do instead.
        file: the recipe or image file the error is about.
        line: 1-based line in ``file``.
        column: 1-based column in ``file``.
        step: the recipe step the error is about.
        param: the parameter the error is about (used by tooling; the message names it too).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        step: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.step = step
        self.param = param

    def at(
        self,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        step: str | None = None,
        param: str | None = None,
    ) -> MinartError:
        """Fill in location fields that are still empty and return ``self`` (for ``raise e.at(...)``)."""
        self.file = self.file or file
        self.line = self.line or line
        self.column = self.column or column
        self.step = self.step or step
        self.param = self.param or param
        return self

    def __str__(self) -> str:
        prefix = ""
        if self.file:
            prefix = self.file
            if self.line:
                prefix += f":{self.line}"
                if self.column:
                    prefix += f":{self.column}"
            prefix += ": "
        if self.step:
            prefix += f"step '{self.step}': "
        return prefix + self.message


class RecipeError(MinartError):
    """A recipe is malformed: YAML syntax, unknown keys or stages, bad references, cycles, paths."""


class ParamError(MinartError, ValueError):
    """A parameter is out of range, of the wrong type, or inconsistent with another one."""


class ShapeError(MinartError, ValueError):
    """A tensor has the wrong number of dimensions, channels, dtype or size for an operation."""


class CacheError(MinartError):
    """A cache entry is unreadable or the cache location is unusable."""


class MediaError(MinartError):
    """An image or video file cannot be read or written (missing, corrupt, too large, bad size)."""


class Interrupted(MinartError):
    """A run was asked to stop (Ctrl-C): the step in progress stopped at its next progress report."""
