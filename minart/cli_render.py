"""The render commands of the ``minart`` CLI: ``run``, ``reproduce``, ``cache ls|gc|clear``,
``server``. They register on :data:`minart.cli.app` when :mod:`minart.cli` is imported.

Prefect (and the flow in ``flows/render.py``) is imported inside the commands, so
``import minart.cli`` stays free of Prefect; recipes are validated before Prefect starts, so a
typo costs no server start-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli import SetOption, app, on_interrupt
from .errors import EXIT_FAILED, MinartError, ParamError, is_io_failure

__all__ = ["cache_app"]


# -- running (Prefect is imported inside the commands, so `import minart.cli` stays light) -------


def _quiet_prefect() -> None:
    """No telemetry, no prompts: set before Prefect is imported (explicit settings win)."""
    from minart.flows.server import QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def _exit_status() -> Iterator[None]:
    """Exit 1 with one line for a bare ``OSError`` (a failure of the machine).

    :class:`MinartError` passes through: :func:`minart.cli.main` prints it and exits with its
    ``exit_status`` (1 when :func:`minart.errors.is_io_failure` classified it, else 2).
    """
    try:
        yield
    except OSError as exc:
        from .engine import error_line

        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}" if exc.strerror else error_line(exc)
        typer.echo(f"error: {text}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def _one_line(exc: BaseException) -> str:
    """A multi-line error (a server's exit with its log's tail) as its first and last lines."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0].rstrip(":") + (f": ... {lines[-1]}" if len(lines) > 1 else "")


def _render(recipe: Path, overrides: list[str], *, preview: bool | int,
            output_dir: Path | None, device: str | None, cache: str | None,
            report: Path | None, origin: str | None = None) -> None:
    import time

    from . import engine

    # validate (and plan) before Prefect starts: recipe errors cost no server start-up
    planned = engine.load_plan(recipe, overrides, preview=preview, device=device,
                               output_dir=output_dir, origin=origin)
    day = time.strftime("%Y-%m-%d", time.gmtime())  # the flow expands {date} with its own
    engine.check_run_paths(
        planned, report=None if report is None else engine.report_path(report, day,
                                                                        option="--report"),
        check_output_dir=output_dir is not None, report_option="--report",
        output_dir_option="--output-dir")
    _open_cache(cache, create=True)
    on_interrupt("interrupted: finished steps are cached and a long step keeps its last "
                 "checkpoint; run the same command again to resume")
    _quiet_prefect()
    # the run is tagged for the zombie automation, which takes 90 s of silence for a death:
    # beat every 30 s as deployment runs do (Prefect's default is 180 s)
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = "30"
    from minart.flows.render import render_here  # imports Prefect

    with _prefect_api() as server, _stop_on_interrupt(server):
        try:
            result = render_here(str(recipe), overrides=engine.overrides_dict(overrides),
                                 preview=preview, device=device, cache=cache,
                                 report=None if report is None else str(report),
                                 output_dir=None if output_dir is None else str(output_dir),
                                 origin=origin)
        except MinartError as exc:  # raised while steps ran: the recipe's own errors stay 2
            if is_io_failure(exc):
                exc.exit_status = EXIT_FAILED
            raise
    _print_run(result)


def _open_cache(location: str | None, *, create: bool) -> Any:
    """The run's :class:`~minart.cache.TensorCache`, its location checked before any work.

    Errors name where the location came from: ``--cache``, ``$MINART_CACHE`` or the default.
    A missing default folder is no error for listing (nothing was cached yet).
    """
    from .cache import TensorCache
    from .errors import CacheError

    store = TensorCache(location)
    if location is not None:
        origin = f"--cache {store.location}"
    elif os.environ.get("MINART_CACHE"):
        origin = f"MINART_CACHE={store.location}"
    else:
        origin = f"cache folder {store.location}"
        if not create and not os.path.lexists(store.root):
            return store
    try:
        store.check_location(create=create)
    except CacheError as exc:
        exc.file = origin
        raise
    return store


