"""Compositing: blend identities and NumPy references, masks, resize fits, grid placement, sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minart import composite, ops
from minart._checks import check_unit_range
from minart.composite import (
    BLEND_MODES,
    blend,
    boomerang,
    colorize,
    concatenate,
    crossfade,
    grid,
    hold,
    luminance_mask,
    resize,
    reverse,
    subsample,
)
from minart.errors import ParamError, ShapeError


def _numpy_blend(mode: str, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The W3C formulas written out in float64, element by element where they branch."""
    if mode == "normal":
        return s
    if mode == "multiply":
        return b * s
    if mode == "screen":
        return 1 - (1 - b) * (1 - s)
    if mode == "overlay":
        return np.where(b <= 0.5, 2 * b * s, 1 - 2 * (1 - b) * (1 - s))
    if mode == "add":
        return np.minimum(b + s, 1)
    if mode == "difference":
        return np.abs(b - s)
    out = np.empty_like(b)
    for idx in np.ndindex(b.shape):
        cb, cs = b[idx], s[idx]
        if cs <= 0.5:
            out[idx] = cb - (1 - 2 * cs) * cb * (1 - cb)
        else:
            d = ((16 * cb - 12) * cb + 4) * cb if cb <= 0.25 else np.sqrt(cb)
            out[idx] = cb + (2 * cs - 1) * (d - cb)
    return out


def test_ops_exports_compositing():
    assert ops.blend is blend and ops.grid is grid and ops.boomerang is boomerang


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_opacity_zero_is_base_exactly(gen, mode):
    base, top = torch.rand(2, 3, 5, 6, generator=gen), torch.rand(2, 3, 5, 6, generator=gen)
    assert torch.equal(blend(base, top, mode=mode, opacity=0.0), base)
    zero_mask = torch.zeros(1, 5, 6)
    assert torch.equal(blend(base, top, mode=mode, mask=zero_mask), base)


def test_blend_normal_full_opacity_is_top_exactly(gen):
    base, top = torch.rand(3, 5, 6, generator=gen), torch.rand(3, 5, 6, generator=gen)
    assert torch.equal(blend(base, top), top)
    assert torch.equal(blend(base, top, mask=torch.ones(1, 5, 6)), top)


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_matches_numpy_reference_and_stays_in_range(gen, mode):
    base = torch.rand(2, 3, 8, 9, generator=gen)
    top = torch.rand(2, 3, 8, 9, generator=gen)
    opacity = 0.7
    out = blend(base, top, mode=mode, opacity=opacity)
    b, s = base.double().numpy(), top.double().numpy()
    ref = (1 - opacity) * b + opacity * _numpy_blend(mode, b, s)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_stays_in_unit_range_on_extremes(gen, mode):
    values = torch.tensor([0.0, 1e-7, 0.25, 0.5, 0.75, 1 - 1e-7, 1.0])
    b, s = torch.meshgrid(values, values, indexing="ij")
    out = blend(b.expand(3, -1, -1), s.expand(3, -1, -1), mode=mode)
    assert out.min() >= 0 and out.max() <= 1


def test_soft_light_uses_the_w3c_branch_for_dark_backdrops():
    # b = 0.1 <= 1/4 with s = 1: D(b) = ((1.6 - 12) * 0.1 + 4) * 0.1 = 0.296, B = 0.1 + 0.196
    out = blend(torch.full((1, 1, 1), 0.1), torch.ones(1, 1, 1), mode="soft_light")
    assert out.item() == pytest.approx(0.296, abs=1e-6)


def test_blend_mask_is_per_pixel_opacity(gen):
    base, top = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    mask = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    out = blend(base, top, mask=mask, opacity=0.5)
    assert out[1].tolist() == [[0.0, 0.125], [0.25, 0.5]]


def test_blend_broadcasts_a_single_top_over_a_batch(gen):
    base, top = torch.rand(4, 3, 3, 3, generator=gen), torch.rand(3, 3, 3, generator=gen)
    out = blend(base, top, mode="screen")
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out[2], blend(base[2], top, mode="screen"))


