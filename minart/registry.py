"""The stage registry: every operation a recipe step can name, defined once.

A :class:`Stage` ties together the snake_case name artists write in YAML (also the library
function's name and the task-run name), the pydantic model of its parameters (whose fields are the
function's keyword arguments), what it consumes and produces, and the callable that runs it::

    stage.run(inputs: list[Tensor], params: BaseModel, ctx: StageContext) -> Tensor

Stages register themselves in :mod:`minart.stages` when ``minart`` is imported; :func:`get_stage`
looks one up and :func:`stages` lists them. Kinds of data flowing between steps:

``"image"``  a ``(C, H, W)`` float tensor in [0, 1];
``"frames"`` a ``(T, C, H, W)`` clip;
``"none"``   (as the only consumed kind) a generator that takes no input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import Tensor

from ._checks import suggest
from .errors import RecipeError

__all__ = [
    "CheckContext",
    "Kind",
    "Stage",
    "StageContext",
    "get_stage",
    "register",
    "stages",
    "suggest",
]

Kind = Literal["image", "frames"]
"""What a step produces: one ``(C, H, W)`` image or a ``(T, C, H, W)`` clip."""

_KINDS = ("image", "frames")


@dataclass
class StageContext:
    """What a stage needs from its run besides inputs and parameters.

    Args:
        seed: the recipe's seed.
        device: where to compute (already resolved: ``auto`` has become ``cpu`` or ``cuda``).
        size: the recipe's default ``(width, height)``.
        generator: a seeded ``torch.Generator`` on ``device``, the step's only source of noise.
        progress: ``progress(done, total)`` for long stages, or ``None``.
        recipe_dir: folder that relative input paths (``load_image``) are resolved against.
        output_dir: folder that output path templates are confined to (``None``: current folder).
        recipe: the loaded :class:`minart.recipe.Recipe` (outputs embed its text), or ``None``.
        step: the name of the step being run.
        checkpoint: resumable state for long stages (see :class:`minart.engine.Checkpoint`).
        written: files the stage wrote; output stages append to it.
        date: the ``{date}`` of output path templates (``YYYY-MM-DD``; ``None``: today, UTC),
            fixed once per run.
    """

    seed: int | None = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    size: tuple[int, int] = (256, 256)
    generator: torch.Generator | None = None
    progress: Callable[[int, int], None] | None = None
    recipe_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    recipe: Any = None
    step: str = ""
    checkpoint: Any = None
    written: list[Path] = field(default_factory=list)
    date: str | None = None


@dataclass(frozen=True)
class CheckContext:
    """What a stage's check hook may look at: the recipe around the step, without running it.

    Args:
        recipe_dir: folder of the recipe file (relative input paths are resolved against it).
        size: the recipe's ``(width, height)``.
        input_kinds: kinds of the step's inputs, in order.
        input_shapes: shapes of the step's inputs, in order: ``(C, H, W)`` for an image,
            ``(T, C, H, W)`` for a clip (given to ``shape`` hooks, which run only when every
            input's shape is known).
        input_names: names of the steps the inputs come from, for messages.
        warnings: what :meth:`warn` noted, ``(message, parameter)`` pairs.
    """

    recipe_dir: Path
    size: tuple[int, int]
    input_kinds: tuple[str, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_names: tuple[str, ...] = ()
    warnings: list[tuple[str, str | None]] = field(default_factory=list, compare=False)

    def warn(self, message: str, *, param: str | None = None) -> None:
        """Note something valid that is probably not what the artist meant (a parameter with no
        effect): the recipe still loads, and ``minart check``/``run`` print the message located
        at ``param``'s line."""
        self.warnings.append((message, param))


@dataclass(frozen=True)
class Stage:
    """One registered operation.

    Args:
        name: snake_case key artists write as ``stage:``; also the ops function name.
        params: pydantic model (``extra="forbid"``) of the keyword arguments.
        run: ``run(inputs, params, ctx) -> Tensor``.
        summary: one line for ``minart stages``.
        consumes: kinds each input may have (``("none",)`` for generators).
        produces: ``"image"``, ``"frames"`` or ``"same"`` (frames if any input is frames).
        inputs: names of the inputs, for help and error messages (``()`` for generators).
        variadic: the last input may repeat (``concatenate``, ``grid``); at least one is needed.
        optional: how many of the last ``inputs`` a step may leave out (``blend``'s ``mask``).
        version: bump when the same parameters give different pixels (it enters cache keys).
        check: optional hook ``check(params, ctx: CheckContext) -> dict | None`` run when the
            recipe is checked, without doing the work: it raises
            :class:`~minart.errors.ParamError` for cross-field problems and may return field
            updates that resolve defaults from the recipe (sizes, input checksums).
        preview: optional ``preview(params, factor) -> dict`` of field updates that make a
            render ``factor`` times smaller in each dimension look like the full one.
        targets: optional hook ``targets(params, ctx) -> [Path]``: the files an output stage
            will write (the engine puts them in the step's cache key).
        shape: optional hook ``shape(params, ctx: CheckContext) -> tuple | None``: the shape of
            the step's result from its inputs' shapes (``ctx.input_shapes``), computed when the
            recipe is checked, without running anything. It raises
            :class:`~minart.errors.ShapeError` or :class:`~minart.errors.ParamError` for inputs
            that the stage would refuse at run time (sizes that differ, a clip of the wrong
            length), so such a recipe fails before any step runs; ``None`` means unknown.
        per_frame: optional hook ``per_frame(params) -> [{param: value, ...}, ...]`` for a stage
            whose clip has a frame per value of some parameters (a sweep): the values each frame
            was made with. A grid label's ``{step.param}`` then gives a caption per frame
            (:mod:`minart.labels`).
        function: ``"module:function"`` of the library function whose keyword arguments the
            params mirror (``minart describe`` shows its docstring; tests compare signatures).
        doc: the longer description shown by ``minart describe``.
    """

    name: str
    params: type[BaseModel]
    run: Callable[[list[Tensor], BaseModel, StageContext], Tensor]
    summary: str
    consumes: tuple[str, ...]
    produces: str
    inputs: tuple[str, ...] = ()
    variadic: bool = False
    optional: int = 0
    version: int = 1
    check: Callable[[BaseModel, CheckContext], Mapping[str, Any] | None] | None = None
    preview: Callable[[BaseModel, int], dict[str, Any]] | None = None
    targets: Callable[[BaseModel, StageContext], Sequence[Path]] | None = None
    shape: Callable[[BaseModel, CheckContext], tuple[int, ...] | None] | None = None
    per_frame: Callable[[BaseModel], Sequence[Mapping[str, Any]]] | None = None
    function: str = ""
    doc: str = ""

    @property
    def generator(self) -> bool:
        """True for stages that take no input (``fractal``, ``load_image``)."""
        return self.consumes == ("none",)

    def accepts(self, count: int) -> bool:
        """Whether the stage takes ``count`` inputs (generators none, variadic stages at least
        ``len(inputs)``, the others ``len(inputs)``, or fewer by up to ``optional``).

        Args:
            count: number of inputs a step gives it.

        Returns:
            ``True`` when the count fits.

        Example:
            >>> [get_stage("blend").accepts(n) for n in (1, 2, 3, 4)]  # base, top[, mask]
            [False, True, True, False]
        """
        if self.generator:
            return count == 0
        if self.variadic:
            return count >= len(self.inputs)
        return len(self.inputs) - self.optional <= count <= len(self.inputs)

    def input_names(self, label: Callable[[str], str] = str) -> str:
        """The inputs for help text, those a step may leave out in brackets, the repeating one
        with ``...``: ``"base, top[, mask]"``, ``"images..."``.

        Args:
            label: how each name is shown (``minart stages`` adds the kinds).

        Example:
            >>> get_stage("blend").input_names(), get_stage("grid").input_names()
            ('base, top[, mask]', 'images...')
        """
        named = [label(n) for n in self.inputs]
        cut = len(named) - self.optional
        listed = ", ".join(named[:cut]) + "".join(f"[, {n}" for n in named[cut:]) + "]" * (
            len(named) - cut)
        return listed + ("..." if self.variadic else "")

    def input_count(self) -> str:
        """The number of inputs it takes, for messages: ``"2"``, ``"2 or 3"``, ``"at least 1"``.

        Example:
            >>> get_stage("blend").input_count(), get_stage("grid").input_count()
            ('2 or 3', 'at least 1')
        """
        n = len(self.inputs)
        if self.variadic:
            return f"at least {n}"
        return " or ".join(str(k) for k in range(n - self.optional, n + 1))

    def output_kind(self, input_kinds: Sequence[str]) -> str:
        """The kind this stage produces from inputs of ``input_kinds``.

        ``"same"`` stages produce ``"frames"`` when any input is a clip, else ``"image"``.

        Args:
            input_kinds: ``"image"`` or ``"frames"`` per input, in order.

        Returns:
            ``"image"`` or ``"frames"``.

        Example:
            >>> get_stage("perona_malik").output_kind(["frames"])
            'frames'
        """
        if self.produces == "same":
            return "frames" if "frames" in input_kinds else "image"
        return self.produces


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add ``stage`` to the registry and return it.

    Args:
        stage: the stage record.

    Returns:
        ``stage``, so ``register(Stage(...))`` can be assigned.

    Raises:
        RecipeError: the name is taken or not snake_case, or the kinds are unknown.

    Example:
        >>> get_stage("fractal").name
        'fractal'
    """
    if not stage.name.isidentifier() or stage.name.lower() != stage.name:
        raise RecipeError(f"stage name {stage.name!r} must be snake_case")
    if stage.name in _REGISTRY:
        raise RecipeError(f"stage {stage.name!r} is registered twice")
    if stage.consumes != ("none",) and not set(stage.consumes) <= set(_KINDS):
        raise RecipeError(f"stage {stage.name!r} consumes unknown kinds {stage.consumes}")
    if stage.produces not in (*_KINDS, "same"):
        raise RecipeError(f"stage {stage.name!r} produces unknown kind {stage.produces!r}")
    if stage.optional and (stage.variadic or not 0 < stage.optional < len(stage.inputs)):
        raise RecipeError(f"stage {stage.name!r}: optional={stage.optional} must leave at least "
                          "one input, and a variadic stage has none optional")
    if stage.params.model_config.get("extra") != "forbid":
        raise RecipeError(f"stage {stage.name!r}: its params model must set extra='forbid'")
    _REGISTRY[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    """The stage registered as ``name``.

    Args:
        name: the snake_case stage name a recipe writes as ``stage:``.

    Returns:
        The :class:`Stage`.

    Raises:
        RecipeError: no such stage (with the closest name as a suggestion).

    Example:
        >>> get_stage("minimize").produces
        'frames'
        >>> get_stage("perona_malk")
        Traceback (most recent call last):
        ...
        minart.errors.RecipeError: unknown stage 'perona_malk'; did you mean 'perona_malik'?
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown stage {name!r}{suggest(str(name), list(_REGISTRY))}") from None


def stages() -> list[Stage]:
    """Every registered stage, sorted by name.

    Returns:
        A new list of :class:`Stage` records.

    Example:
        >>> "save_image" in [s.name for s in stages()]
        True
    """
    _ensure_loaded()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def _ensure_loaded() -> None:
    from . import stages as _stages  # noqa: F401  (registers the built-in stages on first import)
