"""The ``minart`` script's entry point: start-up that answers Ctrl-C in one line.

Loading the command line takes a second or two (torch, pydantic, typer). A Ctrl-C in that time
used to end in a Python traceback, before :func:`minart.cli.main` could catch it. This module
imports nothing heavy itself: it loads :mod:`minart.cli` inside the ``try`` and hands over.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading
from typing import Any

EXIT_INTERRUPTED = 130
"""Exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it); also
:data:`minart.cli.EXIT_INTERRUPTED`."""

_interrupts: list[int] = []


def _on_sigint(signum: int, frame: object) -> None:
    """Python's own Ctrl-C handler (raise :class:`KeyboardInterrupt`), remembering that it ran.

    A library can swallow the exception with a broad ``except`` (torch's start-up did, before
    :class:`_HoldInterruptsDuringTorch`), and the command then goes on as if nothing had
    happened, or fails later on a half-imported module. :func:`interrupted` still knows.
    """
    _interrupts.append(signum)
    raise KeyboardInterrupt


class _HoldInterruptsDuringTorch:
    """Import hook: ``import torch`` runs with SIGINT held back (``pthread_sigmask``), and a
    Ctrl-C in that time is delivered as it ends, as a KeyboardInterrupt from the ``import``.

    Raised inside torch's start-up, a KeyboardInterrupt is swallowed by a broad ``except``, or
    thrown through pybind11 code that cannot pass it on, which aborts the process ("terminate
    called after throwing an instance of 'pybind11::error_already_set'"). Only the ``minart``
    script installs the hook (:func:`main`), for its first import of torch; the loader it wraps is
    put back on the module when the import ends.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "torch":
            return None
        _unhook(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HeldLoader(spec.loader)
        return spec


class _HeldLoader:
    """The loader of :class:`_HoldInterruptsDuringTorch`: the real one, with SIGINT held back."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held Ctrl-C arrives here


def _unhook(hook: object) -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(hook)


def interrupted() -> bool:
    """Whether Ctrl-C reached this process since :func:`main` started it."""
    return bool(_interrupts)


def main(argv: list[str] | None = None) -> int:
    """Load :mod:`minart.cli` and run its :func:`~minart.cli.main`.

    Ctrl-C raises :class:`KeyboardInterrupt` as usual, and is also remembered (:func:`interrupted`),
    where Python's own handler is in place (not where SIGINT is ignored, as in a background job).

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The command's exit status; 130 when Ctrl-C stops the start-up.
    """
    _interrupts.clear()
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    hook = None
    if ours:
        signal.signal(signal.SIGINT, _on_sigint)
        if hasattr(signal, "pthread_sigmask") and "torch" not in sys.modules:
            hook = _HoldInterruptsDuringTorch()
            sys.meta_path.insert(0, hook)
    try:
        try:
            from .cli import main as cli_main
        except KeyboardInterrupt:
            _interrupts.append(signal.SIGINT)
        if interrupted():
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return cli_main(argv)
    finally:  # (a caller in the same process, a test, gets Python's handler back)
        if hook is not None:
            _unhook(hook)
        if ours and signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