def test_blend_errors():
    img = torch.rand(3, 4, 4)
    with pytest.raises(ShapeError, match=r"top \(3, 4, 5\) does not match base \(3, 4, 4\)"):
        blend(img, torch.rand(3, 4, 5))
    with pytest.raises(ShapeError, match=r"top values must lie in \[0, 1\], got \[0, 2\]"):
        blend(img, torch.cat([torch.zeros(1, 4, 4), torch.full((2, 4, 4), 2.0)]))
    with pytest.raises(ShapeError, match="base contains NaN or Inf values"):
        blend(torch.full((3, 4, 4), float("nan")), img)
    with pytest.raises(ParamError, match=r"opacity=1.5 must be <= 1.0"):
        blend(img, img, opacity=1.5)
    with pytest.raises(ParamError, match=r"mode='burn' is not one of 'normal'"):
        blend(img, img, mode="burn")
    with pytest.raises(ShapeError, match=r"mask must be \(1, H, W\) or \(B, 1, H, W\)"):
        blend(img, img, mask=torch.ones(3, 4, 4))


def test_luminance_mask_is_rec709_smoothstep(gen):
    image = torch.rand(3, 6, 7, generator=gen)
    mask = luminance_mask(image, low=0.2, high=0.7)
    rgb = image.double().numpy()
    y = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    t = np.clip((y - 0.2) / 0.5, 0, 1)
    np.testing.assert_allclose(mask[0].numpy(), t * t * (3 - 2 * t), atol=1e-6)
    inv = luminance_mask(image, low=0.2, high=0.7, invert=True)
    assert torch.allclose(inv, 1 - mask)
    assert mask.shape == (1, 6, 7)
    assert luminance_mask(image.unsqueeze(0)).shape == (1, 1, 6, 7)


def test_luminance_mask_errors():
    with pytest.raises(ParamError, match=r"low=0.5 must be below high=0.5"):
        luminance_mask(torch.rand(3, 2, 2), low=0.5, high=0.5)
    with pytest.raises(ShapeError, match="must have 1, 3 or 4 channels"):
        luminance_mask(torch.rand(2, 2, 2))


def test_colorize_is_a_gradient_map_of_rec709_luma(gen):
    image = torch.rand(2, 3, 5, 4, generator=gen)
    stops = [(0.0, "#000000"), (0.5, "#ff0000"), (1.0, "#ffff00")]  # black -> red -> yellow
    out = colorize(image, palette=stops)
    rgb = image.double().numpy()
    y = 0.2126 * rgb[:, 0] + 0.7152 * rgb[:, 1] + 0.0722 * rgb[:, 2]  # (B, H, W)
    expected = np.stack([np.interp(y, [0, 0.5, 1], [0, 1, 1]), np.interp(y, [0, 0.5, 1], [0, 0, 1]),
                         np.zeros_like(y)], axis=1)  # each channel's stops, by hand
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    grey = torch.rand(1, 6, 7, generator=gen)
    assert torch.equal(colorize(grey), grey.expand(3, 6, 7))  # 'gray' keeps a mask's values
    assert colorize(torch.rand(4, 2, 2, generator=gen)).shape == (3, 2, 2)  # alpha ignored


def test_colorize_errors():
    with pytest.raises(ShapeError, match="must have 1, 3 or 4 channels for a gradient map, got 2"):
        colorize(torch.rand(2, 2, 2))
    with pytest.raises(ParamError, match=r"palette='nope' is not one of .*stops$"):
        colorize(torch.rand(3, 2, 2), palette="nope")  # nothing close: no guess
    with pytest.raises(ParamError, match=r"stops; did you mean 'twilight'[?]$"):
        colorize(torch.rand(3, 2, 2), palette="twilite")


def test_resize_stretch_matches_torch_antialiased(gen):
    image = torch.rand(3, 20, 30, generator=gen)
    out = resize(image, 10, 7)
    ref = torch.nn.functional.interpolate(image[None], size=(7, 10), mode="bilinear", antialias=True)[0]
    assert out.shape == (3, 7, 10) and torch.allclose(out, ref)


def test_resize_contain_letterboxes_and_cover_crops_centre():
    image = torch.ones(3, 10, 20)
    contained = resize(image, 20, 20, fit="contain", background=(0.0, 0.5, 0.0))
    assert contained.shape == (3, 20, 20)
    assert torch.equal(contained[:, 5:15], torch.ones(3, 10, 20))
    assert contained[1, :5].unique().tolist() == [0.5] and contained[0, 15:].unique().tolist() == [0.0]
    ramp = torch.arange(40.0).div(39).expand(1, 10, 40).clone()  # columns 0..39
    covered = resize(ramp, 20, 10, fit="cover")
    assert covered.shape == (1, 10, 20)
    assert torch.equal(covered, ramp[:, :, 10:30])


