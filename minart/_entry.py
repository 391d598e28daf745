"""The ``minart`` script's entry point: start-up that answers Ctrl-C in one line.

Loading the command line takes a second or two (torch, pydantic, typer). A Ctrl-C in that time
used to end in a Python traceback, before :func:`minart.cli.main` could catch it. This module
imports nothing heavy itself: it loads :mod:`minart.cli` inside the ``try`` and hands over.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130
"""Exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it); also
:data:`minart.cli.EXIT_INTERRUPTED`."""


def main(argv: list[str] | None = None) -> int:
    """Load :mod:`minart.cli` and run its :func:`~minart.cli.main`.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The command's exit status; 130 when Ctrl-C stops the start-up.
    """
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
