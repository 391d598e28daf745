"""Captions that show a recipe's own values: ``{step.param}`` in a grid's labels.

A grid that compares a sweep's variants needs one caption per variant, and the captions must
change when ``--set`` changes the values. So a label may name a parameter instead of repeating
it::

    labels: ["kappa {kappas.kappa}", "dt {dts.dt:.2f}"]

``{kappas.kappa}`` is replaced by the value of parameter ``kappa`` of step ``kappas`` (after
``--set`` and defaults). When that step's frames each have their own value of the parameter
(a ``perona_malik_sweep``'s ``kappa`` and ``dt``, the ``iterations`` done at each frame of a
``minimize`` or ``fractal_frames`` clip), the label stands for one caption per frame:
``kappa 0.05``, ``kappa 0.1``, ... A format spec after ``:`` formats a number (``{x.dt:.2f}``);
``{name}`` and ``{seed}`` are the recipe's own; ``{{`` and ``}}`` are literal braces.

This module only reads and fills the templates; :mod:`minart.recipe` looks the values up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ParamError

__all__ = ["PerFrame", "fill_label", "has_fields", "show_value"]

_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
"""A literal brace pair, a field ``{...}``, or a brace on its own (an error)."""

_FIELD = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_-]*)\.)?([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?")
"""Inside the braces: ``step.param`` (or a recipe-level ``name``/``seed``) with an optional
``:format-spec``."""


@dataclass(frozen=True)
class PerFrame:
    """A parameter that takes one value per frame of its step's clip (a sweep's ``kappa``).

    Args:
        values: the value each frame was made with, in frame order.
    """

    values: tuple[Any, ...]


Lookup = Callable[[str | None, str], Any]
"""``lookup(step, param)``: the parameter's value, or :class:`PerFrame` of its values (``step``
is ``None`` for a field without one, such as ``{seed}``); raises
:class:`~minart.errors.ParamError` for an unknown step or parameter."""


def has_fields(label: str) -> bool:
    """Whether ``label`` holds a ``{...}`` to fill (or a brace to escape).

    Example:
        >>> has_fields("kappa {kappas.kappa}"), has_fields("kappa 0.1")
        (True, False)
    """
    return "{" in label or "}" in label


def show_value(value: Any) -> str:
    """How a parameter's value reads in a caption: as it would be written in the recipe.

    Example:
        >>> show_value(0.05), show_value(60), show_value(True), show_value((0.0, -0.5))
        ('0.05', '60', 'true', '[0.0, -0.5]')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return str(value)


def _formatted(value: Any, spec: str | None, field: str) -> str:
    if spec is None:
        return show_value(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{{{field}}} is {show_value(value)}, not a number, so it takes no "
                         f"format spec; write {{{field.split(':')[0]}}}", param="labels")
    try:
        return format(value, spec)
    except ValueError as exc:
        raise ParamError(f"{{{field}}}: {exc} (a format spec such as :.2f or :g)",
                         param="labels") from None


def fill_label(label: str, lookup: Lookup) -> list[str]:
    """The captions a label template stands for: one, or one per frame when it shows a
    parameter that varies per frame.

    Args:
        label: caption text with ``{step.param}`` or ``{step.param:spec}`` fields.
        lookup: ``lookup(step, param)`` gives the value, or :class:`PerFrame` values.

    Returns:
        The filled captions: ``[label]`` unchanged when it has no fields.

    Raises:
        ParamError: a field that is not ``{step.param}``, a stray brace, an unknown step or
            parameter (from ``lookup``), a format spec that does not apply, or per-frame
            fields of different lengths in one label.

    Example:
        >>> values = {("kappas", "kappa"): PerFrame((0.05, 0.1)), ("kappas", "steps"): 60}
        >>> fill_label("k {kappas.kappa} x{kappas.steps}", lambda s, p: values[s, p])
        ['k 0.05 x60', 'k 0.1 x60']
    """
    pieces: list[str | tuple[Any, str | None, str]] = []  # text, or (value, spec, field)
    at = 0
    for match in _PIECE.finditer(label):
        pieces.append(label[at:match.start()])
        at = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            pieces.append(token[0])
            continue
        field = match.group(1)
        parsed = _FIELD.fullmatch(field) if field is not None else None
        if parsed is None:
            shown = token if field is None else f"{{{field}}}"
            raise ParamError(f"{shown} in label {label!r} is not a field: write {{step.param}} "
                             "(for example {kappas.kappa}) to show a parameter, {name} or {seed} "
                             "for the recipe's, or {{ and }} for braces", param="labels")
        step, param, spec = parsed.groups()
        pieces.append((lookup(step, param), spec, field))
    pieces.append(label[at:])
    lengths = {len(p[0].values): p[2] for p in pieces
               if isinstance(p, tuple) and isinstance(p[0], PerFrame)}
    if len(lengths) > 1:
        shown = " and ".join(f"{{{field}}} has {n} values" for n, field in lengths.items())
        raise ParamError(f"label {label!r}: {shown}; one caption can follow one sweep's "
                         "values (split it into two labels)", param="labels")
    count = next(iter(lengths), 1)
    captions = []
    for frame in range(count):
        text = []
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
                continue
            value, spec, field = piece
            if isinstance(value, PerFrame):
                value = value.values[frame]
            text.append(_formatted(value, spec, field))
        captions.append("".join(text))
    return captions
