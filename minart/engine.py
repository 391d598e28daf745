"""Step execution without an orchestrator: plan keys, load inputs from the cache, run, store.

The flow in ``flows/render.py`` and the tasks in ``tasks/`` only call the functions here, so a
recipe renders the same way with or without Prefect (:func:`render` is the pure-Python path).

Planning (:func:`plan`) computes every step's key from the recipe before anything runs
(:mod:`minart.keys`). :meth:`Plan.schedule` then walks back from the recipe's outputs and stops at
steps whose result is already cached and intact, so a step whose whole subtree is cached is never
loaded or run, and an evicted intermediate is recomputed only when something still needs it.

Running one step (:func:`run_step`)::

    with cache.lock(key):                    # a second run of the same step waits, then hits
        if cache holds key (checksum ok):   return hit
        inputs = [load(k) for k in input keys]   # missing/corrupt input: recompute it, warn, count
        result = stage.run(inputs, params, ctx)  # ctx carries seed, device, generator, progress,
                                                 # and a checkpoint for long iterative stages
        cache.put(key, result); drop key-ckpt

Locks are always taken from a step towards its inputs (a DAG order), so runs cannot deadlock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from .cache import TensorCache, format_size
from .errors import CacheError, Interrupted, MinartError, ParamError, RecipeError
from .keys import device_class, plan_keys, topological_order
from .progress import notes_to

__all__ = [
    "Checkpoint",
    "EmbeddedRecipe",
    "Plan",
    "PlannedStep",
    "RunReport",
    "StepResult",
    "check_folder_option",
    "check_output_files",
    "check_report_path",
    "check_run_paths",
    "check_writable_file",
    "checkpoint_seconds",
    "clear_stop",
    "device_memory",
    "embedded_recipe",
    "error_line",
    "load_plan",
    "output_folder",
    "overrides_dict",
    "overrides_list",
    "plan",
    "render",
    "report_path",
    "request_stop",
    "resolve_device",
    "run_step",
    "step_seed",
    "stop_requested",
]

_LOG = logging.getLogger("minart")

ProgressFn = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called by long stages as they iterate."""


@dataclass(frozen=True)
class PlannedStep:
    """A recipe step with its key and its inputs' keys, known before anything runs."""

    name: str
    stage: str
    key: str
    inputs: tuple[str, ...]
    input_keys: tuple[str, ...]
    files: tuple[str, ...] = ()

    def files_current(self, metadata: Mapping[str, str]) -> bool:
        """Whether the files this (output) step writes are the ones its cache entry recorded.

        Every file must exist with the SHA-256 noted when the step last wrote it (with its
        companions, such as a video's JSON sidecar), so a file overwritten by another recipe,
        seed or preview, or edited or truncated since, is written again. A file whose size,
        modification time and inode are those recorded is not read again. A step without files
        is always current.

        Args:
            metadata: the step's cache entry metadata.
        """
        if not self.files:
            return True
        try:
            recorded = json.loads(metadata.get(_FILES, ""))
        except ValueError:
            return False  # an entry from before files were recorded, or a damaged field
        if not isinstance(recorded, dict) or not set(self.files) <= recorded.keys():
            return False
        for path, entry in recorded.items():
            if not isinstance(entry, dict):
                return False
            try:
                info = os.stat(path)
                if (info.st_size, info.st_mtime_ns, info.st_ino) == (
                        entry.get("size"), entry.get("mtime_ns"), entry.get("inode")):
                    continue  # untouched since it was written: no need to read it again
                if _file_digest(path) != entry.get("sha256"):
                    return False
            except OSError:
                return False
        return True


