"""Step keys: Merkle hashing of stage, version, canonical params, inputs, seed and device class."""

from __future__ import annotations

from pathlib import PurePosixPath
from types import SimpleNamespace as S

import pydantic
import pytest
import torch

from minart.errors import ParamError, RecipeError
from minart.keys import canonical, canonical_json, device_class, plan_keys, step_key, topological_order

BASE = dict(stage="fractal", version=1, params={"size": 32, "zoom": 1.5}, input_keys=[], seed=7,
            device="cpu-float32")


def _key(**changes):
    return step_key(**{**BASE, **changes})


def test_key_is_stable_hex():
    assert _key() == _key()
    assert len(_key()) == 40 and int(_key(), 16) >= 0


@pytest.mark.parametrize("change", [
    {"stage": "perona_malik"}, {"version": 2}, {"params": {"size": 32, "zoom": 1.6}},
    {"input_keys": ["abc"]}, {"seed": 8}, {"seed": None}, {"device": "cuda-float32"},
])
def test_every_ingredient_changes_the_key(change):
    assert _key(**change) != _key()


def test_yaml_numbers_agree_and_order_does_not_matter():
    assert _key(params={"zoom": 1.5, "size": 32.0}) == _key()
    assert canonical_json({"a": (1, 2)}) == canonical_json({"a": [1.0, 2.0]})


def test_booleans_are_not_numbers():
    assert canonical_json({"a": True}) != canonical_json({"a": 1})


def test_input_order_matters():
    assert _key(input_keys=["a", "b"]) != _key(input_keys=["b", "a"])


def test_pydantic_models_and_paths_are_canonical():
    class P(pydantic.BaseModel):
        size: int = 32
        zoom: float = 1.5

    assert _key(params=P()) == _key()
    assert canonical(PurePosixPath("a/b.png")) == "a/b.png"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object()])
def test_uncanonical_params_raise(bad):
    with pytest.raises(ParamError):
        _key(params={"x": bad})


def test_device_class():
    assert device_class("cuda:3") == device_class("cuda") == "cuda-float32"
    assert device_class(torch.device("cpu")) == "cpu-float32"
    with pytest.raises(ParamError, match="not a torch device"):
        device_class("warp-drive")
    with pytest.raises(ParamError, match="floating"):
        device_class("cpu", torch.int32)


def _steps(**params):
    return [
        S(name="base", stage="fractal", inputs=[], params={"size": params.get("size", 32)}),
        S(name="soft", stage="perona_malik", inputs=["base"],
          params={"kappa": params.get("kappa", 0.1)}),
        S(name="other", stage="fractal", inputs=[], params={"size": 16}),
        S(name="mix", stage="blend", inputs=["soft", "other"],
          params={"alpha": params.get("alpha", 0.5)}),
    ]


def _plan(**params):
    return plan_keys(_steps(**params), version_of=lambda stage: 1, seed=0, device="cpu-float32")


def test_changing_a_leaf_param_changes_only_that_key():
    a, b = _plan(), _plan(alpha=0.7)
    assert [n for n in a if a[n] != b[n]] == ["mix"]


def test_changing_an_upstream_param_changes_it_and_its_descendants():
    a, b = _plan(), _plan(kappa=0.2)
    assert sorted(n for n in a if a[n] != b[n]) == ["mix", "soft"]


def test_plan_keys_is_in_dependency_order_and_versions_matter():
    steps = list(reversed(_steps()))
    keys = plan_keys(steps, version_of=lambda stage: 1, seed=0, device="cpu-float32")
    assert list(keys).index("base") < list(keys).index("soft") < list(keys).index("mix")
    bumped = plan_keys(steps, version_of=lambda s: 2 if s == "perona_malik" else 1, seed=0,
                       device="cpu-float32")
    assert bumped["base"] == keys["base"] and bumped["soft"] != keys["soft"]


def test_cycles_and_unknown_inputs_raise():
    with pytest.raises(RecipeError, match="cycle: a -> b -> a"):
        topological_order([S(name="a", inputs=["b"]), S(name="b", inputs=["a"])])
    with pytest.raises(RecipeError, match="input 'ghost' is not a step") as info:
        topological_order([S(name="a", inputs=["ghost"])])
    assert info.value.step == "a"


def test_param_errors_name_the_step():
    steps = [S(name="bad", stage="fractal", inputs=[], params={"x": float("nan")})]
    with pytest.raises(ParamError) as info:
        plan_keys(steps, version_of=lambda s: 1, seed=0, device="cpu-float32")
    assert str(info.value).startswith("step 'bad': ")
