"""The ``render`` flow: validate a recipe, plan its keys, submit one task per needed step.

Entry point for deployments: ``flows/render.py:render`` (installed as ``minart.flows.render``).
No stage logic lives here: planning and step execution are :mod:`minart.engine` functions, the
task in :mod:`minart.tasks.render_step` wraps one call. Independent branches run concurrently on
Prefect's thread-pool task runner; a step starts once its inputs are done. Steps whose result is
cached are submitted too (they show as Cached) but their inputs are not: a subtree under a
cached step is skipped entirely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minart.tasks.render_step import step_task
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from minart import engine
from minart.cache import TensorCache, format_size, parse_size
from minart.errors import Interrupted, MinartError, ParamError

__all__ = ["render", "render_here"]


class _NoTracebackForMinartErrors(logging.Filter):
    """Drop the traceback Prefect attaches when a run fails with a :class:`MinartError`.

    Such an error is a complete one-line message for the artist (file, line, step, parameter);
    Prefect's task and flow engines log failures with ``exc_info``, which buried that line
    under forty lines of engine frames. Other exceptions (bugs) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MinartError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_minart_errors() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForMinartErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForMinartErrors())


@flow(name="render", persist_result=False, log_prints=False)
def render(recipe: str, overrides: dict[str, Any] | None = None,
           preview: bool | int = False, output_dir: str | None = None,
           device: str | None = None, cache: str | None = None,
           report: str | None = None, origin: str | None = None,
           cache_max_size: str | int | None = None) -> dict[str, Any]:
    """Render ``recipe`` (a YAML path) through the tensor cache and return the run report.

    Args:
        recipe: path of the recipe file.
        overrides: ``{"steps.soften.params.kappa": 0.05, "seed": 3}`` applied to the recipe
            before it is validated (values as YAML would read them).
        preview: render the quick preview variant (true: 4x smaller; a number: that factor).
        output_dir: folder the outputs' path templates are expanded in (default: the current
            folder; a deployment runs in the repository folder); ``{date}`` in it becomes the
            run's date (UTC), for one folder per night.
        device: torch device the stages run on (``cpu``, ``cuda``, ``cuda:1``).
        cache: tensor cache location (default ``$MINART_CACHE`` or the user cache folder).
        report: also write the JSON report to this path (``{date}`` in it becomes the run's
            date, as in ``output_dir``); it is written when a step fails or the run is stopped,
            too, with the run's ``status`` and ``error``.
        origin: the recipe file ``recipe`` is a copy of (``minart reproduce`` of an edited
            recipe); outputs record it as their recipe's path.
        cache_max_size: once the steps are done, evict the least recently used cache entries
            until the cache fits in this size (``"20GB"``, ``"512MiB"`` or a number of bytes),
            as ``minart cache gc`` does, so a nightly deployment's cache stops growing. An
            eviction that fails (a read-only cache) is logged as a warning; the render stands.
            Default: evict nothing.

    Returns:
        The run report (:meth:`minart.engine.RunReport.to_dict`): the run's status and flow run
        id, every step's key, status (computed, cached or skipped), seconds and output files.

    Raises:
        MinartError: the recipe does not validate; ``report``, ``output_dir``, an output path
            or the cache location cannot be written (all checked before any step runs); or a
            step fails (the first failure).
    """
    _quiet_minart_errors()
    logger = get_run_logger()
    start = time.perf_counter()
    recipe = os.path.abspath(recipe)
    overrides = dict(overrides or {})
    store = TensorCache(cache)
    day = time.strftime("%Y-%m-%d", time.gmtime())  # one {date} for the whole run
    limit = None
    try:
        if output_dir:
            engine.output_folder(output_dir, day)  # a bad {field} names the folder as given
            output_dir = os.path.abspath(output_dir)
        if report:
            report = engine.report_path(report, day)  # a bad {field} names the parameter
        plan = engine.load_plan(recipe, overrides, preview=preview, device=device,
                                output_dir=output_dir, date=day, origin=origin)
        for message in plan.recipe.warnings:  # (the CLI shows the run's log: said once)
            logger.warning("%s", message)
        # what the CLI checks before it starts Prefect, for deployment runs: fail before any work
        engine.check_run_paths(plan, report=report or None, check_output_dir=bool(output_dir))
        store.check_location(create=True)
        if cache_max_size is not None:
            limit = _cache_limit(cache_max_size)
    except MinartError as exc:
        if exc.file and exc.file.startswith("--set "):  # name the flow's parameter, not the CLI's
            exc.file = f"overrides {exc.file.removeprefix('--set ')}"
        raise
    to_run, status, corrupt = plan.schedule(store, log=logger)
    logger.info("recipe %s: %d steps, %d to submit (%d cached), cache %s", recipe,
                len(plan.steps), len(to_run), sum(status[n] == "cached" for n in to_run),
                store.location)

    with _graceful_termination(logger) as termination:
        return _run(plan, to_run, status, store=store, recipe=recipe, overrides=overrides,
                    preview=preview, output_dir=output_dir, day=day, origin=origin,
                    report=report, corrupt=corrupt, start=start, logger=logger,
                    cache_max_size=cache_max_size, limit=limit, termination=termination)


