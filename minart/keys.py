"""Step keys: the Merkle hash that names a step's result in the tensor cache.

A step's key is computed from the recipe alone, before anything runs::

    key(step) = sha256(canonical_json({
        "stage": stage name, "version": stage version, "params": canonical params,
        "inputs": [key(input) for input in step.inputs],   # in the order the step lists them
        "seed": recipe seed, "device": precision/device class ("cpu-float32", "cuda-float32", ...),
    }))[:KEY_LENGTH]

No tensor is ever hashed: a step's identity is what produced it. Changing a parameter changes that
step's key and, through the ``inputs`` field, the key of every descendant, and nothing else. When
code changes so that the same parameters give different pixels, bump the stage's ``version``.

Canonical parameters follow YAML's meaning rather than Python's types, so that an artist writing
``1`` and ``1.0`` gets the same result: every non-boolean number becomes a float, mappings are
sorted by key, tuples become lists, paths become POSIX strings, enums their values, and pydantic
models their ``model_dump()``. NaN and infinities are refused (they have no canonical form).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Protocol

import torch

from .errors import ParamError, RecipeError

__all__ = [
    "KEY_LENGTH",
    "StepLike",
    "canonical",
    "canonical_json",
    "device_class",
    "plan_keys",
    "step_key",
    "topological_order",
]

KEY_LENGTH = 40
"""Hex digits kept from the sha256 digest (160 bits: collisions are not a practical concern)."""


class StepLike(Protocol):
    """What :func:`plan_keys` needs from a recipe step."""

    name: str
    stage: str
    inputs: Sequence[str]
    params: Any


def canonical(value: Any, *, _path: str = "params") -> Any:
    """Return ``value`` as plain JSON data with YAML-level types normalised.

    Ints and floats both become floats (``1 == 1.0``), booleans stay booleans, tuples/sets become
    lists (sets sorted), paths become POSIX strings, enums their ``value``, pydantic models their
    ``model_dump()`` and mappings get string keys.

    Args:
        value: parameters as loaded from YAML or a pydantic model.

    Returns:
        JSON-serialisable data.

    Raises:
        ParamError: a NaN or infinite number, or a type with no canonical form.

    Example:
        >>> canonical({"b": 1, "a": (2.0, True)})
        {'b': 1.0, 'a': [2.0, True]}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return canonical(value.value, _path=_path)
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ParamError(f"{_path}={value!r} must be a finite number", param=_path)
        return number
    if isinstance(value, PurePath):
        return value.as_posix()
    if hasattr(value, "model_dump"):
        return canonical(value.model_dump(), _path=_path)
    if isinstance(value, Mapping):
        return {str(k): canonical(v, _path=f"{_path}.{k}") for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v, _path=_path) for v in value), key=json.dumps)
    if isinstance(value, (list, tuple)):
        return [canonical(v, _path=f"{_path}[{i}]") for i, v in enumerate(value)]
    raise ParamError(f"{_path} has type {type(value).__name__}, which has no canonical form "
                     "for a cache key", param=_path)


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON of :func:`canonical` ``(value)``: the text that gets hashed.

    Example:
        >>> canonical_json({"b": 1, "a": [1, 2.5]})
        '{"a":[1.0,2.5],"b":1.0}'
        >>> canonical_json({"x": 1}) == canonical_json({"x": 1.0})
        True
    """
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def device_class(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """The precision/device class that goes into keys: results may differ between classes.

    ``"cuda:1"`` and ``"cuda:0"`` share the class ``"cuda-float32"``; CPU and CUDA do not.

    Args:
        device: a torch device or its name.
        dtype: the floating dtype the stages compute in.

    Returns:
        ``"<device type>-<dtype name>"``.

    Raises:
        ParamError: an unknown device string or a non-floating dtype.

    Example:
        >>> device_class("cuda:1")
        'cuda-float32'
        >>> device_class("cpu", torch.float64)
        'cpu-float64'
    """
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ParamError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')",
                         param="device") from exc
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ParamError(f"dtype={dtype!r} must be a floating torch dtype", param="dtype")
    return f"{kind}-{str(dtype).removeprefix('torch.')}"


def step_key(*, stage: str, version: str | int, params: Any, input_keys: Sequence[str],
             seed: int | None, device: str) -> str:
    """Key of one step: sha256 of its stage, version, canonical params, input keys, seed, device.

    Args:
        stage: registered stage name.
        version: the stage's version (bump it when the same params give different pixels).
        params: the step's parameters (mapping or pydantic model).
        input_keys: keys of the step's inputs, in the order the step lists them.
        seed: the recipe's seed (``None`` for none).
        device: the :func:`device_class` the step runs in.

    Returns:
        ``KEY_LENGTH`` lowercase hex digits.

    Raises:
        ParamError: parameters with no canonical form (NaN, unknown types).

    Example:
        >>> a = step_key(stage="fractal", version=1, params={"size": 32}, input_keys=[], seed=0,
        ...              device="cpu-float32")
        >>> a == step_key(stage="fractal", version=1, params={"size": 32.0}, input_keys=[], seed=0,
        ...               device="cpu-float32")
        True
        >>> a == step_key(stage="fractal", version=2, params={"size": 32}, input_keys=[], seed=0,
        ...               device="cpu-float32")
        False
        >>> len(a)
        40
    """
    payload = {
        "stage": stage,
        "version": str(version),
        "params": canonical(params),
        "inputs": list(input_keys),
        "seed": seed,
        "device": device,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def topological_order(steps: Iterable[StepLike]) -> list[str]:
    """Step names ordered so that every step comes after its inputs (recipe order breaks ties).

    Raises:
        RecipeError: an input names no step, or the steps form a cycle.

    Example:
        >>> from types import SimpleNamespace as S
        >>> topological_order([S(name="b", inputs=["a"]), S(name="a", inputs=[])])
        ['a', 'b']
    """
    by_name = {s.name: s for s in steps}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*trail[trail.index(name):], name))
            raise RecipeError(f"steps form a cycle: {cycle}", step=name)
        state[name] = 1
        for source in by_name[name].inputs:
            if source not in by_name:
                raise RecipeError(f"input {source!r} is not a step of this recipe", step=name)
            visit(source, (*trail, name))
        state[name] = 2
        order.append(name)

    for name in by_name:
        visit(name, ())
    return order


def plan_keys(steps: Iterable[StepLike], *, version_of: Callable[[str], str | int],
              seed: int | None, device: str) -> dict[str, str]:
    """Keys of every step, in dependency order, computed before anything runs.

    Args:
        steps: the recipe's steps (``name``, ``stage``, ``inputs``, ``params``).
        version_of: stage name -> stage version (e.g. from the stage registry).
        seed: the recipe's seed.
        device: the :func:`device_class` of the run.

    Returns:
        ``{step name: key}`` in dependency order.

    Raises:
        RecipeError: unknown inputs or a cycle.
        ParamError: parameters with no canonical form.

    Example:
        >>> from types import SimpleNamespace as S
        >>> steps = [S(name="a", stage="fractal", inputs=[], params={"n": 1}),
        ...          S(name="b", stage="blur", inputs=["a"], params={})]
        >>> keys = plan_keys(steps, version_of=lambda s: 1, seed=0, device="cpu-float32")
        >>> list(keys)
        ['a', 'b']
    """
    step_list = list(steps)
    by_name = {s.name: s for s in step_list}
    keys: dict[str, str] = {}
    for name in topological_order(step_list):
        step = by_name[name]
        try:
            keys[name] = step_key(stage=step.stage, version=version_of(step.stage),
                                  params=step.params, input_keys=[keys[i] for i in step.inputs],
                                  seed=seed, device=device)
        except ParamError as exc:
            raise exc.at(step=name) from None
    return keys
