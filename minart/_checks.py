"""Boundary checks shared by the ops: shapes, dtypes, finiteness and parameter ranges."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import ParamError, ShapeError

__all__: list[str] = []

UNIT_RANGE_TOL = 1e-6
"""How far outside [0, 1] :func:`check_unit_range` still accepts values (float rounding of ops
such as a bilinear resize, which leaves a white image about 2.4e-7 above 1)."""


def as_batch(image: Tensor, *, name: str = "image", min_size: int = 1) -> tuple[Tensor, bool]:
    """Return ``image`` as ``(B, C, H, W)`` and whether it was a single ``(C, H, W)`` image.

    Raises:
        ShapeError: not a floating tensor of 3 or 4 dimensions, or smaller than ``min_size``.
    """
    if not isinstance(image, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (3, 4):
        raise ShapeError(
            f"{name} must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise ShapeError(f"{name} must be a floating tensor in [0, 1], got dtype {image.dtype}")
    if image.shape[-1] < min_size or image.shape[-2] < min_size:
        raise ShapeError(
            f"{name} must be at least {min_size}x{min_size} pixels, got "
            f"{image.shape[-1]}x{image.shape[-2]}"
        )
    single = image.ndim == 3
    return (image.unsqueeze(0) if single else image), single  # (C, H, W) -> (1, C, H, W)


def check_finite(image: Tensor, *, name: str = "image") -> None:
    """Raise :class:`ShapeError` if ``image`` holds NaN or Inf."""
    if not bool(torch.isfinite(image).all()):
        raise ShapeError(f"{name} contains NaN or Inf values")


def check_unit_range(name: str, tensor: Tensor, *, tol: float = UNIT_RANGE_TOL,
                     hint: str = "use an image in [0, 1]: clamp or normalise it explicitly",
                     param: str | None = None) -> Tensor:
    """Refuse NaN/Inf and values outside ``[-tol, 1 + tol]``; return ``tensor`` inside [0, 1].

    The minimum and maximum are read back together, one wait for the device. Values in
    ``[-tol, 0)`` or ``(1, 1 + tol]`` are float rounding of an earlier op and are clamped to
    [0, 1]; a tensor already in [0, 1] is returned as it is (the same object), so the result of
    any op on it is unchanged bit for bit.

    Args:
        name: what the tensor is, for messages (``"image"``, ``"top"``; ``"... values"`` is kept).
        tensor: a floating tensor of any shape.
        tol: accepted distance outside [0, 1] (>= 0).
        hint: what to do instead, after ``"; "`` in the message.
        param: the parameter the error is about, for tooling.

    Returns:
        ``tensor`` itself when it lies in [0, 1], else ``tensor.clamp(0, 1)``.

    Raises:
        ShapeError: NaN or Inf (``"<name> contains NaN or Inf values"``), or a value further than
            ``tol`` outside [0, 1], with the range found, in as many digits as it takes.

    Example:
        >>> check_unit_range("image", torch.tensor([0.0, 1.0 + 2.4e-7])).tolist()
        [0.0, 1.0]
        >>> check_unit_range("image", torch.tensor([0.5, 1.5]), hint="normalise it")
        Traceback (most recent call last):
        ...
        minart.errors.ShapeError: image values must lie in [0, 1], got [0.5, 1.5]; normalise it
    """
    if tensor.numel() == 0:
        return tensor
    lo, hi = torch.stack((tensor.amin(), tensor.amax())).tolist()  # one wait for the device
    if not (math.isfinite(lo) and math.isfinite(hi)):  # amin/amax propagate NaN
        raise ShapeError(f"{name} contains NaN or Inf values", param=param)
    if lo < -tol or hi > 1 + tol:
        subject = name if name.endswith("values") else f"{name} values"
        raise ShapeError(f"{subject} must lie in [0, 1], got [{_shortest(lo, tensor.dtype)}, "
                         f"{_shortest(hi, tensor.dtype)}]; {hint}", param=param)
    if lo < 0 or hi > 1:
        return tensor.clamp(0.0, 1.0)
    return tensor


def _shortest(value: float, dtype: torch.dtype) -> str:
    """The shortest text that reads back as ``value`` in ``dtype`` (1.01, not 1.00999999)."""
    text = repr(value) if dtype == torch.float64 else str(np.float32(value))
    return text.removesuffix(".0")


def check_range(name: str, value: float, *, ge: float | None = None, gt: float | None = None,
                le: float | None = None) -> None:
    """Raise :class:`ParamError` unless ``value`` is a finite number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamError(f"{name}={value!r} must be a finite number", param=name)
    if ge is not None and value < ge:
        raise ParamError(f"{name}={value} must be >= {ge}", param=name)
    if gt is not None and value <= gt:
        raise ParamError(f"{name}={value} must be > {gt}", param=name)
    if le is not None and value > le:
        raise ParamError(f"{name}={value} must be <= {le}", param=name)


def check_whole(name: str, value: object, *, ge: int) -> None:
    """Raise :class:`ParamError` unless ``value`` is an ``int`` (not a bool) that is ``>= ge``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < ge:
        raise ParamError(f"{name}={value!r} must be a whole number >= {ge}", param=name)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ParamError` unless ``value`` is one of ``choices`` (naming the closest)."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        close = suggest(value, choices) if isinstance(value, str) else ""
        raise ParamError(f"{name}={value!r} is not one of {options}{close}", param=name)


def suggest(name: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``.

    Closeness is :func:`difflib.get_close_matches` (ratio >= 0.6).

    Args:
        name: what was written.
        choices: what would have been valid.

    Returns:
        The suffix to append to an error message.

    Example:
        >>> suggest("perona_malk", ["perona_malik", "fractal"])
        "; did you mean 'perona_malik'?"
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