def _run(plan: engine.Plan, to_run: list[str], status: dict[str, str], *, store: TensorCache,
         recipe: str, overrides: dict[str, Any], preview: bool | int, output_dir: str | None,
         day: str, origin: str | None, report: str | None, corrupt: int, start: float,
         logger: Any, cache_max_size: str | int | None, limit: int | None,
         termination: _GracefulTermination) -> dict[str, Any]:
    """Submit the steps, wait for them, write the report and shrink the cache."""
    futures = {}
    for name in to_run:
        step = plan.steps[name]
        task = step_task(store, stage=step.stage, step=name, refresh=status[name] != "cached")
        futures[name] = task.submit(
            recipe=recipe, overrides=overrides, preview=preview, device=plan.device, step=name,
            key=step.key, cache=store.location, output_dir=output_dir, date=day, origin=origin,
            wait_for=[futures[i] for i in step.inputs if i in futures])

    run = engine.RunReport(recipe=recipe, device=plan.device_class, corrupt_found=corrupt,
                           flow_run_id=_flow_run_id())
    failed: list[str] = []
    try:
        for name, step in plan.steps.items():
            if name not in futures:
                run.steps.append(engine.StepResult(name, step.stage, step.key, "skipped"))
                continue
            futures[name].wait()
            state = futures[name].state
            if not state.is_completed():
                if state.is_failed() or state.is_crashed():
                    failed.append(name)
                    status = "interrupted" if isinstance(_error_of(state), Interrupted) else "failed"
                else:  # NotReady: an input failed, so it never ran
                    status = "blocked"
                run.steps.append(engine.StepResult(name, step.stage, step.key, status))
                continue
            result = engine.StepResult.from_dict(state.result())
            if state.name == "Cached":  # Prefect served the record: nothing ran this time
                result = engine.StepResult(name, step.stage, step.key, "cached",
                                           outputs=step.files or result.outputs)
            run.steps.append(result)
    except BaseException as exc:  # Ctrl-C (or a cancelled run) while steps run: say so, stop
        listed = {s.step for s in run.steps}
        run.steps += [engine.StepResult(name, step.stage, step.key, "interrupted")
                      for name, step in plan.steps.items() if name not in listed]
        stopped = not isinstance(exc, Exception) or isinstance(exc, Interrupted)
        run.status, run.error = ("interrupted" if stopped else "failed"), engine.error_line(exc)
        if isinstance(exc, KeyboardInterrupt):
            run.error = "interrupted (Ctrl-C or SIGTERM); finished steps are cached"
        _finish(run, start, report, logger)
        raise
    error = _error_of(futures[failed[0]].state) if failed else None
    if failed and error is None:  # (a failed state always holds its exception)
        error = RuntimeError(f"step '{failed[0]}' ended {futures[failed[0]].state.name}")
    if error is None:
        plan.mark_used(store)  # the steps upstream of a cached target stay "recently used"
    else:
        run.status = "interrupted" if isinstance(error, Interrupted) else "failed"
        run.error = engine.error_line(error)
    if cache_max_size is not None:
        try:
            freed = store.gc(limit)
        except (MinartError, OSError) as exc:  # a read-only cache: the render itself stands
            logger.warning("cache gc to %s failed, the render is done: %s", cache_max_size,
                           engine.error_line(exc))
        else:
            logger.info("cache gc to %s: removed %d entries (%s), %d left (%s)", cache_max_size,
                        freed.removed, format_size(freed.freed), freed.kept,
                        format_size(freed.size))
    create_markdown_artifact(run.markdown(), key="minart-render",
                             description=f"minart render of {Path(recipe).name}")
    _finish(run, start, report, logger, strict=error is None)
    termination.hand_over()  # everything is written: now end as Prefect ends a terminated run
    if error is not None:
        raise error  # the first failing step's error
    return run.to_dict()


