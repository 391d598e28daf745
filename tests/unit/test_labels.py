"""Caption templates: ``{step.param}`` filled from a lookup, a caption per frame of a sweep."""

from __future__ import annotations

import pytest

from minart.errors import ParamError
from minart.labels import PerFrame, fill_label, has_fields, show_value

VALUES = {("kappas", "kappa"): PerFrame((0.05, 0.1, 0.2)), ("kappas", "steps"): 60,
          ("kappas", "scheme"): "classic", ("dts", "dt"): PerFrame((0.1, 0.4, 0.8)),
          ("short", "dt"): PerFrame((0.1, 0.2)), ("base", "coefficient"): (0.0, -0.25),
          ("grid", "columns"): None, ("sheet", "labels"): True, (None, "seed"): 7}


def lookup(step: str | None, param: str) -> object:
    if (step, param) not in VALUES:
        raise ParamError(f"no {step}.{param}", param="labels")
    return VALUES[step, param]


@pytest.mark.parametrize(("label", "expected"), [
    ("plain text", ["plain text"]),
    ("", [""]),
    ("{kappas.steps} steps", ["60 steps"]),
    ("kappa {kappas.kappa}", ["kappa 0.05", "kappa 0.1", "kappa 0.2"]),
    ("{kappas.kappa:.2f}/{kappas.steps:03d}", ["0.05/060", "0.10/060", "0.20/060"]),
    ("{kappas.kappa} x {dts.dt}", ["0.05 x 0.1", "0.1 x 0.4", "0.2 x 0.8"]),  # same length
    ("{{literal}} {kappas.scheme}", ["{literal} classic"]),
    ("c={base.coefficient} {grid.columns} {sheet.labels}", ["c=[0.0, -0.25] none true"]),
    ("{kappas.kappa:g}", ["0.05", "0.1", "0.2"]),
    ("seed {seed:03d}", ["seed 007"]),  # a field without a step: the lookup gets None
])
def test_a_label_is_filled_with_its_values(label, expected):
    assert fill_label(label, lookup) == expected
    assert has_fields(label) == ("{" in label)


@pytest.mark.parametrize(("label", "message"), [
    ("k {kappas x}", "{kappas x} in label 'k {kappas x}' is not a field: write {step.param} "
     "(for example {kappas.kappa}) to show a parameter, {name} or {seed} for the recipe's, or "
     "{{ and }} for braces"),
    ("k {}", "{} in label 'k {}' is not a field"),
    ("k { kappas.kappa}", "{ kappas.kappa} in label"),
    ("k {kappas.kappa", "{ in label 'k {kappas.kappa' is not a field"),
    ("k }", "} in label 'k }' is not a field"),
    ("{a.b.c}", "{a.b.c} in label"),
    ("{nope.x}", "no nope.x"),
    ("{date}", "no None.date"),
    ("{kappas.scheme:.2f}", "{kappas.scheme:.2f} is classic, not a number, so it takes no format "
     "spec; write {kappas.scheme}"),
    ("{sheet.labels:d}", "{sheet.labels:d} is true, not a number"),
    ("{kappas.kappa:.2q}", "{kappas.kappa:.2q}: Unknown format code 'q' for object of type "
     "'float' (a format spec such as :.2f or :g)"),
    ("{kappas.kappa} {short.dt}", "label '{kappas.kappa} {short.dt}': {kappas.kappa} has 3 "
     "values and {short.dt} has 2 values; one caption can follow one sweep's values (split it "
     "into two labels)"),
])
def test_a_malformed_label_is_refused_with_what_to_write(label, message):
    with pytest.raises(ParamError) as info:
        fill_label(label, lookup)
    assert info.value.message.startswith(message) and info.value.param == "labels"


def test_values_read_as_in_a_recipe():
    assert [show_value(v) for v in (1.6, 1e-05, 3, False, "seed", [1, [2, 3.5]])] == [
        "1.6", "1e-05", "3", "false", "seed", "[1, [2, 3.5]]"]
