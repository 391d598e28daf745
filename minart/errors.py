"""Exceptions raised by minart, all subclasses of :class:`MinartError`.

Every error renders as one line an artist can act on::

    recipes/ocean.yaml:14:7: step 'soften': dt=0.4 exceeds the stability bound 0.25 for scheme
    'classic'; use dt <= 0.25 or substep: auto

Library functions raise them with only the message; the recipe layer fills in ``file``, ``line``,
``column`` and ``step`` with :meth:`MinartError.at` as the error passes through it.

Exit status of the ``minart`` command: ``2`` (:data:`EXIT_INVALID`) for what the artist or
operator can fix in the recipe or the arguments, ``1`` (:data:`EXIT_FAILED`) for a failure of
the machine while a run works (a full or read-only disk, a cache that cannot be written or
evicted): :attr:`MinartError.exit_status`, and :func:`is_io_failure` to classify an error raised
while steps ran.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "CacheError",
    "Interrupted",
    "MediaError",
    "MinartError",
    "ParamError",
    "RecipeError",
    "ShapeError",
    "is_io_failure",
]

EXIT_INVALID = 2
"""Exit status for a recipe, parameter or argument that does not validate (fix it and rerun)."""

EXIT_FAILED = 1
"""Exit status for other failures: the machine's files or services failed while a run worked."""


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

    exit_status: int = EXIT_INVALID
    """Exit status of the ``minart`` command this error stops: :data:`EXIT_INVALID` unless the
    raiser (or :func:`is_io_failure`'s caller) set :data:`EXIT_FAILED` on the instance."""

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

    def __repr__(self) -> str:
        """The whole one-line message, location included (Prefect logs a failed run's error with
        ``%r``: ``RecipeError('recipes/x.yaml: no such recipe file')``).

        Example:
            >>> RecipeError("no such recipe file", file="x.yaml")
            RecipeError('x.yaml: no such recipe file')
        """
        return f"{type(self).__name__}({str(self)!r})"


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


def is_io_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised while a run's steps worked, is a failure of the machine's files
    rather than of the recipe or its parameters.

    True for an ``OSError``, a :class:`CacheError` (the recipe's own cache problems are found
    before any step runs), and a :class:`MediaError` raised from an ``OSError`` that carries an
    errno (a full or read-only disk, a permission, a lost mount); false for an input image that
    cannot be decoded (Pillow's own errors carry no errno) and for every other error.

    Example:
        >>> import errno
        >>> try:
        ...     try:
        ...         raise OSError(errno.ENOSPC, "No space left on device")
        ...     except OSError:
        ...         raise MediaError("cannot write the image", file="a.png") from None
        ... except MediaError as exc:
        ...     is_io_failure(exc), is_io_failure(MediaError("not a readable image"))
        (True, False)
    """
    if isinstance(exc, (OSError, CacheError)):
        return True
    if isinstance(exc, MediaError):
        cause = exc.__cause__ or exc.__context__
        return isinstance(cause, OSError) and cause.errno is not None
    return False