class _GracefulTermination:
    """SIGTERM during the steps: stop them as Ctrl-C does, then let Prefect end the run.

    A worker stopping, ``prefect flow-run cancel`` and systemd send the flow-run process
    SIGTERM. Prefect's own handler ends the process at once, while the steps run on in worker
    threads it cannot reach: a long step lost everything since its last checkpoint, or ran on
    for minutes after the run was marked Crashed and its slot given away. Here the first SIGTERM
    asks the steps to stop at their next progress report (:func:`minart.engine.request_stop`:
    each saves its checkpoint), the report is written, and then the signal goes to Prefect's
    handler, which marks the run Cancelled (a cancel) or Crashed. A second SIGTERM goes to
    Prefect's handler at once.
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.previous: Any = None
        self.received: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # asked twice: no more waiting
            self._deliver(signum, frame)
            return
        self.received = signum
        self.logger.warning("termination requested (signal %d): the steps stop at their next "
                            "progress report and keep their checkpoint; send it again to stop "
                            "at once", signum)
        engine.request_stop()

    def _deliver(self, signum: int, frame: Any) -> None:
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def hand_over(self) -> None:
        """Give a SIGTERM received during the steps to the handler it was taken from."""
        if self.received is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self._deliver(self.received, None)


@contextlib.contextmanager
def _graceful_termination(logger: Any) -> Iterator[_GracefulTermination]:
    """:class:`_GracefulTermination` installed for SIGTERM while the block runs (main thread)."""
    handler = _GracefulTermination(logger)
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signals reach the main thread only: nothing to install
        return
    handler.previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, handler.previous)
        if handler.received is not None:
            engine.clear_stop()


def _flow_run_id() -> str | None:
    """The id of the flow run in progress (the Prefect UI's ``/runs/flow-run/<id>``)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = getattr(context, "flow_run", None)
    return None if run is None else str(run.id)


def _error_of(state: Any) -> BaseException | None:
    """The exception a failed task state holds (``None`` if it holds none)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - whatever the step raised is the answer
        return exc
    return None


def _finish(run: engine.RunReport, start: float, report: str | None, logger: Any, *,
            strict: bool = False) -> None:
    """Stamp the run's time and write its report; a failed or stopped run only logs a report it
    cannot write (its own error is the one to show)."""
    run.seconds = time.perf_counter() - start
    if not report:
        return
    try:
        run.write_json(report)
    except MinartError as exc:
        if strict:
            raise
        logger.warning("%s", exc)


def _cache_limit(text: str | int) -> int:
    """Bytes in the ``cache_max_size`` parameter; a bad size names the parameter."""
    try:
        return parse_size(text)
    except MinartError:
        raise ParamError(f"cache_max_size={text!r} is not a size; use a size such as '20GB', "
                         "'512MiB' or a number of bytes", param="cache_max_size") from None


def render_here(recipe: str, *, overrides: dict[str, Any] | None = None,
                preview: bool | int = False, output_dir: str | None = None,
                device: str | None = None,
                cache: str | None = None, report: str | None = None,
                origin: str | None = None) -> dict[str, Any]:
    """Run the :func:`render` flow in this process, with progress bars on a terminal.

    With ``PREFECT_API_URL`` set the run is recorded by that server; without it Prefect starts
    its temporary local server for the process (7-20 s). Long steps draw a rich progress bar
    when stderr is a TTY and stay quiet otherwise.
    """
    from minart.flows.server import RUN_TAG
    from prefect import tags

    from minart.progress import TerminalProgress, listen

    # tagged as deployment runs are (prefect.yaml), so the zombie automation watches it too
    with TerminalProgress() as bar, listen(bar), tags(RUN_TAG):
        return render(recipe=recipe, overrides=overrides or {}, preview=preview,
                      output_dir=output_dir, device=device, cache=cache, report=report,
                      origin=origin)