def test_resize_bicubic_stays_in_range(gen):
    image = (torch.rand(1, 16, 16, generator=gen) > 0.5).float()
    out = resize(image, 37, 29, interpolation="bicubic")
    assert out.min() >= 0 and out.max() <= 1


def test_resize_errors():
    with pytest.raises(ParamError, match="width=0 must be a whole number >= 1"):
        resize(torch.rand(3, 4, 4), 0, 4)
    with pytest.raises(ParamError, match=r"background=\(0.0, 0.0\) has 2 values but the image has 3"):
        resize(torch.rand(3, 4, 4), 8, 4, fit="contain", background=(0.0, 0.0))
    with pytest.raises(ParamError, match="fit='fill' is not one of"):
        resize(torch.rand(3, 4, 4), 8, 4, fit="fill")


@pytest.mark.parametrize(("n", "columns", "spacing"), [(1, None, 0), (5, 2, 3), (7, None, 1), (4, 4, 2)])
def test_grid_places_each_tile_at_its_pixels(gen, n, columns, spacing):
    tiles = [torch.rand(3, 5, 4, generator=gen) for _ in range(n)]
    sheet = grid(tiles, columns=columns, spacing=spacing, background=(0.25, 0.5, 0.75))
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    assert sheet.shape == (3, rows * 5 + (rows + 1) * spacing, cols * 4 + (cols + 1) * spacing)
    covered = torch.zeros(sheet.shape[1:], dtype=torch.bool)
    for i, tile in enumerate(tiles):
        y, x = spacing + (i // cols) * (5 + spacing), spacing + (i % cols) * (4 + spacing)
        assert torch.equal(sheet[:, y:y + 5, x:x + 4], tile)
        covered[y:y + 5, x:x + 4] = True
    background = sheet[:, ~covered]
    assert torch.equal(background, torch.tensor([0.25, 0.5, 0.75])[:, None].expand_as(background))


def test_grid_accepts_frames_and_draws_labels(gen):
    frames = torch.rand(3, 1, 6, 40, generator=gen)
    plain = grid(frames, columns=3, spacing=2, background=1.0)
    labelled = grid(frames, columns=3, spacing=2, background=1.0, labels=["a", "Wide label", ""],
                    label_color=0.0)
    assert labelled.shape[1] == plain.shape[1] + 13 and labelled.shape[2] == plain.shape[2]
    bands = [labelled[0, 8:21, 2 + k * 42:2 + k * 42 + 40] for k in range(3)]
    ink = [int((band < 0.5).sum()) for band in bands]
    assert ink[1] > ink[0] > 0 and ink[2] == 0
    assert torch.equal(labelled[:, 2:8, 2:42], frames[0])


def test_grid_errors():
    with pytest.raises(ShapeError, match=r"images\[0\] is \(3, 4, 4\) .*images\[1\] is \(3, 4, 5\)"):
        grid([torch.rand(3, 4, 4), torch.rand(3, 4, 5)])
    with pytest.raises(ShapeError, match="at least one image"):
        grid([])
    with pytest.raises(ParamError, match="labels must be a list of 2 strings"):
        grid([torch.rand(3, 4, 4)] * 2, labels=["one"])
    with pytest.raises(ParamError, match="one line of Latin-1 text"):
        grid([torch.rand(3, 4, 4)], labels=["tick \u2713"])


def test_crossfade_endpoints_and_midpoint(gen):
    a, b = torch.rand(3, 4, 5, generator=gen), torch.rand(3, 4, 5, generator=gen)
    fade = crossfade(a, b, frames=5)
    assert fade.shape == (5, 3, 4, 5)
    assert torch.equal(fade[0], a) and torch.equal(fade[-1], b)
    assert torch.allclose(fade[2], (a + b) / 2)


def test_crossfade_of_sequences_follows_both(gen):
    a, b = torch.rand(4, 1, 2, 2, generator=gen), torch.rand(4, 1, 2, 2, generator=gen)
    fade = crossfade(a, b, frames=4)
    assert torch.allclose(fade[1], a[1] * 2 / 3 + b[1] / 3)
    with pytest.raises(ShapeError, match="a has 4 frames but frames=6"):
        crossfade(a, b, frames=6)
    with pytest.raises(ParamError, match="frames=1 must be a whole number >= 2"):
        crossfade(a[0], b[0], frames=1)


def test_sequence_lengths_and_order():
    seq = torch.arange(5.0).view(5, 1, 1, 1) / 4
    flat = lambda t: (t.flatten() * 4).round().int().tolist()  # noqa: E731
    assert flat(reverse(seq)) == [4, 3, 2, 1, 0]
    assert flat(boomerang(seq)) == [0, 1, 2, 3, 4, 3, 2, 1]
    assert len(boomerang(seq[:1])) == 1 and len(boomerang(seq[:2])) == 2
    assert flat(subsample(seq)) == [0, 2, 4]
    assert flat(subsample(seq, every=2, offset=1)) == [1, 3]
    assert flat(hold(seq, first=2, last=1)) == [0, 0, 0, 1, 2, 3, 4, 4]
    assert len(hold(seq)) == 5
    assert flat(concatenate([seq[:2], seq[4], reverse(seq[:2])])) == [0, 1, 4, 1, 0]


@pytest.mark.parametrize("t", [1, 2, 3, 8])
def test_boomerang_and_hold_lengths(t):
    seq = torch.rand(t, 2, 3, 3)
    assert boomerang(seq).shape == (max(1, 2 * t - 2), 2, 3, 3)
    assert hold(seq, first=3, last=4).shape == (t + 7, 2, 3, 3)
    assert torch.equal(boomerang(seq)[:t], seq)


def test_sequence_errors():
    with pytest.raises(ShapeError, match=r"frames must be a \(T, C, H, W\) frame sequence, got shape \(3, 4, 4\)"):
        boomerang(torch.rand(3, 4, 4))
    with pytest.raises(ParamError, match=r"offset=5 must be an integer in \[0, 5\)"):
        subsample(torch.rand(5, 1, 2, 2), offset=5)
    with pytest.raises(ParamError, match="every=0 must be a whole number >= 1"):
        subsample(torch.rand(5, 1, 2, 2), every=0)
    with pytest.raises(ParamError, match="last=-1 must be a whole number >= 0"):
        hold(torch.rand(2, 1, 2, 2), last=-1)
    with pytest.raises(ShapeError, match=r"sequences\[1\] has frames \(1, 2, 3\)"):
        concatenate([torch.rand(2, 1, 2, 2), torch.rand(1, 1, 2, 3)])
    with pytest.raises(ShapeError, match="non-empty list"):
        concatenate([])


@pytest.mark.gpu
def test_ops_stay_on_cuda_and_match_cpu(gen):
    from minart.io import encode_image

    base, top = torch.rand(2, 3, 16, 20, generator=gen), torch.rand(2, 3, 16, 20, generator=gen)
    mask = luminance_mask(top, low=0.2, high=0.8)
    cpu = blend(base, top, mode="soft_light", opacity=0.6, mask=mask)
    gpu = blend(base.cuda(), top.cuda(), mode="soft_light", opacity=0.6, mask=mask.cuda())
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    for fit in ("stretch", "cover", "contain"):
        on_gpu = resize(base.cuda(), 9, 7, fit=fit, background=0.5)
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(on_gpu.cpu(), resize(base, 9, 7, fit=fit, background=0.5), atol=1e-5)
    sheet = grid(base.cuda(), labels=["a", "b"])
    assert sheet.device.type == "cuda" and torch.equal(sheet.cpu(), grid(base, labels=["a", "b"]))
    fade = crossfade(base[0].cuda(), top[0].cuda(), frames=4)
    assert torch.allclose(boomerang(fade).cpu(), boomerang(crossfade(base[0], top[0], frames=4)))
    assert encode_image(base[0].cuda(), bits=16) == encode_image(base[0], bits=16)


# ---------------------------------------------------------------- review fixes


def test_check_unit_range_returns_in_range_tensors_untouched_and_clamps_rounding():
    inside = torch.tensor([-0.0, 0.25, 1.0])
    assert check_unit_range("x", inside) is inside  # same object: results of in-range inputs unchanged
    over = torch.tensor([-4e-7, 0.5, 1.0 + 2.4e-7])
    assert check_unit_range("x", over).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ShapeError, match=r"^x values must lie in \[0, 1\], got \[0, 1.000002\]; use "):
        check_unit_range("x", torch.tensor([0.0, 1.0 + 2e-6]))
    with pytest.raises(ShapeError, match=r"^x contains NaN or Inf values$"):
        check_unit_range("x", torch.tensor([0.5, float("inf")]))


