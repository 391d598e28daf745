"""Progress of long steps: a rich bar on a terminal, silence in CI logs.

Long stages call ``ctx.progress(done, total)``; the engine turns that into
``progress(step, done, total)``. Code that renders (the CLI, a Prefect task) fans such calls out
to the listeners registered here with :func:`listen`, so one stage call can drive both a terminal
bar and a Prefect progress artifact. :class:`TerminalProgress` shows iterations, rate and ETA, and
does nothing when its stream is not a TTY (CI logs stay clean).

Code deep inside a step (a kernel timing its shapes once, a CPU step compiling) says what it is
doing with :func:`note`; the engine sends such notes to the running step's log with
:func:`notes_to`, so a first call that takes seconds is explained where the step is logged.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = ["TerminalProgress", "emit", "listen", "note", "notes_to"]

Listener = Callable[[str, int, int], None]

_NOTE: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "minart_note", default=None)
"""Where :func:`note` sends its text in this thread or task (set by :func:`notes_to`)."""

_LOG = logging.getLogger("minart")

_LISTENERS: list[Listener] = []
_GUARD = threading.Lock()


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[Listener]:
    """Send every :func:`emit` to ``listener`` while the block runs.

    Example:
        >>> seen = []
        >>> with listen(lambda step, done, total: seen.append((step, done, total))):
        ...     emit("soften", 3, 10)
        >>> emit("soften", 4, 10); seen
        [('soften', 3, 10)]
    """
    with _GUARD:
        _LISTENERS.append(listener)
    try:
        yield listener
    finally:
        with _GUARD:
            _LISTENERS.remove(listener)


def emit(step: str, done: int, total: int) -> None:
    """Report that ``step`` has done ``done`` of ``total`` iterations to every listener."""
    with _GUARD:
        listeners = list(_LISTENERS)
    for listener in listeners:
        listener(step, done, total)


@contextlib.contextmanager
def notes_to(receiver: Callable[[str], None]) -> Iterator[None]:
    """Send every :func:`note` made in this context (this thread, this task) to ``receiver``.

    Context-local, not global: steps that run at once in threads each get their own notes.

    Example:
        >>> seen = []
        >>> with notes_to(seen.append):
        ...     note("compiling the CPU seed step")
        >>> seen
        ['compiling the CPU seed step']
    """
    token = _NOTE.set(receiver)
    try:
        yield
    finally:
        _NOTE.reset(token)


def note(text: str) -> None:
    """Say what slow one-off work is being done (to the running step's log, see :func:`notes_to`).

    Outside :func:`notes_to` the text is logged at INFO on the ``minart`` logger.
    """
    receiver = _NOTE.get()
    if receiver is None:
        _LOG.info("%s", text)
    else:
        receiver(text)


class TerminalProgress:
    """A rich progress bar per step (iterations, rate, ETA); a no-op when not on a TTY.

    Args:
        stream: where to draw (default ``sys.stderr``).
        enabled: force on or off (default: whether ``stream`` is a TTY).

    Example:
        >>> import io
        >>> with TerminalProgress(io.StringIO()) as bar:
        ...     bar("soften", 5, 10)
        >>> bar.enabled
        False
    """

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> TerminalProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            task = self._tasks.get(step)
            if task is None:
                task = self._tasks[step] = self._progress.add_task(step, total=total, rate="")
            self._progress.update(task, completed=done, total=total)
            speed = next((t.speed for t in self._progress.tasks if t.id == task), None)
            self._progress.update(task, rate=f"{speed:.1f} it/s" if speed else "")
