"""Boundary checks shared by the ops: shapes, dtypes, finiteness and parameter ranges."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ParamError, ShapeError

__all__: list[str] = []


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
    """Raise :class:`ParamError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ParamError(f"{name}={value!r} is not one of {options}", param=name)