@contextlib.contextmanager
def _prefect_api() -> Iterator[Any]:
    """The Prefect server of the run: ``$PREFECT_API_URL``'s, else a temporary one of minart's.

    Prefect's own temporary server is a child in the CLI's process group, so the Ctrl-C a
    terminal sends to the group killed it too, and the interrupted flow then spent minutes
    retrying a dead API before it failed with tracebacks. This one runs in its own session
    (Ctrl-C does not reach it), dies with this process even on ``kill -9`` (Linux), and is
    stopped when the run ends. Yields its :class:`~minart.flows.server.ServerHandle`, or
    ``None`` when ``PREFECT_API_URL`` is set.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        _check_server_answers(PREFECT_API_URL.value())
        yield None
        return
    import tempfile

    from minart.flows.server import start_server

    sys.stderr.write("starting a temporary Prefect server for this run (7-20 s; 'minart server' "
                     "starts one to share between runs)\n")
    with tempfile.TemporaryDirectory(prefix="minart-server-") as folder:
        try:
            handle = start_server(log=Path(folder) / "server.log", ui=False,
                                  zombie_seconds=None, detach=True, die_with_parent=True,
                                  timeout=120)
        except RuntimeError as exc:  # PREFECT_HOME a file, a bad setting, no health in 120 s
            typer.echo(f"error: cannot start a temporary Prefect server for the run: "
                       f"{_one_line(exc)}; fix that, or start one with 'minart server' and "
                       "export its PREFECT_API_URL", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        try:
            with temporary_settings(updates={PREFECT_API_URL: handle.url}):
                try:
                    yield handle
                finally:  # logs and events still queued go out while the server is up
                    _drain_prefect()
        finally:
            handle.stop()


def _check_server_answers(url: str, timeout: float = 3.0) -> None:
    """Exit with one line when nothing answers at the ``PREFECT_API_URL`` of the run.

    Prefect's client would fail only after retries, with three tracebacks; a variable still
    exported after the server stopped (a reboot) is the usual cause. ``/health`` answers 200 on
    a Prefect server; 401 or 403 (an API that wants a key) also counts as one, and Prefect's
    client takes it from there.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    exported = bool(os.environ.get("PREFECT_API_URL"))
    where = "PREFECT_API_URL" if exported else "PREFECT_API_URL in the active Prefect profile"
    undo = "unset PREFECT_API_URL" if exported else "'prefect config unset PREFECT_API_URL'"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        typer.echo(f"error: {url} ({where}) is not a URL such as http://127.0.0.1:4200/api; "
                   f"set it to the URL 'minart server' prints, or {undo}", err=True)
        raise typer.Exit(1)
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return
        detail = f"/health answers HTTP {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:  # refused, timed out, no such host, a bad port
        reason = getattr(exc, "reason", exc)
        detail = getattr(reason, "strerror", None) or str(reason)
    typer.echo(f"error: no Prefect server answers at {url} ({where}: {detail}); start it with "
               f"'minart server' or {undo}", err=True)
    raise typer.Exit(1)


def _drain_prefect() -> None:
    """Send the run's queued logs and events to the server now (Prefect sends them at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # best effort: nothing here may fail the run
            worker.drain_all(timeout=5)


@contextlib.contextmanager
def _stop_on_interrupt(server: Any = None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) stops the run soon, not when the step in progress ends.

    The steps run in worker threads that a signal does not reach: the first signal asks them to
    stop at their next progress report (:func:`minart.engine.request_stop`, what they had
    checkpointed stays cached) and interrupts the flow; a second one exits at once. Either way
    nothing written is damaged (every file and cache entry is written to a temporary name and
    renamed), and :func:`minart.cli.main` prints how to resume.
    """
    from . import engine

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        if engine.stop_requested():
            sys.stderr.write("error: interrupted again: stopping now; finished steps are "
                             "cached, run the same command to resume\n")
            sys.stderr.flush()
            process = getattr(server, "process", None)
            if process is not None:  # the run's own server, in its own session: not orphaned
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
            os._exit(128 + signum)
        engine.request_stop()
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.clear_stop()


def _print_run(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("step", "stage", "cache", "seconds", box=None)
    table.add_column("outputs", overflow="fold")  # whole paths, wrapped, never cut with "…"
    for s in result["steps"]:
        cache = {"computed": "miss", "cached": "hit"}.get(s["status"], s["status"])
        if s.get("resumed_from"):
            cache += f" (resumed at {s['resumed_from']})"
        table.add_row(s["step"], s["stage"], cache, f"{s['seconds']:.2f}",
                      "\n".join(s["outputs"]))
    console = Console()
    if not console.is_terminal:  # logs and pipes: one row per line where paths allow
        console = Console(width=max(console.width, 200))
    console.print(table)
    cached = sum(s["status"] == "cached" for s in result["steps"])
    console.print(f"{len(result['computed'])} computed, {cached} cached, "
                  f"{result['corrupt']} corrupt cache entries recomputed, "
                  f"{result['seconds']:.2f} s")


Opt = Optional
CacheOption = Annotated[Opt[str], typer.Option(
    "--cache", help="Tensor cache folder or fsspec URL (default: $MINART_CACHE, else the user "
                    "cache folder).")]
OutputDirOption = Annotated[Opt[Path], typer.Option(
    "--output-dir", "-o", help="Folder the outputs are written to (default: the current folder); "
    "{date} in it becomes the run's date, as in renders/{date}.")]
DeviceOption = Annotated[Opt[str], typer.Option(
    "--device", help="cpu, cuda, cuda:N, mps or auto (default: the recipe's device).")]
ReportOption = Annotated[Opt[Path], typer.Option(
    "--report", help="Write every step's key, cache hit or miss, seconds and outputs, and the "
    "run's status and error (JSON; also when the run fails); {date} in it becomes the run's "
    "date.")]


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="The recipe file (YAML).", metavar="RECIPE",
                                           show_default=False)],
    set_: SetOption = None,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Render the quick preview variant (a quarter of the size).")] = False,
    report: ReportOption = None,
    output_dir: OutputDirOption = None,
    device: DeviceOption = None,
    cache: CacheOption = None,
) -> None:
    """Render a recipe as a Prefect flow, reusing every cached step.

    Steps whose result is in the tensor cache are not computed again; a step whose inputs are
    all cached starts at once. Without PREFECT_API_URL, a temporary local Prefect server is
    started for the run (7-20 s); 'minart server' starts one to share between runs.

    Examples:

      minart run recipes/ocean.yaml --preview

      minart run recipes/ocean.yaml --set steps.soften.params.kappa=0.05 --report report.json
    """
    with _exit_status():
        _render(recipe, list(set_ or ()), preview=preview, output_dir=output_dir,
                device=device, cache=cache, report=report)


