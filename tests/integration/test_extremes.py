"""The shipped recipes with parameters at the edges of what their stages accept.

Every value drawn here passes the stage's own field limits (read from its pydantic model), so
the recipe either renders or is refused with one located line: a crash of any other kind (an
``IndexError`` from an empty tensor, a ``RuntimeError`` from torch) is a bug. Seeded: the same
recipes every run, small sizes and short runs (counts capped at 40) so it takes seconds.
"""

from __future__ import annotations

import random
import shutil
import typing
from pathlib import Path

import annotated_types as at
import pytest
import yaml

from minart import engine
from minart.cache import TensorCache
from minart.errors import MinartError
from minart.registry import get_stage

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
COUNTS = ("iterations", "steps", "frames")


def _limits(info) -> tuple[float | None, float | None, bool, bool]:
    low = high = None
    low_open = high_open = False
    for item in info.metadata:
        if isinstance(item, at.Ge):
            low = item.ge
        elif isinstance(item, at.Gt):
            low, low_open = item.gt, True
        elif isinstance(item, at.Le):
            high = item.le
        elif isinstance(item, at.Lt):
            high, high_open = item.lt, True
    return low, high, low_open, high_open


def _edge(rng: random.Random, info, current):
    """A value at or near the edge of a field's limits, or ``None`` to leave it."""
    if typing.get_origin(info.annotation) in (tuple, list):  # pairs, colours, lists: left
        return None
    kinds = typing.get_args(info.annotation) or (info.annotation,)
    literals = [k for k in kinds if typing.get_origin(k) is typing.Literal]
    if typing.get_origin(info.annotation) is typing.Literal or literals:
        return rng.choice(typing.get_args(literals[0] if literals else info.annotation))
    if bool in kinds:
        return not current
    low, high, low_open, high_open = _limits(info)
    if int in kinds and not isinstance(current, float):
        low = 0 if low is None else int(low) + low_open
        high = low + 40 if high is None else min(int(high) - high_open, low + 40)
        return rng.choice([low, low + 1, high, rng.randint(low, max(low, high))])
    if float in kinds:
        low = -1e6 if low is None else low
        high = 1e6 if high is None else high
        value = rng.choice([low, high, (low + high) / 2, low + (high - low) * 1e-6,
                            rng.uniform(low, high)])
        if low_open and value <= low:
            value = low + max(abs(low) * 1e-6, 1e-12)
        if high_open and value >= high:
            value = high - max(abs(high) * 1e-6, 1e-12)
        return float(value)
    return None


def _mutated(rng: random.Random, text: str) -> tuple[dict, list[str]]:
    data = yaml.safe_load(text)
    data["size"] = [rng.choice([8, 9, 16, 33]), rng.choice([8, 11, 24])]
    changed = []
    steps = data["steps"]
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(sorted(steps))
        fields = get_stage(steps[name]["stage"]).params.model_fields
        if not fields:
            continue
        field = rng.choice(sorted(fields))
        params = steps[name].get("params") or {}
        value = _edge(rng, fields[field], params.get(field, fields[field].default))
        if value is None:
            continue
        if field in ("width", "height"):
            value = min(value, 64)
        params[field] = value
        steps[name]["params"] = params
        changed.append(f"{name}.{field}={value!r}")
    for step in steps.values():
        params = step.get("params") or {}
        for count in COUNTS:
            if isinstance(params.get(count), int) and params[count] > 40:
                params[count] = 40
    return data, changed


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_recipes_at_their_parameters_edges_render_or_say_why_in_one_line(tmp_path, seed):
    rng = random.Random(seed)
    shutil.copytree(RECIPES / "assets", tmp_path / "assets")
    cache = TensorCache(str(tmp_path / "cache"))
    rendered = refused = 0
    for trial in range(8):
        source = rng.choice(sorted(RECIPES.glob("*.yaml")))
        data, changed = _mutated(rng, source.read_text())
        recipe = tmp_path / f"{source.stem}-{trial}.yaml"
        recipe.write_text(yaml.safe_dump(data))
        try:
            plan = engine.load_plan(recipe, output_dir=tmp_path / "out" / str(trial),
                                    preview=rng.choice([False, 2]))
            engine.render(plan, cache=cache)
            rendered += 1
        except MinartError as exc:
            refused += 1
            message = str(exc).strip()  # one located line: the recipe's, or an input file's
            assert message and "\n" not in message, (source.name, changed, message)
            assert message.startswith((str(recipe), str(tmp_path))), (source.name, changed, message)
        except Exception as exc:  # noqa: BLE001 - the point: name the case that crashed
            pytest.fail(f"{source.name} with {changed}: {type(exc).__name__}: {exc}")
    assert rendered + refused == 8 and rendered >= 2  # the edges are reached, not all refused