def test_rounding_overshoot_is_clamped_and_further_values_refused_with_enough_digits():
    image = torch.ones(3, 4, 4)
    image[0, 0, 0] = 1.0 + 2.4e-7  # what a bilinear resize of white leaves
    same = resize(image, 4, 4)  # the same size: a copy of the checked input
    assert torch.equal(same, torch.ones(3, 4, 4))
    with pytest.raises(ShapeError, match=r"top values must lie in \[0, 1\], got \[1.000002, 1.000002\]"):
        blend(torch.ones(3, 4, 4), torch.full((3, 4, 4), 1.0 + 2e-6))


def test_resize_clamps_bilinear_rounding_to_the_unit_range():
    white = torch.ones(3, 5, 25)
    raw = torch.nn.functional.interpolate(white[None], size=(23, 17), mode="bilinear", antialias=True,
                                          align_corners=False)
    assert raw.max() > 1  # the overshoot this guards against
    for fit in ("stretch", "cover", "contain"):
        out = resize(white, 17, 23, fit=fit, background=1.0)
        assert out.max() <= 1 and out.min() >= 0, fit
    assert torch.equal(resize(white, 17, 23), raw[0].clamp(0, 1))


def test_resize_refuses_half_precision_on_the_cpu_instead_of_a_raw_torch_error():
    for dtype in (torch.float16, torch.bfloat16):
        image = torch.rand(3, 8, 8).to(dtype)
        with pytest.raises(ShapeError, match=rf"image is {dtype}, which torch cannot resample .*image.float\(\)"):
            resize(image, 4, 4)
        assert torch.equal(resize(image, 8, 8), image)  # nothing to resample: still a copy