@app.command()
def reproduce(
    file: Annotated[Path, typer.Argument(help="A PNG, or a video with its .json sidecar, written "
                                              "by 'minart run'.", metavar="FILE",
                                         show_default=False)],
    output_dir: OutputDirOption = None,
    device: DeviceOption = None,
    report: ReportOption = None,
    cache: CacheOption = None,
) -> None:
    """Render again from the recipe an output carries (PNG metadata or video sidecar).

    The recipe's overrides and preview factor are applied as they were, and every input image
    must still be the file the output was rendered from (by its SHA-256). When the original
    recipe file still holds the same text it is used in place; otherwise a copy is rendered
    from a temporary folder, where relative input paths still lead to the original files.
    """
    import tempfile

    from . import engine

    embedded = _embedded_recipe(file)
    with _exit_status(), tempfile.TemporaryDirectory(prefix="minart-reproduce-") as folder:
        recipe = embedded.materialize(folder)
        copied_from = embedded.path if recipe != Path(embedded.path or "") else None
        try:
            if embedded.inputs:  # the same input images, or a clear error (not written)
                try:
                    engine.load_plan(recipe, [*embedded.overrides, *embedded.input_checks()],
                                     preview=embedded.preview, device=device,
                                     output_dir=output_dir)
                except ParamError as exc:
                    if exc.param != "sha256":
                        raise
                    what = exc.message.split(": the file's SHA-256", 1)[0]  # "path='in.png'"
                    raise ParamError(
                        f"{file} was rendered from another version of the input image of step "
                        f"'{exc.step}' ({what} has changed since); put the "
                        "original back to reproduce it, or render the new one with 'minart run'",
                        param="sha256") from None
            _render(recipe, list(embedded.overrides), preview=embedded.preview, device=device,
                    output_dir=output_dir, cache=cache, report=report, origin=copied_from)
        except MinartError as exc:
            if exc.param == "sha256":  # names the output and the input already
                raise
            if copied_from is None:
                exc.message += f" (reproducing {file})"
            else:  # name the original files, not the temporary copy
                exc.file = _real_path(exc.file, recipe, folder, embedded.path)
                exc.message = _real_path(exc.message, recipe, folder, embedded.path)
                exc.message += (f" (reproducing {file} from the version of "
                                f"{embedded.path} it recorded; that file has changed since)")
            raise


_VIDEO_SUFFIXES = (".webm", ".mp4", ".gif", ".mkv", ".mov")


def _embedded_recipe(file: Path) -> Any:
    """:func:`minart.engine.embedded_recipe` of what the artist passed, with errors that say
    what the file is: a folder, a video without its sidecar, the sidecar itself (read as its
    video's, even when the video is gone), a file that is no image minart wrote."""
    import tempfile

    from . import engine
    from .errors import MediaError
    from .video import sidecar_path

    if file.is_dir():
        raise MediaError("is a folder; give a PNG 'minart run' wrote, or a video with its .json "
                         "sidecar", file=str(file))
    if file.suffix.lower() == ".json" and Path(file.stem).suffix.lower() in _VIDEO_SUFFIXES:
        video = file.with_suffix("")
        if video.is_file():
            return engine.embedded_recipe(video)
        if file.is_file():  # the video is gone: its sidecar still holds the recipe
            with tempfile.TemporaryDirectory(prefix="minart-sidecar-") as folder:
                stand_in = Path(folder) / video.name
                stand_in.touch()
                sidecar_path(stand_in).symlink_to(file.resolve())
                try:
                    return engine.embedded_recipe(stand_in)
                except MinartError as exc:
                    exc.file = str(file)
                    raise
    if file.suffix.lower() in _VIDEO_SUFFIXES and file.is_file() \
            and not sidecar_path(file).exists():
        raise MediaError(f"no sidecar {sidecar_path(file)} next to the video; minart keeps a "
                         "video's recipe in that file", file=str(file))
    try:
        return engine.embedded_recipe(file)
    except MediaError as exc:
        if not exc.message.startswith("not a readable image"):
            raise
        what = "is empty; " if file.stat().st_size == 0 else ""
        raise MediaError(f"{what}not an image minart wrote; give a PNG 'minart run' wrote, or a "
                         "video with its .json sidecar", file=str(file)) from None


