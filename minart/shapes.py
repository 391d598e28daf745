"""Shapes of the data flowing between steps, known before anything runs.

Every step's result has a shape that follows from its parameters and its inputs' shapes: a
``fractal`` of the recipe's size is ``(3, H, W)``, a ``minimize`` of ``iterations`` keeping a
frame every ``frame_every`` is ``(ceil(iterations / frame_every), C, H, W)``, a ``blend`` is its
base's. Each stage states its rule as a ``shape`` hook (:class:`minart.registry.Stage`), and
the recipe applies them in order when it is checked, so inputs that a stage would refuse (two
sizes that differ, a clip of the wrong length, an odd size for an MP4 with ``pad: refuse``)
are reported with the step's line before the first step runs, not after an hour of upstream
work. The stages still check their tensors when they run.

Shapes are tuples: ``(C, H, W)`` for an image, ``(T, C, H, W)`` for a clip of frames, or
``None`` where a shape cannot be known (a stage without a hook, an input that is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .registry import CheckContext, Stage

__all__ = ["Shape", "describe", "nbytes", "step_shape"]

Shape = tuple[int, ...]
"""``(C, H, W)`` for an image, ``(T, C, H, W)`` for a clip."""

_COLOURS = {1: "grey", 3: "RGB", 4: "RGBA"}


def describe(shape: Shape) -> str:
    """Words for a shape, as an artist reads sizes: width x height, colour model, frames.

    Args:
        shape: ``(C, H, W)`` or ``(T, C, H, W)``.

    Returns:
        ``"a 512x384 RGB image"`` or ``"a 24-frame 512x384 RGB clip"``.

    Example:
        >>> describe((3, 384, 512)), describe((24, 1, 8, 16))
        ('a 512x384 RGB image', 'a 24-frame 16x8 grey clip')
    """
    *frames, channels, height, width = shape
    colour = _COLOURS.get(channels, f"{channels}-channel")
    if frames:
        return f"a {frames[0]}-frame {width}x{height} {colour} clip"
    return f"a {width}x{height} {colour} image"


def nbytes(shape: Shape) -> int:
    """Bytes of a float32 tensor of ``shape`` (what a step's result holds in memory and cache).

    Example:
        >>> nbytes((3, 512, 512))
        3145728
    """
    return 4 * math.prod(shape)


def step_shape(stage: Stage, params: BaseModel, *, inputs: Sequence[str],
               shapes: Mapping[str, Shape | None], kinds: Mapping[str, str], recipe_dir: Path,
               size: tuple[int, int],
               warnings: list[tuple[str, str | None]] | None = None) -> Shape | None:
    """The shape of one step's result, from its inputs' shapes (``None`` if unknown).

    Args:
        stage: the step's stage.
        params: its validated parameters.
        inputs: names of the steps it reads, in order.
        shapes: shapes of the steps before it, by name.
        kinds: kinds (``"image"``, ``"frames"``) of the steps before it, by name.
        recipe_dir: the recipe's folder (``load_image`` reads its image's header there).
        size: the recipe's ``(width, height)``.
        warnings: where the hook's warnings go, ``(message, parameter)`` pairs (see
            :meth:`~minart.registry.CheckContext.warn`); ``None`` drops them.

    Returns:
        The shape, or ``None`` when the stage has no ``shape`` hook or an input is unknown.

    Raises:
        ShapeError: the inputs do not fit together (the message names the input steps).
        ParamError: a parameter does not fit the inputs (``exc.param`` names it).
        MediaError: an input image's header is unreadable.

    Example:
        >>> from minart.registry import get_stage
        >>> fractal = get_stage("fractal")
        >>> params = fractal.params(width=64, height=32)
        >>> step_shape(fractal, params, inputs=(), shapes={}, kinds={}, recipe_dir=Path("."),
        ...            size=(256, 256))
        (3, 32, 64)
    """
    if stage.shape is None:
        return None
    known: list[Shape] = []
    for name in inputs:
        shape = shapes.get(name)
        if shape is None:
            return None
        known.append(shape)
    ctx = CheckContext(recipe_dir=recipe_dir, size=size,
                       input_kinds=tuple(kinds[name] for name in inputs),
                       input_shapes=tuple(known), input_names=tuple(inputs),
                       warnings=[] if warnings is None else warnings)
    result: Any = stage.shape(params, ctx)
    return None if result is None else tuple(int(n) for n in result)