@dataclass(frozen=True)
class StepResult:
    """What running (or not running) one step did.

    ``status`` is ``"computed"``, ``"cached"`` (found in the cache), ``"skipped"`` (not needed:
    everything that uses it is cached), or in a run that did not finish ``"failed"`` (the step
    raised), ``"blocked"`` (not run: one of its inputs failed) or ``"interrupted"`` (stopped by
    Ctrl-C, or still running when the run was stopped). ``corrupt`` counts corrupt or truncated
    entries that were found, reported and recomputed while producing this step.
    """

    step: str
    stage: str
    key: str
    status: str
    seconds: float = 0.0
    outputs: tuple[str, ...] = ()
    corrupt: int = 0
    recomputed: tuple[str, ...] = ()
    resumed_from: int | None = None

    @property
    def hit(self) -> bool:
        """True when the step's result came from the cache (status ``"cached"``) and only then.

        Example:
            >>> StepResult("a", "fractal", "k", "failed").hit
            False
        """
        return self.status == "cached"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for reports, Prefect results and artifacts).

        Example:
            >>> StepResult("a", "fractal", "k", "cached").to_dict()["hit"]
            True
        """
        data = dataclasses.asdict(self)
        data["outputs"] = list(self.outputs)
        data["recomputed"] = list(self.recomputed)
        data["hit"] = self.hit
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["outputs"] = tuple(values.get("outputs", ()))
        values["recomputed"] = tuple(values.get("recomputed", ()))
        return cls(**values)


RUN_STATUSES = ("ok", "failed", "interrupted")
"""Values of :attr:`RunReport.status`."""


@dataclass
class RunReport:
    """Every step of one render: key, cache hit or miss, seconds and output files.

    ``status`` says how the run ended (``"ok"``, ``"failed"``, ``"interrupted"``), ``error`` is
    the one-line message of the error that ended it, and ``flow_run_id`` the Prefect flow run
    that rendered it (``None`` without Prefect).
    """

    recipe: str
    device: str
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    corrupt_found: int = 0
    status: str = "ok"
    error: str | None = None
    flow_run_id: str | None = None

    @property
    def computed(self) -> list[str]:
        """Names of the steps that were computed (including recomputed corrupt inputs)."""
        names = [s.step for s in self.steps if s.status == "computed"]
        for s in self.steps:
            names.extend(r for r in s.recomputed if r not in names)
        return names

    @property
    def corrupt(self) -> int:
        """Corrupt or truncated cache entries found (and recomputed) during the run."""
        return self.corrupt_found + sum(s.corrupt for s in self.steps)

    @property
    def outputs(self) -> list[str]:
        """Files written or confirmed by the run's steps."""
        return [o for s in self.steps for o in s.outputs]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, the content of ``minart run --report``.

        Example:
            >>> data = RunReport("r.yaml", "cpu-float32", status="failed", error="boom").to_dict()
            >>> data["status"], data["error"], data["flow_run_id"], data["steps"]
            ('failed', 'boom', None, [])
        """
        return {"recipe": self.recipe, "device": self.device, "status": self.status,
                "error": self.error, "flow_run_id": self.flow_run_id,
                "seconds": round(self.seconds, 4), "computed": self.computed,
                "corrupt": self.corrupt, "outputs": self.outputs,
                "steps": [s.to_dict() for s in self.steps]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically and return it.

        The JSON goes to a temporary file beside ``path`` that is then renamed over it, so a
        reader (or a run killed while writing) never leaves half a report.

        Raises:
            ParamError: the file cannot be written.
        """
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _io().write_bytes_atomically(
                target, (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        except OSError as exc:
            raise ParamError(f"report={str(target)!r}: cannot write it ({exc.strerror or exc}); "
                             "the run's outputs are written", param="report") from None
        return target

    def markdown(self) -> str:
        """A Markdown table of the steps (the Prefect run artifact)."""
        lines = [f"# minart render: `{self.recipe}`", "",
                 f"device `{self.device}`, {len(self.computed)} computed, "
                 f"{sum(s.status == 'cached' for s in self.steps)} cached, "
                 f"{self.corrupt} corrupt entries recomputed, {self.seconds:.2f} s", "",
                 "| step | stage | cache | seconds | key | outputs |",
                 "|---|---|---|---:|---|---|"]
        for s in self.steps:
            cache = {"computed": "miss", "cached": "hit"}.get(s.status, s.status)
            if s.resumed_from:
                cache += f" (resumed at {s.resumed_from})"
            outs = "<br>".join(f"`{o}`" for o in s.outputs)
            lines.append(f"| {s.step} | {s.stage} | {cache} | {s.seconds:.2f} | `{s.key[:12]}` "
                         f"| {outs} |")
        return "\n".join(lines) + "\n"


def error_line(exc: BaseException) -> str:
    """One line saying what ``exc`` is: a :class:`MinartError`'s message (with its file, line
    and step), else ``Type: first line`` (the run report's ``error``).

    Example:
        >>> error_line(RecipeError("no such recipe file", file="x.yaml"))
        'x.yaml: no such recipe file'
        >>> error_line(OSError("disk on fire\\nand more")), error_line(KeyboardInterrupt())
        ('OSError: disk on fire', 'KeyboardInterrupt')
    """
    if isinstance(exc, MinartError):
        return str(exc).strip().split("\n", 1)[0]
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _remove_stale_temp_files(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left beside ``target``.

    :mod:`minart.io` and :mod:`minart.video` write ``target`` through a sibling named
    ``.<name>.<12 hex digits>.tmp<suffix>`` that is renamed over it; ``kill -9`` while a video
    encodes leaves that file behind. Only names of exactly that form for this ``target`` (and
    for its video sidecar ``<name>.json``) are removed. Call it only while holding the target's
    file lock, when no other writer of ``target`` can be at work.

    Returns:
        The files removed.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in (".a.webm.0123456789ab.tmp.webm", ".a.webm.xyz.tmp.webm", "a.webm"):
        ...     _ = (folder / name).write_text("")
        >>> [p.name for p in _remove_stale_temp_files(folder / "a.webm")]
        ['.a.webm.0123456789ab.tmp.webm']
        >>> sorted(p.name for p in folder.iterdir())
        ['.a.webm.xyz.tmp.webm', 'a.webm']
    """
    target = Path(target)
    patterns = [_io().temp_name_pattern(name) for name in (target, f"{target}.json")]
    removed = []
    try:
        candidates = list(os.scandir(target.parent))
    except OSError:  # no folder yet: nothing left behind
        return removed
    for entry in candidates:
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


class Checkpoint:
    """A step's resumable state in the cache, under ``<key>-ckpt`` (written atomically).

    Long iterative stages call :meth:`save` at frame boundaries with a flat ``{name: tensor}``
    state and the iteration reached, and :meth:`load` when they start; the engine deletes the
    checkpoint once the step's result is stored. Saves are throttled to one every ``every``
    seconds (a state holding all frames so far can be large): a crash loses at most that much
    work.

    Args:
        cache: the tensor cache.
        key: the step's key.
        step: the step's name (shown by ``minart cache ls``).
        stage: the step's stage.
        every: seconds between two saves (default ``$MINART_CHECKPOINT_SECONDS``, else 30;
            0 saves at every call).

    Raises:
        ParamError: ``every`` (or the variable) is not a number >= 0.

    Example:
        >>> ckpt = Checkpoint(TensorCache("memory://minart-doctest-ckpt"), "abc", every=0)
        >>> ckpt.load() is None
        True
        >>> ckpt.save(3, {"image": torch.zeros(1, 3, 2, 2)})
        True
        >>> state, iteration = ckpt.load()
        >>> iteration, list(state)
        (3, ['image'])
        >>> ckpt.delete()
    """

    def __init__(self, cache: TensorCache, key: str, *, step: str = "", stage: str = "",
                 every: float | None = None) -> None:
        if every is None:
            every = checkpoint_seconds()
        if not every >= 0:
            raise ParamError(f"every={every} must be >= 0 seconds", param="every")
        self.cache, self.key = cache, f"{key}-ckpt"
        self.step, self.stage, self.every = step, stage, every
        self.saved = 0
        self.dropped = 0  # unreadable checkpoints found (and deleted): reported as corrupt
        self.resumed_from: int | None = None
        self._last = time.monotonic()

    def save(self, iteration: int, state: Mapping[str, Tensor], *, force: bool = False) -> bool:
        """Store ``state`` as reached after ``iteration`` iterations, replacing the older one,
        unless the last save is less than ``every`` seconds old (``force`` saves anyway, and so
        does a :func:`request_stop` in force: Ctrl-C keeps the work up to the step's last frame).

        Returns:
            Whether it was written.
        """
        now = time.monotonic()
        if not force and now - self._last < self.every and not _STOP.is_set():
            return False
        self.cache.put_tensors(self.key, dict(state), kind="checkpoint",
                               info={"iteration": str(int(iteration)), "step": self.step,
                                     "stage": self.stage})
        self._last = now
        self.saved += 1
        return True

    def load(self) -> tuple[dict[str, Tensor], int] | None:
        """The last saved ``(state, iteration)``, or ``None`` (a corrupt checkpoint is dropped)."""
        try:
            found = self.cache.get_tensors(self.key)
        except CacheError as exc:
            _LOG.warning("step '%s': dropping its unreadable checkpoint (%s); it starts again "
                         "from the beginning", self.step or self.key, exc)
            self.delete()
            self.dropped += 1
            return None
        if found is None:
            return None
        tensors, meta = found
        self.resumed_from = int(meta.get("iteration", "0"))
        return tensors, self.resumed_from

    def delete(self) -> None:
        """Remove the checkpoint."""
        self.cache.delete(self.key)


def checkpoint_seconds() -> float:
    """Seconds between two checkpoint saves of a long step: ``$MINART_CHECKPOINT_SECONDS``,
    else 30. :func:`load_plan` reads it, so a bad value stops a run before any step starts.

    Raises:
        ParamError: the variable is not a number of seconds >= 0.

    Example:
        >>> checkpoint_seconds() >= 0
        True
    """
    text = os.environ.get("MINART_CHECKPOINT_SECONDS", "30")
    try:
        every = float(text)
    except ValueError:
        every = float("nan")
    if not every >= 0:  # (nan too)
        raise ParamError(f"MINART_CHECKPOINT_SECONDS={text!r} must be a number of seconds >= 0 "
                         "(how often long steps save a checkpoint; default 30); fix or unset it",
                         param="MINART_CHECKPOINT_SECONDS")
    return every


def step_seed(seed: int | None) -> int:
    """The seed of every step's generator, derived from the recipe seed alone.

    A step's key names its stage, params, inputs, seed and device class but not the step itself,
    so two steps with the same key must draw the same noise: the generator may depend on nothing
    else. A step that needs different noise takes a parameter for it (which changes its key).

    Example:
        >>> step_seed(7) == step_seed(7) != step_seed(8)
        True
        >>> 0 <= step_seed(None) < 2**63
        True
    """
    digest = hashlib.sha256(f"minart-seed:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


# -- planning ------------------------------------------------------------------------------------


def _registry():
    from . import registry

    return registry


def _recipe_module():
    from . import recipe

    return recipe


def _io():
    from . import io

    return io


def _stages_module():
    from . import stages

    return stages


def _target_names(recipe: Any, names: Sequence[str]) -> list[str]:
    outputs = getattr(recipe, "outputs", None) or ()
    targets = [o if isinstance(o, str) else getattr(o, "step", getattr(o, "name", None))
               for o in outputs]
    targets = [t for t in targets if t in names]
    if targets:
        return targets
    used = {i for s in recipe.steps for i in s.inputs}
    return [n for n in names if n not in used]


@dataclass(frozen=True)
class Plan:
    """A validated recipe with every step's key, in dependency order."""

    recipe: Any
    device: str
    device_class: str
    steps: Mapping[str, PlannedStep]
    targets: tuple[str, ...]
    output_dir: Path | None = None
    date: str | None = None

    @property
    def label(self) -> str:
        """The recipe's path (or name) for reports."""
        return str(getattr(self.recipe, "path", None) or getattr(self.recipe, "name", "recipe"))

    def step(self, name: str) -> PlannedStep:
        """The planned step called ``name``.

        Raises:
            RecipeError: no such step.

        Example:
            >>> from minart.recipe import parse_recipe
            >>> plan(parse_recipe("steps: {a: {stage: fractal}}")).step("a").stage
            'fractal'
        """
        if name not in self.steps:
            raise RecipeError(f"no step named {name!r}; steps: {', '.join(self.steps)}")
        return self.steps[name]

    def schedule(self, cache: TensorCache, *, verify: bool = True,
                 log: logging.Logger | logging.LoggerAdapter | None = None
                 ) -> tuple[list[str], dict[str, str], int]:
        """Steps to run, walking back from the targets and stopping at cached steps.

        Args:
            cache: the tensor cache.
            verify: read and checksum the cached steps the run will use (a corrupt entry is
                deleted, reported and scheduled for recomputation).
            log: where warnings go.

        Returns:
            ``(to_run, status, corrupt)``: steps to submit in dependency order (cached ones
            included, so the orchestrator shows them as cached), ``{step: "cached" | "missing" |
            "skipped"}`` for every step, and the number of corrupt entries found.


        Example:
            >>> from minart.recipe import parse_recipe
            >>> p = plan(parse_recipe("size: [8, 8]\\nsteps:\\n  a: {stage: fractal}\\n"
            ...                       "  b: {stage: blend, inputs: [a, a]}"))
            >>> cache = TensorCache("memory://minart-doctest-schedule")
            >>> p.schedule(cache)
            (['a', 'b'], {'b': 'missing', 'a': 'missing'}, 0)
            >>> _ = render(p, cache=cache)
            >>> p.schedule(cache), cache.clear()
            ((['b'], {'b': 'cached', 'a': 'skipped'}, 0), 2)
        """
        log = log or _LOG
        status: dict[str, str] = {}
        corrupt = 0
        order: list[str] = []

        def visit(name: str) -> None:
            nonlocal corrupt
            if name in status:
                return
            step = self.steps[name]
            state = "missing"
            if cache.contains(step.key):
                state = "cached"
                if verify or step.files:  # output files are checked against the entry
                    try:
                        found = cache.get_tensors(step.key)
                    except CacheError as exc:
                        log.warning("step '%s': %s; recomputing it", name, exc)
                        cache.delete(step.key)
                        corrupt += 1
                        found = None
                    if found is None or not step.files_current(found[1]):
                        state = "missing"
            status[name] = state
            if state == "missing":
                for source in step.inputs:
                    visit(source)
            order.append(name)

        for target in self.targets:
            visit(target)
        ranked = {n: i for i, n in enumerate(self.steps)}
        to_run = sorted(order, key=ranked.__getitem__)
        for name in self.steps:
            status.setdefault(name, "skipped")
        return to_run, status, corrupt

    def mark_used(self, cache: TensorCache) -> int:
        """Refresh the access time of the cached entries the targets are made from, upstream first.

        A run served from a cached target reads nothing upstream of it, so without this the
        steps that made it (a fractal, its softened copy) would look unused to ``cache gc`` and
        be evicted first, and the next edit of a later step would recompute them.

        Args:
            cache: the tensor cache.

        Returns:
            How many entries were refreshed.

        Example:
            >>> from minart.recipe import parse_recipe
            >>> p = plan(parse_recipe("size: [8, 8]\\nsteps:\\n  a: {stage: fractal}\\n"
            ...                       "  b: {stage: blend, inputs: [a, a]}"))
            >>> cache = TensorCache("memory://minart-doctest-mark-used")
            >>> _ = render(p, cache=cache)
            >>> p.mark_used(cache), [e.key for e in cache.entries()] == [p.step("a").key,
            ...                                                           p.step("b").key]
            (2, True)
            >>> cache.clear()
            2
        """
        needed: set[str] = set()
        pending = list(self.targets)
        while pending:
            name = pending.pop()
            if name not in needed:
                needed.add(name)
                pending.extend(self.steps[name].inputs)
        return sum(cache.touch(step.key) for name, step in self.steps.items() if name in needed)


def plan(recipe: Any, *, device: str | torch.device = "cpu",
         output_dir: str | os.PathLike | None = None, date: str | None = None) -> Plan:
    """Compute every step's key for ``recipe`` on ``device``.

    Output steps (stages with a ``targets`` hook: ``save_image``, ``encode_video``) also hash the
    absolute paths they will write, so rendering into another folder (or on another ``{date}``)
    writes the files again while everything upstream stays cached.

    Args:
        recipe: a loaded recipe (``minart.recipe.load_recipe``): ``steps`` with ``name``,
            ``stage``, ``inputs``, ``params``; ``seed``; optional ``outputs``.
        device: where stages run; its class (``cpu-float32``, ``cuda-float32``) enters the keys.
        output_dir: folder output files go to (default: the current folder).
        date: the ``{date}`` of output path templates (default: today, UTC); the steps of a run
            expand their paths with this one date, even if they finish after midnight.

    Returns:
        A :class:`Plan`.

    Raises:
        RecipeError: unknown stages or inputs, cycles, output paths leaving ``output_dir``.
        ParamError: parameters with no canonical form, a bad device.

    Example:
        >>> from minart.recipe import parse_recipe
        >>> recipe = parse_recipe("size: [8, 8]\\nsteps:\\n  a: {stage: fractal}\\n"
        ...                       "  b: {stage: perona_malik, input: a, "
        ...                       "params: {steps: 1, kappa: 0.1, dt: 0.2}}")
        >>> p = plan(recipe)
        >>> list(p.steps), p.targets, p.device_class, len(p.steps["b"].key)
        (['a', 'b'], ('b',), 'cpu-float32', 40)
        >>> p.steps["b"].input_keys == (p.steps["a"].key,)
        True
    """
    registry = _registry()
    dclass = device_class(device)
    out = Path(output_dir).resolve() if output_dir is not None else None
    steps = list(recipe.steps)
    files: dict[str, tuple[str, ...]] = {}
    keyed = []
    for step in steps:
        params = step.params
        try:
            written = _output_files(registry.get_stage(step.stage), step, recipe, out, date)
        except MinartError as exc:
            raise exc.at(**_written_at(step, exc.param), step=step.name) from None
        if written is not None:
            files[step.name] = written
            params = {"params": step.params, "files": list(written)}
        keyed.append(_Keyed(step.name, step.stage, tuple(step.inputs), params))
    _check_no_overwritten_inputs(recipe, steps, files)
    _check_memory(steps, device)
    keys = plan_keys(keyed, version_of=lambda s: registry.get_stage(s).version,
                     seed=getattr(recipe, "seed", None), device=dclass)
    by_name = {s.name: s for s in steps}
    planned = {
        name: PlannedStep(name=name, stage=by_name[name].stage, key=keys[name],
                          inputs=tuple(by_name[name].inputs),
                          input_keys=tuple(keys[i] for i in by_name[name].inputs),
                          files=files.get(name, ()))
        for name in topological_order(steps)
    }
    return Plan(recipe=recipe, device=str(device), device_class=dclass, steps=planned,
                targets=tuple(_target_names(recipe, list(planned))), output_dir=out, date=date)


def device_memory(device: str | torch.device) -> int | None:
    """Memory ``device`` can hold in bytes, or ``None`` if unknown.

    CUDA: the GPU's total memory. MPS: Metal's recommended working set. CPU: physical RAM, or
    this process's cgroup memory limit where that is lower (a container's ``--memory``).

    Example:
        >>> device_memory("cpu") > 0
        True
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    if device.type == "mps" and torch.backends.mps.is_available():
        return int(torch.mps.recommended_max_memory())
    if device.type == "cpu":
        try:
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, OSError, ValueError):  # not a POSIX system
            return None
        limit = cgroup_memory_limit()
        return physical if limit is None else min(physical, limit)
    return None


_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup"),
                        membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The lowest memory limit on this process's cgroup and its parents, or ``None``.

    Reads cgroup v2 (``memory.max``) and v1 (``memory/memory.limit_in_bytes``), from the
    process's own group up to the root, as far as this filesystem shows them.

    Args:
        root: where the cgroup filesystem is mounted.
        membership: the process's ``/proc/<pid>/cgroup``.

    Example:
        >>> limit = cgroup_memory_limit()
        >>> limit is None or limit > 0
        True
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    places = []  # (folder of the hierarchy, the group's path in it, limit file)
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            places.append((root, group, "memory.max"))
        elif "memory" in controllers.split(","):
            places.append((root / "memory", group, "memory.limit_in_bytes"))
    limits = []
    for hierarchy, group, name in places:
        folder = Path(group.lstrip("/"))
        for part in (folder, *folder.parents):
            try:
                text = (hierarchy / part / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and 0 < int(text) < _NO_LIMIT:
                limits.append(int(text))
    return min(limits, default=None)


def _check_memory(steps: Sequence[Any], device: str | torch.device) -> None:
    """Refuse a step that cannot fit in the device's memory with its inputs, before any runs.

    Shapes come from the recipe check (:mod:`minart.shapes`). A step holds its inputs while it
    makes its result, so the two together are a floor on what it needs. Only what cannot fit
    at all is refused, so nothing that could render is turned away; what runs short while a
    step works is still reported when it happens.
    """
    from .shapes import describe, nbytes

    total = device_memory(device)
    if not total:
        return
    sizes = {s.name: nbytes(s.shape) for s in steps if getattr(s, "shape", None) is not None}
    for step in steps:
        if step.name not in sizes:
            continue
        held = sum(sizes.get(name, 0) for name in dict.fromkeys(getattr(step, "inputs", ())))
        if sizes[step.name] + held <= total:
            continue
        where = getattr(step, "location", None)
        at = {} if where is None else {"file": where.file, "line": where.line,
                                       "column": where.column}
        beside = f" beside its inputs ({format_size(held)})" if held else ""
        raise ParamError(
            f"this step would make {describe(step.shape)} ({format_size(sizes[step.name])})"
            f"{beside}, more than the {format_size(total)} of memory on {device}; lower its "
            "size, frames or iterations, or render with --preview", step=step.name, **at)


def _protected_files(recipe: Any, steps: Sequence[Any]) -> dict[str, str]:
    """``{absolute path: what it is}`` of the files a run reads: the recipe file (and the one it
    is a copy of, for ``minart reproduce``) and every ``load_image`` step's image."""
    source = getattr(recipe, "path", None)
    base = Path(source).parent if source else Path.cwd()
    protected = {}
    for where in (getattr(recipe, "origin", None), source):
        if where:
            protected[str(Path(where).resolve())] = "the recipe file"
    from .stages import input_path

    for step in steps:
        if step.stage == "load_image":
            protected[str(input_path(step.params, base).resolve())] = (
                f"the input image of step '{step.name}'")
    return protected


def _check_no_overwritten_inputs(recipe: Any, steps: Sequence[Any],
                                 files: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse outputs that would overwrite the recipe file or one of its input images, and an
    output whose path is the folder of another output (``x.png`` and ``x.png/y.png``)."""
    protected = _protected_files(recipe, steps)
    written_by = {f: step.name for step in steps for f in files.get(step.name, ())}
    for step in steps:
        at = {"step": step.name, "param": "path", **_written_at(step, "path")}
        for written in files.get(step.name, ()):
            if written in protected:
                raise RecipeError(
                    f"writing {written} would overwrite {protected[written]}; give the output "
                    "another path or --output-dir", **at)
            for folder in map(str, Path(written).parents):
                if folder in written_by:
                    raise RecipeError(
                        f"writing {written} needs {folder} to be a folder, but step "
                        f"'{written_by[folder]}' writes a file there; give one of the outputs "
                        "another path", **at)


def _recipe_step(plan_: Plan, name: str) -> Any:
    """The plan's recipe step ``name`` (``None`` where its recipe has none of that name)."""
    return next((s for s in getattr(plan_.recipe, "steps", ()) if s.name == name), None)


def _written_at(step: Any, param: str | None = None) -> dict[str, Any]:
    """``file``/``line``/``column`` of a recipe step's ``param`` where the recipe gives it, else
    of the step (an output's entry for ``out.<name>``), for an error's location; empty where the
    step has none (a recipe built in code)."""
    where = getattr(step, "param_locations", {}).get(param) or getattr(step, "location", None)
    if where is None:
        return {}
    return {"file": where.file, "line": where.line, "column": where.column}


def check_report_path(plan_: Plan, path: str | os.PathLike, *, option: str = "report") -> None:
    """Refuse a report path that would overwrite a file the run reads or writes, before it runs.

    Args:
        plan_: the run's plan.
        path: where the JSON report goes.
        option: how the caller names the path in messages (``--report`` on the command line).

    Raises:
        ParamError: ``path`` is the recipe file, an input image, an output file of the run or
            the folder of one.

    Example:
        >>> from minart.recipe import parse_recipe
        >>> p = plan(parse_recipe("size: [8, 8]\\nsteps: {a: {stage: fractal}}\\n"
        ...                       "outputs: {still: {step: a, path: a.png}}"))
        >>> check_report_path(p, "a.png", option="--report")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: --report a.png: writing it would overwrite the output of step 'out.still'; ...
    """
    target = str(Path(path).resolve())
    found = _protected_files(plan_.recipe, list(plan_.recipe.steps)).get(target)
    for step in plan_.steps.values():
        if found:
            break
        if target in step.files:
            found = f"the output of step '{step.name}'"
        elif any(target in map(str, Path(f).parents) for f in step.files):
            found = f"the folder of the output of step '{step.name}'"
    if found:
        raise ParamError(f"{option} {path}: writing it would overwrite {found}; give the report "
                         "another path", param=option)


def check_run_paths(plan_: Plan, *, report: str | os.PathLike | None = None,
                    check_output_dir: bool = False, report_option: str = "report",
                    output_dir_option: str = "output_dir") -> None:
    """Every path check a run makes before its first step (the CLI and the flow share it).

    Args:
        plan_: the run's plan.
        report: the JSON report's path, if one is written.
        check_output_dir: the caller chose ``plan_.output_dir`` (else it is the current folder).
        report_option, output_dir_option: how messages name the two paths.

    Raises:
        ParamError: see :func:`check_report_path`, :func:`check_writable_file`,
            :func:`check_folder_option` and :func:`check_output_files`.
    """
    if report is not None:
        check_report_path(plan_, report, option=report_option)
        check_writable_file(Path(report), report_option)
    if check_output_dir:
        check_folder_option(Path(plan_.output_dir), output_dir_option)
    check_output_files(plan_)


def check_output_files(plan_: Plan) -> None:
    """Refuse an output path that is a folder, or lies under a file, before any step runs.

    The writer step would otherwise fail only once every step before it had run.

    Args:
        plan_: the run's plan.

    Raises:
        ParamError: an output file of ``plan_`` is an existing folder, or one of its parent
            folders is a file.
    """
    for step in plan_.steps.values():
        for written in map(Path, step.files):
            there = next(p for p in (written, *written.parents) if p.exists())
            if there == written and written.is_dir():
                problem = "is a folder"
            elif there != written and not there.is_dir():
                problem = f"needs {there} to be a folder, but it is a file"
            else:
                continue
            raise ParamError(f"output {written} {problem}; move it away, or give the output "
                             "another path or output folder", step=step.name, param="path",
                             **_written_at(_recipe_step(plan_, step.name), "path"))


def check_writable_file(path: Path, option: str) -> None:
    """Refuse a file option that cannot be written, before any work is done.

    Raises:
        ParamError: ``path`` is a folder, or its folder cannot be created or written.

    Example:
        >>> check_writable_file(Path("/"), "--report")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: --report /: is a folder; give a file path
    """
    if path.is_dir():
        raise ParamError(f"{option} {path}: is a folder; give a file path", param=option)
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)  # the file goes there anyway
    except OSError as exc:
        raise ParamError(f"{option} {path}: cannot create its folder ({exc.strerror or exc})",
                         param=option) from None
    problem = _probe_writes(parent)
    if problem:
        raise ParamError(f"{option} {path}: {parent} is not a writable folder ({problem})",
                         param=option)


def check_folder_option(path: Path, option: str) -> None:
    """Refuse a folder option that names a file, or a folder that cannot be made or written,
    before any work is done (the folder itself is created later, by whoever writes into it).

    The check creates the missing folders and a file in the deepest one, then removes what it
    created: ``os.access`` says yes to root everywhere, also where nothing can be created
    (``/proc``, a read-only mount), and a run would then compute every step and fail only at
    its writer.

    Raises:
        ParamError: ``path``, or the nearest of its parents that exists, is not a folder, or
            the folder cannot be created or written.

    Example:
        >>> check_folder_option(Path("/dev/null"), "--output-dir")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: --output-dir /dev/null: is a file, not a folder; give a folder ...
    """
    absolute = path.absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == absolute else f"{existing} is a file"
        raise ParamError(f"{option} {path}: {where}, not a folder; give a folder (it is created "
                         "if missing)", param=option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParamError(f"{option} {path}: {existing} is not a writable folder", param=option)
    made: list[Path] = []  # the folders the probe creates, deepest last
    folder = absolute
    try:
        for folder in reversed([p for p in (absolute, *absolute.parents)
                                if p.is_relative_to(existing) and p != existing]):
            folder.mkdir()
            made.append(folder)
    except FileExistsError:  # made by someone else meanwhile: theirs, and fine
        pass
    except OSError as exc:
        _remove_folders(made)
        what = "it" if folder == absolute else str(folder)
        raise ParamError(f"{option} {path}: cannot create {what} ({exc.strerror or exc}); give "
                         "a folder that can be created", param=option) from None
    problem = _probe_writes(absolute if absolute.is_dir() else made[-1] if made else existing)
    _remove_folders(made)
    if problem:
        raise ParamError(f"{option} {path}: {existing} is not a writable folder ({problem})",
                         param=option)


def _probe_writes(folder: Path) -> str | None:
    """Create and remove a file in ``folder``; why that failed, else ``None``."""
    probe = folder / f".minart-probe-{os.urandom(6).hex()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        return exc.strerror or str(exc)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _remove_folders(made: list[Path]) -> None:
    """Remove the folders a probe created, deepest first, where they are still empty."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _output_files(stage: Any, step: Any, recipe: Any, output_dir: Path | None,
                  date: str | None) -> tuple[str, ...] | None:
    """Absolute paths an output step will write (its stage's ``targets`` hook), else ``None``."""
    hook = getattr(stage, "targets", None)
    if hook is None:
        return None
    ctx = _base_context(recipe, step.name, device=torch.device("cpu"), output_dir=output_dir,
                        date=date)
    return tuple(str(Path(f).resolve()) for f in hook(step.params, ctx))


@dataclass(frozen=True)
class _Keyed:
    name: str
    stage: str
    inputs: tuple[str, ...]
    params: Any


def resolve_device(device: str | torch.device | None) -> str:
    """``"auto"`` (or ``None``) becomes ``"cuda"`` when a GPU is present, else ``"cpu"``; any
    other device is returned as given once torch confirms this machine has it.

    Raises:
        ParamError: not a torch device, or not one this machine has (``cuda`` without a GPU).

    Example:
        >>> resolve_device("cpu")
        'cpu'
        >>> resolve_device("cuda:99")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: device='cuda:99' is not available: ...
    """
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    try:
        kind = torch.device(name)
    except (RuntimeError, ValueError):
        raise ParamError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N",
                         param="device") from None
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParamError(f"device={name!r} is not available: torch finds no CUDA GPU on "
                             "this machine; use device: auto (or --device cpu)", param="device")
        if kind.index is not None and kind.index >= count:
            raise ParamError(f"device={name!r} is not available: this machine has {count} CUDA "
                             f"GPU(s), cuda:0 to cuda:{count - 1}", param="device")
    elif kind.type == "mps" and not torch.backends.mps.is_available():
        raise ParamError(f"device={name!r} is not available on this machine; use device: auto",
                         param="device")
    return name


def overrides_list(overrides: Mapping[str, Any] | Iterable[str] | None) -> tuple[str, ...]:
    """Overrides as ``"dotted.path=value"`` strings (mapping values written as JSON, a YAML subset).

    Example:
        >>> overrides_list({"steps.a.params.power": 5, "steps.a.params.palette": "ocean"})
        ('steps.a.params.power=5', 'steps.a.params.palette=ocean')
        >>> overrides_list(["seed=3"])
        ('seed=3',)
    """
    if not overrides:
        return ()
    if isinstance(overrides, Mapping):
        return tuple(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in overrides.items())
    return tuple(overrides)


def overrides_dict(overrides: Iterable[str]) -> dict[str, str]:
    """``"dotted.path=value"`` strings as an ordered mapping that applies like the list.

    A later override of a path replaces earlier ones of the same path and of paths inside it, so
    the mapping (what the flow and a deployment take) gives the recipe the list gives.

    Example:
        >>> overrides_dict(["size=[64, 64]", "size.0=40", "size=[16, 16]", "seed=3"])
        {'size': '[16, 16]', 'seed': '3'}
        >>> overrides_dict(["size=[16, 16]", "size.0=40"])
        {'size': '[16, 16]', 'size.0': '40'}
    """
    folded: dict[str, str] = {}
    for item in overrides:
        path, _, value = item.partition("=")
        for old in [k for k in folded if k == path or k.startswith(path + ".")]:
            del folded[old]
        folded[path] = value
    return folded


def _input_stamps(plan_: Plan) -> tuple:
    """``(path, mtime_ns, size, inode)`` of every file the plan's ``load_image`` steps read."""
    recipe = plan_.recipe
    folder = Path(recipe.path).parent if getattr(recipe, "path", None) else Path.cwd()
    stamps = []
    for step in getattr(recipe, "steps", ()):
        if step.stage == "load_image":
            path = _stages_module().input_path(step.params, folder)
            try:
                info = os.stat(path)
                stamps.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                stamps.append((str(path),))
    return tuple(stamps)


@functools.lru_cache(maxsize=16)
def _load_plan_cached(path: str, stamp: tuple, overrides: tuple[str, ...], preview: int,
                      device: str, output_dir: str | None, day: str, shown: str,
                      origin: str | None = None) -> tuple[Plan, tuple]:
    plan_ = _load_plan_uncached(path, overrides, preview, device, output_dir, day, shown, origin)
    return plan_, _input_stamps(plan_)


def _load_plan_uncached(path: str, overrides: tuple[str, ...], preview: int, device: str,
                        output_dir: str | None, day: str, shown: str,
                        origin: str | None) -> Plan:
    recipe = _recipe_module().load_recipe(path if os.path.isabs(shown) else shown, overrides)
    if origin:
        recipe = dataclasses.replace(recipe, origin=Path(origin), _by_name={})
    if preview > 1:
        recipe = recipe.preview(preview)
    try:
        device = resolve_device(device or getattr(recipe, "device", None))
    except ParamError as exc:
        raise exc.at(file=None if device else shown) from None  # the recipe's device: line
    return plan(recipe, device=device, output_dir=output_dir, date=day)


def _preview_factor(preview: bool | int) -> int:
    if isinstance(preview, bool):
        return 4 if preview else 1
    if not isinstance(preview, int) or preview < 1:
        raise ParamError(f"preview={preview!r} must be true, false or a whole factor >= 1",
                         param="preview")
    return preview


def output_folder(output_dir: str | os.PathLike, date: str) -> str:
    """``output_dir`` with ``{date}`` replaced by ``date``: one folder per night for a schedule.

    Args:
        output_dir: a folder path, which may hold ``{date}`` (``renders/nightly/{date}``).
        date: the run's date, ``YYYY-MM-DD``.

    Returns:
        The folder path (not made absolute).

    Raises:
        ParamError: ``output_dir`` holds another ``{field}``, or an unpaired brace.

    Example:
        >>> output_folder("renders/nightly/{date}", "2026-11-27")
        'renders/nightly/2026-11-27'
        >>> output_folder("renders/{name}", "2026-11-27")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: output folder 'renders/{name}': unknown field {name}; ...
    """
    return _expand_date(os.fspath(output_dir), date, what="output folder", param="output_dir",
                        only="the folder may use {date} only (the outputs' own paths take "
                             "{name}, {seed}, {step})")


def report_path(report: str | os.PathLike, date: str, *, option: str = "report") -> str:
    """``report`` with ``{date}`` replaced by ``date``, by :func:`output_folder`'s rules.

    Args:
        report: where the run's JSON report goes; may hold ``{date}`` (``reports/{date}.json``).
        date: the run's date, ``YYYY-MM-DD``.
        option: how messages name the path (``--report`` on the command line).

    Returns:
        The report's path (not made absolute).

    Raises:
        ParamError: ``report`` holds another ``{field}``, or an unpaired brace.

    Example:
        >>> report_path("reports/{date}.json", "2026-11-27")
        'reports/2026-11-27.json'
        >>> report_path("reports/{name}.json", "2026-11-27", option="--report")
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: --report 'reports/{name}.json': unknown field {name}; ...
    """
    return _expand_date(os.fspath(report), date, what=option, param=option,
                        only="the report path may use {date} only (the run's date, UTC)")


def _expand_date(text: str, date: str, *, what: str, param: str, only: str) -> str:
    """``text`` with ``{date}`` replaced; any other field or a lone brace is a ParamError."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text)
                  if f is not None]
    except ValueError:  # "Single '}' encountered in format string"
        raise ParamError(f"{what} {text!r}: a brace with no partner; write {{date}} for "
                         "the run's date, {{ or }} for a brace", param=param) from None
    unknown = [f"{{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
               for f, spec, conv in fields if (f, spec, conv) != ("date", "", None)]
    if unknown:
        raise ParamError(f"{what} {text!r}: unknown field {unknown[0]}; {only}", param=param)
    return text.format(date=date)


def load_plan(path: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None,
              *, preview: bool | int = False, device: str | None = None,
              output_dir: str | os.PathLike | None = None, date: str | None = None,
              origin: str | os.PathLike | None = None) -> Plan:
    """Load, validate and plan a recipe file (memoised per file version, overrides and device).

    Args:
        path: the recipe YAML.
        overrides: ``["steps.a.params.kappa=0.1", ...]`` or ``{"steps.a.params.kappa": 0.1}``.
        preview: plan the recipe's quick preview variant instead (``True``: 4x smaller; an
            integer: that factor).
        device: where stages run (default: the recipe's ``device``; ``auto`` picks CUDA if
            present).
        output_dir: folder output files go to (default: the current folder).
        date: the ``{date}`` of output path templates, ``YYYY-MM-DD`` (default: today, UTC);
            a run fixes it once so that steps finishing after midnight keep their keys.
        origin: the file ``path`` is a copy of (``minart reproduce``), recorded in outputs as
            the recipe's path.

    Returns:
        A :class:`Plan`.

    Raises:
        RecipeError, ParamError: the recipe does not validate.

    Example:
        >>> load_plan("no/such/recipe.yaml")
        Traceback (most recent call last):
        ...
        minart.errors.RecipeError: no/such/recipe.yaml: no such recipe file
    """
    checkpoint_seconds()  # a bad $MINART_CHECKPOINT_SECONDS stops the run before any step
    shown = path = os.fspath(path)
    try:
        info = os.stat(path)
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = ()
    day = date or time.strftime("%Y-%m-%d", time.gmtime())  # output templates may use {date}
    out = os.path.abspath(output_folder(output_dir, day)) if output_dir is not None else os.getcwd()
    args = (os.path.abspath(path), stamp, overrides_list(overrides), _preview_factor(preview),
            None if device is None else str(device), out, day, shown,
            None if origin is None else os.path.abspath(origin))
    found, inputs = _load_plan_cached(*args)
    if _input_stamps(found) != inputs:  # an input image changed: its SHA-256 enters the keys
        _load_plan_cached.cache_clear()
        found, _ = _load_plan_cached(*args)
    return found


# -- running -------------------------------------------------------------------------------------


def _base_context(recipe: Any, step: str, *, device: torch.device, output_dir: Path | None,
                  **extra: Any) -> Any:
    registry = _registry()
    recipe_path = getattr(recipe, "path", None)
    candidates = {
        "seed": getattr(recipe, "seed", None),
        "device": device,
        "size": getattr(recipe, "size", None),
        "recipe_dir": Path(recipe_path).parent if recipe_path else Path.cwd(),
        "output_dir": output_dir,
        "recipe": recipe,
        "step": step,
        **extra,
    }
    context_cls = registry.StageContext
    names = {f.name for f in dataclasses.fields(context_cls)}
    return context_cls(**{k: v for k, v in candidates.items() if k in names and v is not None})


_STOP = threading.Event()


def request_stop() -> None:
    """Ask the steps running in this process to stop at their next progress report.

    Long stages (diffusion, minimization, fractal clips) report progress as they iterate; the
    report after this call raises :class:`~minart.errors.Interrupted` in the step instead. What
    the step had checkpointed stays in the cache, so running the recipe again resumes it. The
    CLI calls this on Ctrl-C; :func:`clear_stop` ends the request.

    Example:
        >>> request_stop(); stop_requested(), clear_stop(), stop_requested()
        (True, None, False)
    """
    _STOP.set()


def clear_stop() -> None:
    """Withdraw :func:`request_stop`: later steps run to their end again."""
    _STOP.clear()


def stop_requested() -> bool:
    """Whether :func:`request_stop` is in force."""
    return _STOP.is_set()


def _make_context(plan_: Plan, step: PlannedStep, *, cache: TensorCache,
                  progress: ProgressFn | None) -> Any:
    device = torch.device(plan_.device)
    generator = torch.Generator(device=device).manual_seed(
        step_seed(getattr(plan_.recipe, "seed", None)))

    def report(done: int, total: int) -> None:
        if _STOP.is_set():
            raise Interrupted(f"stopped on request at {done} of {total}; what it checkpointed "
                              "is kept: run the recipe again to resume", step=step.name)
        if progress is not None:
            progress(step.name, done, total)

    return _base_context(plan_.recipe, step.name, device=device, output_dir=plan_.output_dir,
                         date=plan_.date, generator=generator, progress=report,
                         checkpoint=Checkpoint(cache, step.key, step=step.name, stage=step.stage))


_ALIAS = "minart.alias"
"""Entry metadata of an output step whose result is its input's (stored once, under the input)."""

_FILES = "minart.files"
"""Entry metadata of an output step: JSON ``{absolute path: {sha256, size, mtime_ns, inode}}`` of
the files it wrote."""


def _file_digest(path: str | os.PathLike) -> str:
    from .stages import file_sha256

    return file_sha256(Path(path))


def _file_record(path: str) -> dict[str, Any]:
    """What :meth:`PlannedStep.files_current` checks a written file against later."""
    info = os.stat(path)
    return {"sha256": _file_digest(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "inode": info.st_ino}


def _path_lock_key(path: str) -> str:
    """Cache lock name of an output file (held while a step writes and hashes it)."""
    return "file-" + hashlib.sha256(path.encode("utf-8")).hexdigest()[:40]


def _cached(cache: TensorCache, step: PlannedStep) -> bool:
    """A verified hit whose output files (if any) are the ones it wrote; raises CacheError if
    the entry is corrupt."""
    found = cache.get_tensors(step.key)
    return found is not None and step.files_current(found[1])


def _out_of_memory(exc: BaseException) -> bool:
    """Whether a torch error is an allocation failure (CPU allocator or CUDA out of memory)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    text = str(exc)
    return (oom is not None and isinstance(exc, oom)) or "can't allocate memory" in text or (
        "out of memory" in text.lower())


def _memory_detail(exc: BaseException) -> str:
    """``"it asked for 32.2 TB"`` from torch's allocation error, else its first line."""
    asked = re.search(r"allocate (\d+) bytes", str(exc))
    if asked:
        return f"it asked for {format_size(int(asked.group(1)))}"
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _load_input(plan_: Plan, name: str, *, cache: TensorCache, progress: ProgressFn | None,
                log, found: list[StepResult]) -> Tensor:
    step = plan_.steps[name]
    try:
        found_entry = cache.get_tensors(step.key)
        tensor = None
        if found_entry is not None:
            tensors, meta = found_entry
            if _ALIAS in meta and step.inputs:  # an output step stored no copy of its input
                return _load_input(plan_, step.inputs[0], cache=cache, progress=progress,
                                   log=log, found=found)
            tensor = tensors.get("result")
    except CacheError as exc:
        log.warning("step '%s': %s; recomputing it", name, exc)
        cache.delete(step.key)
        found.append(StepResult(name, step.stage, step.key, "corrupt", corrupt=1))
        tensor = None
    if tensor is None:
        result = run_step(plan_, name, cache=cache, progress=progress, log=log)
        found.append(result)
        stored = cache.get_tensors(step.key)
        if stored is None:
            raise CacheError(f"step '{name}': result vanished from the cache right after it was "
                             "stored; is another process clearing it?")
        tensors, meta = stored
        if _ALIAS in meta and step.inputs:  # an output step: its result is its input's
            return _load_input(plan_, step.inputs[0], cache=cache, progress=progress, log=log,
                               found=found)
        tensor = tensors.get("result")
        if tensor is None:
            raise CacheError(f"cache entry {step.key} holds no result tensor")
    return tensor.to(plan_.device)


def run_step(plan_: Plan, name: str, *, cache: TensorCache, progress: ProgressFn | None = None,
             log: logging.Logger | logging.LoggerAdapter | None = None) -> StepResult:
    """Produce step ``name``'s result in the cache: a hit, or load inputs, run the stage, store.

    Holds the step's cache lock throughout, so a second run of the same step waits and then
    finds the result. Missing or corrupt inputs are recomputed (and reported) on the way.

    Args:
        plan_: the planned recipe.
        name: the step to run.
        cache: the tensor cache.
        progress: ``progress(step, done, total)`` for long stages.
        log: logger (Prefect's run logger inside a task).

    Returns:
        A :class:`StepResult` (``status`` ``"cached"`` or ``"computed"``).

    Raises:
        MinartError: the stage rejects its inputs or parameters.
        CacheError: the cache cannot be written.

    Example:
        >>> from minart.recipe import parse_recipe
        >>> p = plan(parse_recipe("size: [8, 8]\\nsteps: {a: {stage: fractal}}"))
        >>> cache = TensorCache("memory://minart-doctest-run-step")
        >>> run_step(p, "a", cache=cache).status, run_step(p, "a", cache=cache).status
        ('computed', 'cached')
        >>> cache.get(p.steps["a"].key).shape, cache.clear()
        (torch.Size([3, 8, 8]), 1)
    """
    log = log or _LOG
    step = plan_.step(name)
    stage = _registry().get_stage(step.stage)
    with cache.lock(step.key):
        corrupt = 0
        try:
            if _cached(cache, step):
                return StepResult(name, step.stage, step.key, "cached", outputs=step.files)
        except CacheError as exc:
            log.warning("step '%s': %s; recomputing it", name, exc)
            cache.delete(step.key)
            corrupt = 1
        start = time.perf_counter()
        found: list[StepResult] = []
        inputs = [_load_input(plan_, source, cache=cache, progress=progress, log=log, found=found)
                  for source in step.inputs]
        ctx = _make_context(plan_, step, cache=cache, progress=progress)
        checkpoint = getattr(ctx, "checkpoint", None)
        written_as = _recipe_step(plan_, name)
        log.info("step '%s' (%s): computing", name, step.stage)
        with contextlib.ExitStack() as held:
            # a kernel timing its shapes or a CPU step compiling says so in this step's log
            held.enter_context(notes_to(lambda text: log.info("step '%s': %s", name, text)))
            # another recipe writing the same file waits, so each entry records its own bytes
            for path in sorted(step.files):
                held.enter_context(cache.lock(_path_lock_key(path)))
                # no other writer of this file is at work now: what a killed one left goes
                for stale in _remove_stale_temp_files(path):
                    log.info("step '%s': removed %s, left by a writer that was killed", name,
                             stale)
            at = _written_at(written_as)  # the step in the recipe
            try:
                result = stage.run(inputs, written_as.params, ctx)
            except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not isinstance(exc, MemoryError) and not _out_of_memory(exc):
                    raise
                raise ParamError(
                    f"not enough memory on {plan_.device} for this step ({_memory_detail(exc)}); "
                    "lower its size, frames or iterations, or render with --preview",
                    step=name, **at) from None
            except MinartError as exc:
                if exc.file is None:
                    exc.at(**_written_at(written_as, exc.param))
                raise exc.at(step=name) from None
            if not isinstance(result, Tensor):
                raise CacheError(f"step '{name}': stage {step.stage!r} returned "
                                 f"{type(result).__name__}, not a tensor")
            info = {"step": name, "stage": step.stage, "recipe": plan_.label}
            written = [str(Path(f).resolve()) for f in getattr(ctx, "written", ()) or ()]
            if step.files or written:
                info[_FILES] = json.dumps({f: _file_record(f) for f in dict.fromkeys(
                    [*step.files, *written])})
        if step.files and inputs and result is inputs[0]:
            # an output stage returns its input: store a reference, not a second copy
            cache.put(step.key, torch.empty(0), info={**info, _ALIAS: step.input_keys[0]})
        else:
            cache.put(step.key, result, info=info)
        if checkpoint is not None:
            checkpoint.delete()
        seconds = time.perf_counter() - start
        outputs = step.files or tuple(written)
        resumed = getattr(checkpoint, "resumed_from", None)
        log.info("step '%s' (%s): computed in %.2f s%s", name, step.stage, seconds,
                 f" (resumed from its checkpoint at iteration {resumed})" if resumed else "")
        return StepResult(
            name, step.stage, step.key, "computed", seconds=seconds, outputs=outputs,
            corrupt=corrupt + getattr(checkpoint, "dropped", 0) + sum(r.corrupt for r in found),
            recomputed=tuple(r.step for r in found if r.status == "computed")
            + tuple(x for r in found for x in r.recomputed),
            resumed_from=resumed)


def render(plan_: Plan, *, cache: TensorCache, progress: ProgressFn | None = None,
           log: logging.Logger | logging.LoggerAdapter | None = None) -> RunReport:
    """Render a planned recipe in this process, step by step (the path without Prefect).

    Args:
        plan_: the planned recipe (its ``output_dir`` says where files go).
        cache: the tensor cache.
        progress: ``progress(step, done, total)`` for long stages.
        log: where info and warnings go.

    Returns:
        A :class:`RunReport` listing every step (computed, cached or skipped).

    Raises:
        MinartError: a stage rejects its inputs or parameters; the cache is unusable.

    Example:
        >>> from minart.recipe import parse_recipe
        >>> p = plan(parse_recipe("size: [8, 8]\\nsteps:\\n  a: {stage: fractal}\\n"
        ...                       "  b: {stage: perona_malik, input: a, "
        ...                       "params: {steps: 1, kappa: 0.1, dt: 0.2}}"))
        >>> cache = TensorCache("memory://minart-doctest-render")
        >>> render(p, cache=cache).computed, render(p, cache=cache).computed
        (['a', 'b'], [])
        >>> [s.status for s in render(p, cache=cache).steps], cache.clear()
        (['skipped', 'cached'], 2)
    """
    start = time.perf_counter()
    to_run, status, corrupt = plan_.schedule(cache, log=log)
    results: dict[str, StepResult] = {}
    for name in to_run:
        if status[name] == "cached":  # verified by schedule(): nothing to load or run
            step = plan_.steps[name]
            results[name] = StepResult(name, step.stage, step.key, "cached", outputs=step.files)
        else:
            results[name] = run_step(plan_, name, cache=cache, progress=progress, log=log)
    plan_.mark_used(cache)
    report = RunReport(recipe=plan_.label, device=plan_.device_class, corrupt_found=corrupt)
    for name, step in plan_.steps.items():
        report.steps.append(results.get(name) or StepResult(name, step.stage, step.key, "skipped"))
    report.seconds = time.perf_counter() - start
    return report


# -- reproducing outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedRecipe:
    """The recipe an output file carries (PNG text metadata or a video's JSON sidecar)."""

    text: str
    path: str | None = None
    overrides: tuple[str, ...] = ()
    preview: int = 1
    inputs: tuple[tuple[str, str], ...] = ()
    """``(step, sha256)`` of every ``load_image`` step's file when the output was rendered."""

    def input_checks(self) -> tuple[str, ...]:
        """Overrides that make each ``load_image`` step refuse a file other than the one the
        output was rendered from (by its SHA-256), instead of rendering a different picture."""
        return tuple(f"steps.{step}.params.sha256={digest}" for step, digest in self.inputs)

    def materialize(self, folder: str | os.PathLike) -> Path:
        """The recipe file to render: the original when it still holds exactly this text,
        else a copy written into ``folder``, beside links to the original folder's input
        images, so relative ``load_image`` paths find the same files."""
        if self.path and os.path.isfile(self.path):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if Path(self.path).read_text(encoding="utf-8") == self.text:
                    return Path(self.path)
        relative = self._relative_inputs()
        depth = max((Path(p).parts.count("..") for p in relative), default=0)
        home = Path(folder).joinpath(*[f"up{i}" for i in range(depth)])  # room for "../" paths
        target = home / (Path(self.path).name if self.path else "reproduced.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.text, encoding="utf-8")
        if self.path:
            for rel in relative:
                source = Path(self.path).parent / rel
                place = Path(os.path.normpath(home / rel))
                if source.exists() and not place.exists():
                    place.parent.mkdir(parents=True, exist_ok=True)
                    place.symlink_to(source.resolve())
        return target

    def _relative_inputs(self) -> list[str]:
        """Relative ``path`` values of the recipe's ``load_image`` steps (best effort: a text
        that does not parse gets none, and the render reports its error)."""
        try:
            data = yaml.safe_load(self.text)
        except yaml.YAMLError:
            return []
        steps = data.get("steps") if isinstance(data, dict) else None
        found = []
        for body in (steps.values() if isinstance(steps, dict) else ()):
            if isinstance(body, dict) and body.get("stage") == "load_image":
                path = (body.get("params") or {}).get("path") if isinstance(
                    body.get("params"), dict) else None
                if isinstance(path, str) and not os.path.isabs(os.path.expanduser(path)):
                    found.append(path)
        return found


def embedded_recipe(path: str | os.PathLike) -> EmbeddedRecipe:
    """Read the recipe embedded in an output of ``minart run``.

    Images carry it in text metadata (``minart_recipe``, ``minart_recipe_path``,
    ``minart_overrides`` as a JSON list, ``minart_preview`` the preview factor); videos in the
    ``<file>.json`` sidecar with the same keys.

    Args:
        path: an image or video written by a render.

    Returns:
        An :class:`EmbeddedRecipe`.

    Raises:
        MediaError: the file is missing or unreadable, or carries no recipe.
    """
    from .errors import MediaError

    target = Path(path)
    if not target.is_file():
        raise MediaError("is not a regular file; give a PNG 'minart run' wrote, or a video with "
                         "its .json sidecar" if target.exists() else "no such file",
                         file=str(target))
    from .video import read_sidecar, sidecar_path

    meta: Mapping[str, Any] | None = None
    if target.suffix.lower() in (".webm", ".mp4", ".gif", ".mkv", ".mov"):
        meta = read_sidecar(target)
    from_sidecar = meta is not None
    if meta is None:
        from .io import read_metadata

        try:
            meta = read_metadata(target)
        except MediaError:
            meta = read_sidecar(target)
            if meta is None:
                raise
            from_sidecar = True
    meta = {str(k).replace(":", "_"): v for k, v in (meta or {}).items()}
    text = meta.get("minart_recipe")
    if not isinstance(text, str) or not text.strip():
        if from_sidecar:
            raise MediaError("holds no minart_recipe text, so it is not the sidecar 'minart run' "
                             "wrote for this video (or it was edited); render the video again",
                             file=str(sidecar_path(target)))
        raise MediaError("carries no minart recipe (render it with save_image's embed_recipe: "
                         "true, or look for its .json sidecar)", file=str(target))
    overrides = meta.get("minart_overrides") or ()
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except ValueError:
            raise MediaError("minart_overrides is not a JSON list", file=str(target)) from None
    if overrides is None:
        overrides = ()
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise MediaError("minart_overrides is not a JSON list of 'path=value' strings",
                         file=str(target))
    try:
        preview = int(meta.get("minart_preview") or 1)
    except (TypeError, ValueError):
        raise MediaError("minart_preview is not a whole number", file=str(target)) from None
    if preview < 1:
        raise MediaError(f"minart_preview={preview} is not a preview factor (>= 1)",
                         file=str(target))
    inputs = meta.get("minart_inputs") or "{}"
    try:
        inputs = json.loads(inputs) if isinstance(inputs, str) else inputs
    except ValueError:
        inputs = None
    if not isinstance(inputs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        raise MediaError("minart_inputs is not a JSON object of step: sha256", file=str(target))
    return EmbeddedRecipe(text=text, path=str(meta.get("minart_recipe_path") or "") or None,
                          overrides=tuple(str(o) for o in overrides), preview=preview,
                          inputs=tuple(sorted(inputs.items())))