def _real_path(text: str | None, recipe: Path, folder: str, original: str | None) -> str | None:
    """``text`` with the temporary copy's paths (``folder/up0/.../recipe.yaml`` and the input
    links beside it) replaced by the original recipe's folder, where they lead."""
    if not text or not original:
        return text
    home, top = recipe.parent, Path(folder)
    places = [home, *(p for p in home.parents if p == top or top in p.parents)]  # deepest first
    real_home = Path(original).parent
    for place in places:
        real = os.path.normpath(real_home / os.path.relpath(place, home))
        for shown in dict.fromkeys((str(place), str(place.resolve()))):
            text = text.replace(shown, real)
    return text


cache_app = typer.Typer(help="Inspect and trim the tensor cache ($MINART_CACHE).",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")

@cache_app.command("ls")
def cache_ls(cache: CacheOption = None,
             as_json: Annotated[bool, typer.Option(
                 "--json", help="One JSON object per entry.")] = False) -> None:
    """List cache entries, least recently used first."""
    import datetime as dt
    import json

    from rich.console import Console
    from rich.table import Table

    from .cache import entry_dict, format_size

    store = _open_cache(cache, create=False)
    entries = store.entries()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry_dict(entry)))
        return
    table = Table("key", "step", "stage", "kind", "size", "last used", box=None)
    for e in entries:
        used = dt.datetime.fromtimestamp(e.accessed).strftime("%m-%d %H:%M")
        table.add_row(e.key[:16], e.step, e.stage, e.kind, format_size(e.size), used)
    console = Console()
    console.print(table)
    console.print(f"{len(entries)} entries, {format_size(sum(e.size for e in entries))} in "
                  f"{store.location}")


@cache_app.command("gc")
def cache_gc(max_size: Annotated[str, typer.Option(
                 "--max-size", help="Size to shrink the cache to, e.g. 10GB or 512MiB.")],
             cache: CacheOption = None) -> None:
    """Evict least recently used entries until the cache fits in --max-size.

    Also removes temp files that killed writers left over an hour ago, and the lock files that
    no run holds (a lock a running step holds stays).
    """
    from .cache import format_size

    with _exit_status():
        result = _open_cache(cache, create=False).gc(max_size)
    typer.echo(f"removed {result.removed} entries ({format_size(result.freed)}); "
               f"{result.kept} left ({format_size(result.size)})")


@cache_app.command("clear")
def cache_clear(cache: CacheOption = None,
                yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False
                ) -> None:
    """Remove every cache entry."""
    store = _open_cache(cache, create=False)
    if not yes:
        typer.confirm(f"Remove every entry of {store.location}?", abort=True)
    with _exit_status():
        removed = store.clear()
    typer.echo(f"removed {removed} entries from {store.location}")


@app.command()
def server(
    host: Annotated[str, typer.Option(
        "--host", help="Interface to listen on; 0.0.0.0 or :: for all of them.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 4200,
    home: Annotated[Opt[Path], typer.Option(
        "--home", help="PREFECT_HOME of the server (its database).")] = None,
) -> None:
    """Start a Prefect server in the background and print the PREFECT_API_URL to export.

    Every 'minart run' in a shell with that variable starts in about a second instead of
    starting Prefect's temporary server (7-20 s), and its runs show in the Prefect UI.

    On --host 0.0.0.0 (or ::) the UI sends the browser to the API at this machine's name (what
    'hostname' prints). A browser on another machine that knows it by another name or address
    needs PREFECT_UI_API_URL, which wins when set in the environment or in the active Prefect
    profile ('prefect config set PREFECT_UI_API_URL=...'):

      PREFECT_UI_API_URL=http://10.0.0.5:4200/api minart server --host 0.0.0.0
    """
    from minart.engine import check_folder_option
    from minart.flows.server import start_server

    if home is not None:
        check_folder_option(home, "--home")
    try:
        handle = start_server(host=host, port=port, home=home)
    except RuntimeError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"Prefect server running (pid {handle.pid}, log {handle.log}).")
    typer.echo(f"export PREFECT_API_URL={handle.url}")
    typer.echo(f"Stop it with: kill {handle.pid}")
