"""Prefect glue for one recipe step: a task that calls :func:`minart.engine.run_step`.

How it ties minart's tensor cache to Prefect's own caching (facts measured on Prefect 3.9, see
``/work/shared/notes/prefect-facts.md``):

* The task takes the step's precomputed key and paths, never tensors (Prefect would hash and
  pickle them, and tensor hashes differ between processes).
* :class:`StepKeyPolicy` returns that key as Prefect's cache key, so a step whose result is in the
  cache shows as **Cached** in the Prefect UI without its body running. Before answering, it checks
  that the tensor entry still exists and drops a stale record otherwise (a record must never
  outlive the tensor it stands for).
* The Prefect record is tiny: the step's JSON report (key, status, seconds, outputs), written with
  the JSON serializer (no pickle) into ``<cache>/records`` via ``key_storage`` (a ``Path``: a string
  with one slash would be read as a block slug). Keeping records inside the cache folder means
  ``minart cache gc/clear`` evict a record together with (and before) its tensor. For a remote
  cache (fsspec URL) the records go to ``$PREFECT_HOME/minart-records``.
* Tensors stay in :class:`minart.cache.TensorCache` (safetensors, checksummed, atomic), never in
  Prefect's result store, so no result holds 100 MB of base64 and nothing is kept in memory
  (``cache_result_in_memory=False``).
* Isolation stays ``READ_COMMITTED``: two runs computing the same step are serialised by the
  tensor cache's per-key lock (an OS lock that the kernel frees on ``kill -9``), whereas Prefect's
  ``SERIALIZABLE`` file locks never expire after ``kill -9`` and hang the next run.
* Steps that run longer than ``PROGRESS_EVERY`` seconds publish a Prefect progress artifact,
  updated at most that often at first and at most every 5 % of the step's running time later
  (and terminal bars through :mod:`minart.progress`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy

from minart import engine
from minart.cache import TensorCache
from minart.progress import emit

__all__ = ["PROGRESS_EVERY", "StepKeyPolicy", "records_location", "render_step", "step_task"]

PROGRESS_EVERY = 2.0
"""Shortest time in seconds between two updates of a step's Prefect progress artifact (and the
running time a step needs before it gets one); later the interval grows to 5 % of the time the
step has run."""


def records_location(cache: TensorCache) -> Path:
    """Folder of Prefect's cache records for ``cache``: ``<cache>/records`` when local."""
    local = cache.local_path()
    if local is not None:
        return local / "records"
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "minart-records"


@dataclass
class StepKeyPolicy(CachePolicy):
    """Prefect cache policy whose key is the step key passed to the task as ``key``.

    The record is honoured only while the tensor entry exists in the cache at ``cache``.
    """

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        key = inputs["key"]
        store = TensorCache(inputs["cache"])
        if self.key_storage is not None:
            records = Path(self.key_storage)
            if not store.contains(key) or not _record_usable(records, key):
                for path in (records / key, records / "results" / key):
                    path.unlink(missing_ok=True)
        return key


def _record_usable(records: Path, key: str) -> bool:
    """Whether Prefect can serve ``key``'s record: none at all, or one whose metadata points at
    this folder's result file and whose result is the step's JSON report.

    A record written before the cache folder was moved or copied holds the old absolute path,
    and Prefect refuses it (``ValueError: ... outside of the base path``); a damaged record or
    result makes Prefect fail with a ``JSONDecodeError``. Such a record is dropped instead, and
    the step's body answers from the tensor cache.
    """
    meta_path = records / key
    if not meta_path.exists():
        return True
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        result = json.loads((records / "results" / key).read_text(encoding="utf-8"))
        stored = Path(meta["storage_key"])
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return (stored.resolve() == (records / "results" / key).resolve() and isinstance(result, dict)
            and result.get("key") == key)


class _ProgressArtifact:
    """Turns ``progress(step, done, total)`` calls into a throttled Prefect progress artifact."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.artifact_id = None
        self.failed = False  # the API refused once: the step goes on without an artifact
        self.start = self.last = time.monotonic()  # steps under PROGRESS_EVERY get no artifact

    def __call__(self, step: str, done: int, total: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        emit(step, done, total)  # terminal bars of the CLI, when it runs the flow in-process
        now = time.monotonic()
        final = done >= total and self.artifact_id is not None  # always show 100 %
        # every 2 s at first, then every 5 % of the time so far: a 10-minute step sends an
        # update every 30 s, not 300 events into 'prefect deployment run --watch'
        every = max(PROGRESS_EVERY, 0.05 * (now - self.start))
        if total <= 0 or self.failed or (now - self.last < every and not final):
            return
        self.last = now
        percent = 100.0 * min(done, total) / total
        text = f"step '{step}': {done}/{total} iterations"
        try:
            if self.artifact_id is None:
                key = re.sub(r"[^a-z0-9-]+", "-", f"minart-progress-{step}".lower())
                self.artifact_id = create_progress_artifact(percent, key=key, description=text)
            else:
                update_progress_artifact(self.artifact_id, percent, description=text)
        except Exception as exc:  # noqa: BLE001 - a progress display must never fail a long step
            from prefect import get_run_logger

            get_run_logger().warning("step '%s': no progress artifact from now on (%s: %s)",
                                     step, type(exc).__name__, exc)
            self.failed = True


@task(name="render_step", persist_result=True, result_serializer="json",
      cache_result_in_memory=False, log_prints=False)
def render_step(*, recipe: str, overrides: dict[str, Any], preview: bool | int, device: str,
                step: str, key: str, cache: str, output_dir: str | None,
                date: str | None = None, origin: str | None = None) -> dict[str, Any]:
    """Run (or find in the cache) one step of a recipe; return its JSON report."""
    from prefect import get_run_logger

    plan = engine.load_plan(recipe, overrides, preview=preview, device=device,
                            output_dir=output_dir, date=date, origin=origin)
    if plan.step(step).key != key:
        from minart.errors import RecipeError

        raise RecipeError(f"the recipe changed during the run (key of step '{step}' is now "
                          f"{plan.step(step).key}, expected {key})", file=recipe)
    if engine.stop_requested():  # the run is being stopped (SIGTERM): start nothing new
        from minart.errors import Interrupted

        raise Interrupted("not started: the run was asked to stop; run it again to go on",
                          step=step)
    result = engine.run_step(plan, step, cache=TensorCache(cache),
                             progress=_ProgressArtifact(step), log=get_run_logger())
    return result.to_dict()


def step_task(store: TensorCache, *, stage: str, step: str, refresh: bool = False):
    """``render_step`` configured for one step: named after its stage, cached under its key.

    ``refresh=True`` (the flow found the step's result or output files missing) makes Prefect
    run the body and overwrite its record instead of answering from it.
    """
    records = records_location(store)
    records.mkdir(parents=True, exist_ok=True)
    policy = StepKeyPolicy().configure(key_storage=records)
    (records / "results").mkdir(exist_ok=True)
    return render_step.with_options(name=stage, task_run_name=step, cache_policy=policy,
                                    result_storage=records / "results", refresh_cache=refresh)
