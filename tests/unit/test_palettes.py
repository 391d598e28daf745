"""Palettes: the prepared-stops path matches apply_palette bit for bit; range and stop checks."""

from __future__ import annotations

import pytest
import torch

from minart import palettes
from minart.errors import ShapeError
from minart.palettes import PALETTES, apply_palette, map_palette, palette_stops


@pytest.mark.parametrize("name", [*PALETTES, "ocean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_map_palette_with_stops_built_once_is_apply_palette(gen, name, dtype):
    stops = palette_stops(name, dtype=dtype)
    for _ in range(3):  # frames of a loop, one set of stops
        values = torch.rand(2, 5, 7, generator=gen, dtype=dtype)
        values[0, 0, :3] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype)
        assert torch.equal(map_palette(values, *stops), apply_palette(values, name))


def test_map_palette_does_not_check_the_range_and_apply_palette_checks_it_once(monkeypatch):
    calls = []
    real = palettes.check_unit_range
    monkeypatch.setattr(palettes, "check_unit_range", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    values = torch.rand(4, 4)
    map_palette(values, *palette_stops("fire"))
    assert calls == []  # no wait for the device in a loop over frames
    apply_palette(values, "fire")
    assert calls == ["values"]


def test_map_palette_refuses_stops_of_another_dtype_or_shape():
    values = torch.rand(3, 3)
    with pytest.raises(ShapeError, match=r"palette positions are torch.float64 on cpu but the values are "
                                         r"torch.float32 on cpu; build them with palette_stops"):
        map_palette(values, *palette_stops("gray", dtype=torch.float64))
    positions, colours = palette_stops("gray")
    with pytest.raises(ShapeError, match=r"\(S,\) positions and \(S, 3\) colours with S >= 2"):
        map_palette(values, positions, colours[:, :2])
    with pytest.raises(ShapeError, match="floating"):
        map_palette(torch.zeros(3, 3, dtype=torch.int64), positions, colours)


def test_apply_palette_clamps_rounding_and_refuses_the_rest_with_digits():
    over = torch.tensor([[0.5, 1.0 + 2.4e-7, -2e-7]])
    assert torch.equal(apply_palette(over, "sea"), apply_palette(over.clamp(0, 1), "sea"))
    with pytest.raises(ShapeError, match=r"^values must lie in \[0, 1\], got \[0.5, 1.5\]; map them"):
        apply_palette(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ShapeError, match=r"^values contains NaN or Inf values$"):
        apply_palette(torch.tensor([[0.5, float("nan")]]))
