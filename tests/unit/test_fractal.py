"""Fractal seeds: counts against a per-pixel Python reference, colourings, palettes, frames, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minart import ops
from minart.errors import ParamError, ShapeError
from minart.fractal import fractal, fractal_field, fractal_frames, unused_options
from minart.palettes import PALETTES, apply_palette, palette_interior, palette_stops, parse_color

A = -1j / math.pi


def _reference(width, height, *, formula="inverse_power", power=7, coefficient=A, center=(0.0, 0.0),
               span=2.8, iterations=64, julia=None, eps=0.75, bailout=16.0, trap=None):
    """The maps from their equations, one pixel at a time with Python ``complex``.

    Returns counts, done mask and (if ``trap`` is a function) the orbit's smallest trap distance.
    """
    counts = np.zeros((height, width), dtype=np.int64)
    done = np.zeros((height, width), dtype=bool)
    dist = np.zeros((height, width))
    step = span / width
    for i in range(height):
        for j in range(width):
            pixel = complex(center[0] + (j + 0.5 - width / 2) * step,
                            center[1] - (i + 0.5 - height / 2) * step)
            c = pixel if julia is None else complex(*julia)
            z = pixel
            n, hit = iterations, False
            best = trap(z) if trap else 0.0
            for k in range(iterations + 1):
                if k > 0 and trap:
                    best = min(best, trap(z))
                stop = abs(z) < eps if formula == "inverse_power" else abs(z) > bailout
                if stop:
                    n, hit = k, True
                    break
                if k == iterations:
                    break
                if formula == "inverse_power":
                    z = coefficient * (1 / z) ** power + c  # = a z^-p + c
                else:
                    z = z ** power + c
            counts[i, j], done[i, j], dist[i, j] = n, hit, best
    return counts, done, dist


def _rgb_u8(img: torch.Tensor) -> np.ndarray:
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (3, H, W) -> (H, W, 3)


# ---------------------------------------------------------------- counts against the reference

CASES = {
    "post_default": dict(),
    "post_zoom": dict(center=(0.9, 0.4), span=0.3, iterations=200),
    "post_julia": dict(julia=(0.9, 0.35), span=3.0, iterations=100),
    "inverse_cube": dict(power=3, coefficient=0.4 + 0.2j, span=3.0, eps=0.3, iterations=100),
    "mandelbrot": dict(formula="multibrot", power=2, center=(-0.5, 0.0), span=3.0, iterations=100),
    "multibrot5_julia": dict(formula="multibrot", power=5, julia=(0.55, 0.3), span=3.0, iterations=80),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_counts_match_python_reference_float64(case):
    kw = CASES[case]
    ref_counts, ref_done, _ = _reference(48, 40, **kw)
    field = fractal_field(48, 40, dtype=torch.float64, **kw)
    agree = (field.counts.numpy() == ref_counts).mean()
    assert agree >= 0.999, f"{case}: only {agree:.4%} of counts agree"
    assert (field.done.numpy() == ref_done).mean() >= 0.999
    # The case must exercise something: several distinct counts, some finished orbits.
    assert len(np.unique(ref_counts)) >= 4 and ref_done.any()


def test_counts_float32_mostly_match_reference():
    ref_counts, _, _ = _reference(48, 40, iterations=64)
    field = fractal_field(48, 40, dtype=torch.float32)
    assert field.final_z.dtype == torch.complex64
    assert (field.counts.numpy() == ref_counts).mean() >= 0.99


def test_deep_zoom_needs_and_works_in_float64():
    kw = dict(formula="multibrot", power=2, center=(-1.768778833, -0.001738996),
              span=1e-6, iterations=300)
    with pytest.raises(ParamError, match=r"use dtype float64"):
        fractal_field(32, 24, **kw)
    field = fractal_field(32, 24, dtype=torch.float64, **kw)
    ref_counts, _, _ = _reference(32, 24, **kw)
    assert (field.counts.numpy() == ref_counts).mean() >= 0.999
    assert len(np.unique(ref_counts)) >= 10  # a real zoom shows structure, not one flat colour


@pytest.mark.parametrize("trap, geometry", [
    ("point", lambda z: abs(z - (0.2 + 0.1j))),
    ("circle", lambda z: abs(abs(z - (0.2 + 0.1j)) - 0.5)),
    ("line", lambda z: abs((z.imag - 0.1) * math.cos(0.3) - (z.real - 0.2) * math.sin(0.3))),
])
def test_trap_distances_match_reference(trap, geometry):
    kw = dict(iterations=40)
    ref_counts, _, ref_dist = _reference(24, 20, trap=geometry, **kw)
    field = fractal_field(24, 20, dtype=torch.float64, trap=trap, trap_point=(0.2, 0.1),
                          trap_radius=0.5, trap_angle=0.3, **kw)
    same = field.counts.numpy() == ref_counts
    assert same.mean() >= 0.999
    np.testing.assert_allclose(field.trap.numpy()[same], ref_dist[same], rtol=1e-7, atol=1e-8)


def test_overflow_near_the_pole_is_the_point_at_infinity():
    # |c| ~ 0.01 and p = 24: (1/c)^24 ~ 1e48 overflows float32; the next step must give c again.
    kw = dict(power=24, eps=1e-3, span=0.05, iterations=40)
    f32 = fractal_field(17, 17, **kw)
    f64 = fractal_field(17, 17, dtype=torch.float64, **kw)
    assert bool(torch.isfinite(f32.final_z).all())
    assert (f32.counts == f64.counts).float().mean() >= 0.99
    assert (f32.done == f64.done).float().mean() >= 0.99
    for coloring in ("pole", "modulus", "argument", "trap_circle"):
        assert bool(torch.isfinite(fractal(17, 17, coloring=coloring, **kw)).all())


def test_field_shapes_dtypes_and_the_pole_at_the_centre():
    field = fractal_field(7, 5, iterations=10)
    assert field.counts.shape == field.done.shape == field.final_z.shape == field.trap.shape == (5, 7)
    assert field.counts.dtype == torch.int64 and field.done.dtype == torch.bool
    assert field.trap.dtype == torch.float32 and field.final_z.device.type == "cpu"
    assert int(field.counts[2, 3]) == 0 and bool(field.done[2, 3])  # c = 0 is the pole
    assert bool((field.counts[~field.done] == 10).all())  # unfinished orbits report the budget


def test_eight_fold_symmetry_of_the_post_map():
    # a (w z)^-7 + w c = w (a z^-7 + c) for w^8 = 1, so counts are invariant under 90-degree turns.
    counts = fractal_field(40, 40, dtype=torch.float64).counts
    assert (counts == torch.rot90(counts, 1)).float().mean() >= 0.99
    assert len(counts.unique()) >= 4


def test_julia_form_at_pixel_equals_parameter_form():
    # 5 pixels over span 5: the centres are exactly -2, -1, 0, 1, 2 (and likewise in imaginary).
    grid = dict(span=5.0, iterations=30, dtype=torch.float64)
    param = fractal_field(5, 5, **grid).counts
    for (i, j) in [(2, 3), (1, 2), (3, 4)]:
        c = (j - 2.0, 2.0 - i)
        julia = fractal_field(5, 5, julia=c, **grid).counts
        assert int(julia[i, j]) == int(param[i, j])


def test_julia_form_of_mandelbrot_is_point_symmetric():
    counts = fractal_field(40, 30, formula="multibrot", power=2, julia=(-0.8, 0.156), span=3.2,
                           iterations=60, dtype=torch.float64).counts
    assert bool((counts == counts.flip(0, 1)).float().mean() >= 0.999)
    assert len(counts.unique()) >= 8


# ---------------------------------------------------------------- images

def test_image_shape_dtype_range():
    img = fractal(20, 12, iterations=16)
    assert img.shape == (3, 12, 20) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    img64 = fractal(20, 12, iterations=16, dtype=torch.float64)
    assert img64.dtype == torch.float64
    assert (img64.float() - img).abs().gt(1e-3).float().mean() < 0.02  # same picture, finer arithmetic


def test_default_picture_is_a_disk_with_a_ring_on_near_white():
    img = fractal(64, 64)
    centre = img[:, 32, 32]
    corner = img[:, 0, 0]
    interior = torch.tensor(parse_color("#f8f8fc"))
    assert torch.allclose(corner, interior)  # background: orbits that never reach the pole
    assert centre[2] > 0.8 and centre[0] < 0.3  # blue disk: c near the pole
    ring = (img - interior[:, None, None]).abs().sum(0) > 0.1
    yy, xx = torch.meshgrid(torch.arange(64) - 31.5, torch.arange(64) - 31.5, indexing="ij")
    r = (xx ** 2 + yy ** 2).sqrt()
    band = (r > 24) & (r < 30)
    assert 0.05 < ring[band].float().mean() < 0.9  # bulbs and gaps around the disk


@pytest.mark.parametrize("coloring", ["pole", "trap_point", "trap_circle", "trap_line", "modulus",
                                      "argument"])
def test_inverse_power_colorings_differ_and_stay_in_range(coloring):
    img = fractal(24, 24, coloring=coloring, iterations=20)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert len(img.reshape(3, -1).T.unique(dim=0)) >= 3  # (3, H, W) -> (H*W, 3)


def test_colorings_are_distinct_pictures():
    pics = {c: fractal(24, 24, coloring=c, iterations=20)
            for c in ["pole", "trap_point", "trap_line", "modulus", "argument"]}
    names = list(pics)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert not torch.allclose(pics[names[a]], pics[names[b]]), (names[a], names[b])


def test_smooth_coloring_is_continuous_where_counts_are_not():
    kw = dict(formula="multibrot", power=2, center=(-0.5, 0.0), span=3.0, iterations=50,
              palette="gray")
    img = fractal(48, 40, **kw)
    field = fractal_field(48, 40, formula="multibrot", power=2, center=(-0.5, 0.0), span=3.0,
                          iterations=50)
    escaped = field.done
    levels = img[0][escaped].unique().numel()
    assert levels > 2 * field.counts[escaped].unique().numel()
    assert bool((img[:, ~escaped] == torch.tensor(palette_interior("gray"))[:, None]).all())


def test_interior_colour_applies_to_unfinished_orbits():
    field = fractal_field(24, 20, iterations=12)
    img = fractal(24, 20, iterations=12, interior="#ff0000")
    red = torch.tensor([1.0, 0.0, 0.0])[:, None]
    assert bool((img[:, ~field.done] == red).all())
    assert not bool((img[:, field.done] == red).all(0).any())


def test_supersample_averages_blocks_of_the_fine_render():
    coarse = fractal(12, 10, supersample=2, iterations=24)
    fine = fractal(24, 20, iterations=24)
    pooled = F.avg_pool2d(fine.unsqueeze(0), 2)[0]  # (3, 20, 24) -> (3, 10, 12)
    assert coarse.shape == (3, 10, 12)
    assert torch.allclose(coarse, pooled, rtol=0, atol=1e-6)
    assert not torch.equal(coarse, fractal(12, 10, iterations=24))  # it does anti-alias


def test_custom_stops_hex_and_rgb_agree():
    hex_stops = [(0.0, "#000080"), (0.5, "#ffffff"), (1.0, "#008000")]
    rgb_stops = [(0.0, (0.0, 0.0, 128 / 255)), (0.5, (1.0, 1.0, 1.0)), (1.0, (0.0, 128 / 255, 0.0))]
    a = fractal(16, 16, iterations=16, palette=hex_stops)
    b = fractal(16, 16, iterations=16, palette=rgb_stops)
    assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(a, fractal(16, 16, iterations=16))


def test_ops_reexports_the_fractal_api():
    assert ops.fractal is fractal and ops.fractal_frames is fractal_frames
    assert ops.fractal_field is fractal_field


# ---------------------------------------------------------------- palettes

def test_apply_palette_interpolates_and_holds_ends():
    stops = [(0.25, "#000000"), (0.75, "#ffffff")]
    rgb = apply_palette(torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], dtype=torch.float64), stops)
    assert rgb.shape == (3, 1, 5)
    np.testing.assert_allclose(rgb[0, 0].numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])


def test_apply_palette_hard_edge_and_batch():
    stops = [(0.0, "#000000"), (0.5, "#000000"), (0.5, "#ffffff"), (1.0, "#ffffff")]
    rgb = apply_palette(torch.tensor([[[0.49, 0.5, 0.51]]]), stops)
    assert rgb.shape == (1, 3, 1, 3)
    assert rgb[0, 0, 0].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("name", [*PALETTES, "ocean", "grey"])
def test_named_palettes(name):
    pos, col = palette_stops(name)
    assert pos[0] == 0 and pos[-1] == 1 and col.shape == (pos.numel(), 3)
    assert float(col.min()) >= 0 and float(col.max()) <= 1
    img = fractal(8, 8, iterations=8, palette=name)
    assert img.shape == (3, 8, 8)


def test_sea_palette_is_blue_green_on_white():
    _, col = palette_stops("sea")
    assert any(c[2] > c[0] + 0.3 for c in col.tolist())  # blues
    assert any(c[1] > c[0] + 0.15 and c[1] >= c[2] for c in col.tolist())  # greens
    assert min(palette_interior("sea")) > 0.95


@pytest.mark.parametrize("palette, fragment", [
    ("plasma-ish", "palette='plasma-ish' is not one of"),
    ([(0.0, "#000000")], "at least two"),
    ([(0.0, "#000000"), (1.5, "#ffffff")], "position 1.5 must be a number in [0, 1]"),
    ([(0.6, "#000000"), (0.4, "#ffffff")], "non-decreasing"),
    ([(0.0, "#00000"), (1.0, "#ffffff")], "must be '#rrggbb'"),
    ([(0.0, (0, 0, 255)), (1.0, "#ffffff")], "components in [0, 1]"),
    ([(0.0, "#000000", 1), (1.0, "#ffffff")], "(position, colour) pair"),
])
def test_palette_errors(palette, fragment):
    with pytest.raises(ParamError) as info:
        fractal(4, 4, iterations=2, palette=palette)
    assert fragment in str(info.value)


def test_apply_palette_rejects_values_outside_unit_range():
    with pytest.raises(ShapeError, match="must lie in"):
        apply_palette(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ShapeError, match="floating"):
        apply_palette(torch.zeros(2, dtype=torch.int64))


# ---------------------------------------------------------------- frames

def test_frames_count_budgets_and_last_frame():
    video = fractal_frames(20, 20, frames=4, iterations=10)
    assert video.shape == (4, 3, 20, 20) and video.dtype == torch.float32
    assert torch.equal(video[-1], fractal(20, 20, iterations=10))


def test_more_frames_than_iterations_repeat_budgets():
    video = fractal_frames(10, 10, frames=5, iterations=2)  # budgets 1, 1, 2, 2, 2
    assert video.shape == (5, 3, 10, 10)
    assert torch.equal(video[0], video[1]) and torch.equal(video[2], video[4])
    assert torch.equal(video[4], fractal(10, 10, iterations=2))


def test_single_pixel_image():
    img = fractal(1, 1, iterations=4)
    assert img.shape == (3, 1, 1)
    assert float(img[2, 0, 0]) > 0.8  # the one pixel is c = 0: the pole, the blue disk


def test_frames_grow_monotonically():
    kw = dict(center=(0.9, 0.4), span=0.6, iterations=48)
    video = fractal_frames(32, 32, frames=6, **kw)
    interior = torch.tensor(palette_interior("sea"))[:, None, None]
    coloured = (video != interior).any(1)  # (T, 3, H, W) -> (T, H, W)
    sizes = coloured.flatten(1).sum(1)
    for t in range(5):
        assert bool((coloured[t] <= coloured[t + 1]).all())  # once coloured, stays coloured
        keep = coloured[t]
        assert torch.equal(video[t][:, keep], video[t + 1][:, keep])  # ... in the same colour
    assert sizes[-1] > sizes[0]  # and the fractal does grow


def test_frames_match_separate_renders_on_the_full_scale():
    # Frame t is the field at budget ceil(N (t + 1) / T): its done-set equals a separate run's.
    video_done = [fractal_field(24, 24, iterations=b).done for b in (4, 8, 12)]
    video = fractal_frames(24, 24, frames=3, iterations=12, interior="#ff0000")
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    for t in range(3):
        assert torch.equal((video[t] != red).any(0), video_done[t])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(width=0), "width=0 must be between 1 and 16384"),
    (dict(height=20000), "height=20000 must be between 1 and 16384"),
    (dict(width=2.5), "width=2.5 must be a whole number"),
    (dict(iterations=0), "iterations=0 must be between 1 and 100000"),
    (dict(iterations=100001), "iterations=100001 must be between 1 and 100000"),
    (dict(supersample=5), "supersample=5 must be between 1 and 4"),
    (dict(formula="burning_ship"), "formula='burning_ship' is not one of"),
    (dict(formula="multibrot", power=1), "must be >= 2 for formula='multibrot'"),
    (dict(power=0), "power=0 must be >= 1 for formula='inverse_power'"),
    (dict(power=2.5), "power=2.5 must be a whole number"),
    (dict(coloring="smooth"), "coloring='smooth' needs an escape-time map"),
    (dict(formula="multibrot", power=2, coloring="pole"), "z^p + c has no pole"),
    (dict(coloring="rainbow"), "coloring='rainbow' is not one of"),
    (dict(span=0.0), "span=0.0 must be > 0"),
    (dict(span=1e-12), "below the resolution of float32; use dtype float64"),
    (dict(width=8192, supersample=3), "supersample=3 at 8192x8 computes 24576x24 samples, more "
                                      "than 16384 a side; use supersample <= 2"),
    (dict(width=512, center=(0.3, 0.5), span=5e-4, supersample=4),
     "span=0.0005 over 512 pixels x supersample 4 at center=(0.3, 0.5) is below the resolution"),
    (dict(center=(0.0,)), "center=(0.0,) must be a pair"),
    (dict(center=(float("nan"), 0.0)), "finite numbers"),
    (dict(julia=(1.0, float("inf"))), "julia=(1.0, inf) must be a pair (re, im) of finite"),
    (dict(eps=0.0), "eps=0.0 must be > 0"),
    (dict(formula="multibrot", power=2, bailout=1.0), "bailout=1.0 must be >= 2"),
    (dict(formula="multibrot", power=20, bailout=1e3), "overflows torch.float32"),
    (dict(coefficient=complex("nan")), "must be a finite complex number"),
    (dict(trap_radius=-1.0), "trap_radius=-1.0 must be > 0"),
    (dict(dtype=torch.float16), "must be torch.float32 or torch.float64"),
    (dict(interior="red"), "interior='red' must be '#rrggbb'"),
])
def test_parameter_errors(kwargs, fragment):
    args = dict(width=8, height=8)
    args.update(kwargs)
    w, h = args.pop("width"), args.pop("height")
    with pytest.raises(ParamError) as info:
        fractal(w, h, **args)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_frames_errors():
    with pytest.raises(ParamError, match="frames=0 must be between 1 and 10000"):
        fractal_frames(8, 8, frames=0)


def test_field_errors():
    with pytest.raises(ParamError, match="trap='star' is not one of"):
        fractal_field(8, 8, trap="star")


@pytest.mark.gpu
def test_cuda_counts_match_cpu():
    kw = dict(iterations=200, dtype=torch.float64)
    cpu = fractal_field(256, 256, **kw)
    gpu = fractal_field(256, 256, device="cuda", **kw)
    assert gpu.counts.device.type == "cuda"
    assert (gpu.counts.cpu() == cpu.counts).float().mean() >= 0.999
    img = fractal(256, 256, device="cuda", supersample=2)
    assert img.device.type == "cuda" and img.shape == (3, 256, 256)


@pytest.mark.parametrize("supersample", [1, 3])
def test_a_picture_iterated_in_bands_is_the_whole_picture(monkeypatch, supersample):
    import minart.fractal as fr

    kw = dict(iterations=25, supersample=supersample, coloring="smooth", formula="multibrot")
    whole = fractal(41, 29, **kw)
    clip = fractal_frames(41, 29, frames=3, **kw)
    monkeypatch.setattr(fr, "_BAND_SAMPLES", 300)  # a few pixel rows a band
    assert len(list(fr._bands((41 * supersample, 29 * supersample, 0j, 3.0, torch.float32,
                               torch.device("cpu")), supersample, 1))) >= 5
    # orbits do not change; only the last bits of the smooth colouring's logarithms may
    torch.testing.assert_close(fractal(41, 29, **kw), whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(fractal_frames(41, 29, frames=3, **kw), clip, rtol=0, atol=1e-6)
    pole = dict(iterations=25, supersample=supersample)
    monkeypatch.setattr(fr, "_BAND_SAMPLES", 1 << 21)
    full = fractal(41, 29, **pole)
    monkeypatch.setattr(fr, "_BAND_SAMPLES", 300)
    assert torch.equal(fractal(41, 29, **pole), full)


_OTHER_VALUES = {"coefficient": 0.5 + 0.2j, "eps": 0.3, "bailout": 4.0, "trap_point": (0.3, 0.1),
                 "trap_radius": 0.9, "trap_angle": 1.0, "interior": "#ff0000"}


@pytest.mark.parametrize("formula,power", [("inverse_power", 7), ("multibrot", 2)])
@pytest.mark.parametrize("coloring", ["auto", "pole", "smooth", "trap_point", "trap_circle",
                                      "trap_line", "modulus", "argument"])
def test_unused_options_change_no_pixel_and_the_others_do(formula, power, coloring):
    if (formula, coloring) in (("inverse_power", "smooth"), ("multibrot", "pole")):
        with pytest.raises(ParamError, match="coloring="):
            unused_options(formula=formula, coloring=coloring)
        return
    unused = unused_options(formula=formula, coloring=coloring)
    kw = dict(formula=formula, power=power, coloring=coloring, iterations=16,
              trap_point=(3.0, 0.0))
    base = fractal(24, 24, **kw)
    for name, value in _OTHER_VALUES.items():
        same = torch.equal(base, fractal(24, 24, **{**kw, name: value}))
        if name in unused:
            assert same, name
        elif not (name == "bailout" and coloring in ("trap_point", "trap_circle")):
            # (a Multibrot trap sees bailout only through orbit points beyond |z| = 4, which
            # lie farther from a point or circle trap than the orbit's earlier points)
            assert not same, name