def test_blend_refuses_a_mask_of_another_dtype():
    img = torch.rand(3, 4, 4)
    with pytest.raises(ShapeError, match=r"mask has dtype torch\.float64 but base has torch\.float32"):
        blend(img, img, mask=torch.ones(1, 4, 4, dtype=torch.float64))


def test_grid_checks_the_range_of_all_tiles_once(gen, monkeypatch):
    calls = []
    real = composite.check_unit_range
    monkeypatch.setattr(composite, "check_unit_range", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    tiles = [torch.rand(3, 4, 4, generator=gen) for _ in range(6)]
    sheet = grid(tiles, columns=3, spacing=1)
    assert calls == ["images"]  # one check (one wait for the device) for six tiles
    assert torch.equal(sheet[:, 1:5, 6:10], tiles[1])
    calls.clear()
    grid(torch.stack(tiles), columns=3)
    assert calls == ["images"]


def test_grid_names_the_first_tile_out_of_range_and_checks_whole_numbers(gen):
    tiles = [torch.rand(3, 4, 4, generator=gen) for _ in range(3)]
    tiles[2] = tiles[2] + 1.5
    with pytest.raises(ShapeError, match=r"^images\[2\] values must lie in \[0, 1\]"):
        grid(tiles)
    with pytest.raises(ParamError, match=r"^columns=0 must be a whole number >= 1$"):
        grid(tiles[:2], columns=0)
    with pytest.raises(ParamError, match=r"^spacing=-1 must be a whole number >= 0$"):
        grid(tiles[:2], spacing=-1)
    with pytest.raises(ParamError, match=r"^first=1.0 must be a whole number >= 0$"):
        hold(torch.zeros(2, 1, 1, 1), first=1.0)


def test_crossfade_uses_the_checked_sequences(gen):
    a = torch.ones(3, 1, 2, 2)
    a[1, 0, 0, 0] = 1.0 + 2.4e-7
    out = crossfade(a, torch.zeros(3, 1, 2, 2), frames=3)
    assert out.max() <= 1 and torch.equal(out[0], torch.ones(1, 2, 2))
