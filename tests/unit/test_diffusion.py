"""Perona-Malik: medpy for the classic scheme, a NumPy reference for the seed scheme, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from medpy.filter.smoothing import anisotropic_diffusion

from minart.diffusion import (
    KAPPA_MIN,
    classic_step,
    laplacian_operator,
    perona_malik,
    perona_malik_step,
    perona_malik_sweep,
    scharr_operators,
    seed_step,
)
from minart.errors import ParamError, ShapeError

OPTIONS = {"exp": 1, "inverse": 2, "tukey": 3}


def _smooth_image(gen: torch.Generator, c: int = 3, h: int = 24, w: int = 32) -> torch.Tensor:
    """Blocks plus noise: edges to keep and texture to smooth."""
    base = torch.rand(c, h // 8, w // 8, generator=gen).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return (0.8 * base + 0.2 * torch.rand(c, h, w, generator=gen)).clamp(0, 1)


def _total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum())


def _numpy_seed_step(img: np.ndarray, op: np.ndarray, kappa: float, dt: float) -> np.ndarray:
    """The seed post's step from its equations, in float64: g = K * reflect_pad(I)."""
    c, h, w = img.shape
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    g = np.zeros_like(img)
    for o in range(c):
        for i in range(c):
            for dy in range(3):
                for dx in range(3):
                    g[o] += op[o, i, dy, dx] * padded[i, dy:dy + h, dx:dx + w]
    return np.clip(img + dt * g * np.exp(-g ** 2 / kappa ** 2), 0.0, 1.0)


@pytest.mark.parametrize("conduction", ["exp", "inverse", "tukey"])
def test_classic_matches_medpy_per_channel(gen, conduction):
    image = _smooth_image(gen)
    ours = perona_malik(image, steps=50, kappa=0.1, dt=0.2, conduction=conduction)
    ref = np.stack([
        anisotropic_diffusion(image[c].numpy(), niter=50, kappa=0.1, gamma=0.2, option=OPTIONS[conduction])
        for c in range(3)
    ])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)


def test_classic_would_notice_a_wrong_border(gen):
    image = _smooth_image(gen)
    ours = perona_malik(image, steps=50, kappa=0.1, dt=0.2)
    wrapped = np.stack([
        anisotropic_diffusion(np.pad(image[c].numpy(), 1, mode="wrap"), 50, 0.1, 0.2, option=1)[1:-1, 1:-1]
        for c in range(3)])
    assert np.abs(ours.numpy() - wrapped).max() > 1e-3


@pytest.mark.parametrize("conduction", ["exp", "inverse", "tukey"])
def test_classic_keeps_the_mean_and_does_not_raise_total_variation(gen, conduction):
    image = _smooth_image(gen).unsqueeze(0)
    out = perona_malik(image, steps=30, kappa=0.15, dt=0.25, conduction=conduction)
    assert out.shape == image.shape
    torch.testing.assert_close(out.mean(dim=(-1, -2)), image.mean(dim=(-1, -2)), atol=1e-6, rtol=0)
    assert _total_variation(out) < _total_variation(image)


def test_seed_step_matches_numpy_reference(gen):
    image = torch.rand(3, 12, 15, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 3, 3, 3, generator=gen, dtype=torch.float64)
    operator = laplacian_operator(3, dtype=torch.float64) + 0.3 * noise
    ours, _ = seed_step(image.unsqueeze(0), operator, kappa=0.2, dt=0.2)
    ref = _numpy_seed_step(image.numpy(), operator.numpy(), 0.2, 0.2)
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-12)


def test_seed_scheme_many_steps_match_reference_and_stay_in_range(gen):
    image = torch.rand(3, 10, 11, generator=gen, dtype=torch.float64)
    out = perona_malik(image, steps=20, kappa=0.2, dt=0.2, scheme="seed")
    ref = image.numpy()
    op = laplacian_operator(3, dtype=torch.float64).numpy()
    for _ in range(20):
        ref = _numpy_seed_step(ref, op, 0.2, 0.2)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_laplacian_operator_is_laplacian_of_channel_sum(gen):
    image = torch.rand(1, 3, 9, 9, generator=gen)
    _, g = seed_step(image, laplacian_operator(3), kappa=0.2, dt=0.2)
    s = image.sum(1, keepdim=True)
    inner = s[..., :-2, 1:-1] + s[..., 2:, 1:-1] + s[..., 1:-1, :-2] + s[..., 1:-1, 2:] - 4 * s[..., 1:-1, 1:-1]
    torch.testing.assert_close(g[..., 1:-1, 1:-1], inner.expand(1, 3, 7, 7))


def test_seed_inverse_conduction_uses_scharr_magnitude(gen):
    image = torch.rand(1, 3, 8, 8, generator=gen)
    out_inv = perona_malik(image, steps=1, kappa=0.5, dt=0.2, scheme="seed", conduction="inverse")
    out_exp = perona_malik(image, steps=1, kappa=0.5, dt=0.2, scheme="seed", conduction="exp")
    assert out_inv.shape == image.shape
    assert not torch.equal(out_inv, out_exp)


def test_substep_auto_splits_large_steps(gen):
    image = _smooth_image(gen)
    big = perona_malik(image, steps=3, kappa=0.1, dt=0.5)
    small = perona_malik(image, steps=6, kappa=0.1, dt=0.25)
    torch.testing.assert_close(big, small)
    assert torch.isfinite(perona_malik(image, steps=20, kappa=0.1, dt=2.0)).all()


def test_substep_off_refuses_unstable_dt(gen):
    with pytest.raises(ParamError, match=r"dt=0.4 exceeds the stability bound 0.25 for scheme 'classic'; "
                                         r"use dt <= 0.25 or substep: auto"):
        perona_malik(_smooth_image(gen), steps=1, kappa=0.1, dt=0.4, substep="off")


@pytest.mark.parametrize("scheme", ["classic", "seed"])
def test_callback_every_calls_after_each_run_and_the_last_step(gen, scheme):
    image = _smooth_image(gen)
    seen = []
    out = perona_malik(image, steps=5, kappa=0.1, dt=0.5, scheme=scheme, callback_every=2,
                       callback=lambda step, img: seen.append((step, img.clone())))
    assert [step for step, _ in seen] == [2, 4, 5]
    for step, img in seen:  # the callback sees the (1, C, H, W) batch of a (C, H, W) image
        ref = perona_malik(image, steps=step, kappa=0.1, dt=0.5, scheme=scheme)
        assert torch.equal(img[0], ref), step
    assert torch.equal(out, seen[-1][1][0])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"steps": -1}, ParamError, "steps=-1 must be a whole number >= 0"),
        ({"callback_every": 0}, ParamError, "callback_every=0 must be a whole number >= 1"),
        ({"kappa": 0.0}, ParamError, "kappa=0.0 must be >= 1e-18"),
        ({"kappa": 1e-30}, ParamError, "kappa=1e-30 must be >= 1e-18"),
        ({"dt": float("nan")}, ParamError, "dt=nan must be a finite number"),
        ({"scheme": "fancy"}, ParamError, "scheme='fancy' is not one of 'classic', 'seed'"),
        ({"conduction": "gauss"}, ParamError, "conduction='gauss' is not one of"),
        ({"operator": torch.zeros(3, 3, 3, 3)}, ParamError, "operator is used by scheme 'seed' only"),
        ({"scheme": "seed", "operator": torch.zeros(3, 1, 3, 3)}, ShapeError, r"operator must be \(3, 3, 3, 3\)"),
    ],
)
def test_errors(gen, kwargs, error, message):
    params = {"steps": 1, "kappa": 0.1, "dt": 0.2, **kwargs}
    with pytest.raises(error, match=message):
        perona_malik(_smooth_image(gen), **params)


@pytest.mark.parametrize("scheme", ["classic", "seed"])
@pytest.mark.parametrize("conduction", ["exp", "inverse", "tukey"])
def test_smallest_kappa_keeps_flat_regions_finite(gen, scheme, conduction):
    # the seed scheme divides by kappa^2: at kappa = 1e-30 that is 0 in float32 and a flat
    # region (g = 0) became 0/0 = nan, so such a kappa is refused and the bound itself must work
    image = _smooth_image(gen)
    image[..., :4, :4] = 0.5
    out = perona_malik(image, steps=3, kappa=KAPPA_MIN, dt=0.2, scheme=scheme,
                       conduction=conduction)
    assert torch.isfinite(out).all()
    assert torch.equal(out[..., :3, :3], image[..., :3, :3])  # flat and kappa ~ 0: nothing moves


def test_bad_images_are_refused():
    with pytest.raises(ShapeError, match=r"image must be \(C, H, W\) or \(B, C, H, W\), got shape \(4, 4\)"):
        perona_malik(torch.zeros(4, 4), steps=1, kappa=0.1, dt=0.1)
    with pytest.raises(ShapeError, match="image contains NaN or Inf"):
        perona_malik(torch.full((1, 4, 4), float("nan")), steps=1, kappa=0.1, dt=0.1)
    with pytest.raises(ShapeError, match="floating tensor"):
        perona_malik(torch.zeros(1, 4, 4, dtype=torch.uint8), steps=1, kappa=0.1, dt=0.1)


def test_classic_step_zero_steps_is_identity(gen):
    image = _smooth_image(gen)
    assert torch.equal(perona_malik(image, steps=0, kappa=0.1, dt=0.2), image)
    assert torch.equal(classic_step(torch.full((1, 1, 3, 3), 0.3), kappa=0.1, dt=0.2), torch.full((1, 1, 3, 3), 0.3))


# ---------------------------------------------------------------- review fixes


def test_seed_scheme_refuses_an_input_its_clamp_would_clip(gen):
    image = 2 * _smooth_image(gen)  # in [0, 2]: the seed steps used to clamp it to ~1 silently
    with pytest.raises(ShapeError, match=r"^image values must lie in \[0, 1\], got \[.*\]; use scheme: classic"):
        perona_malik(image, steps=1, kappa=0.1, dt=0.2, scheme="seed")
    out = perona_malik(image, steps=3, kappa=0.2, dt=0.2)  # classic does not clamp: any range
    assert out.max() > 1.5 and torch.allclose(out.mean(), image.mean(), atol=1e-5)


def test_seed_scheme_clamps_only_float_rounding_of_its_input(gen):
    image = _smooth_image(gen)
    over = image.clone()
    over[0, 0, 0] = 1.0 + 2.4e-7
    clamped = over.clamp(0, 1)
    kw = dict(steps=2, kappa=0.1, dt=0.2, scheme="seed")
    assert torch.equal(perona_malik(over, **kw), perona_malik(clamped, **kw))
    ref = image[None]
    for _ in range(2):  # an input in [0, 1] takes exactly the eager steps, untouched
        ref = seed_step(ref, laplacian_operator(3), kappa=0.1, dt=0.2)[0]
    assert torch.equal(perona_malik(image, **kw), ref[0])


@pytest.mark.parametrize(("call", "message"), [
    (lambda x: perona_malik_step(x, kappa=0.1, dt=0.2, scheme="clasic"),
     "scheme='clasic' is not one of 'classic', 'seed'; did you mean 'classic'?"),
    (lambda x: perona_malik_step(x, kappa=0.1, dt=0.2, conduction="expp"),
     "conduction='expp' is not one of 'exp', 'inverse', 'tukey'; did you mean 'exp'?"),
    (lambda x: perona_malik_step(x, kappa=0.1, dt=0.2, scheme="seed", conduction="Exp"),
     "conduction='Exp' is not one of 'exp', 'inverse', 'tukey'; did you mean 'exp'?"),
    (lambda x: classic_step(x, kappa=0.1, dt=0.2, conduction="expp"),
     "conduction='expp' is not one of 'exp', 'inverse', 'tukey'; did you mean 'exp'?"),
    (lambda x: seed_step(x, laplacian_operator(3), kappa=0.1, dt=0.2, conduction="tukee"),
     "conduction='tukee' is not one of 'exp', 'inverse', 'tukey'; did you mean 'tukey'?"),
    (lambda x: scharr_operators(0), "channels=0 must be >= 1"),
])
def test_steps_refuse_unknown_string_options(gen, call, message):
    with pytest.raises(ParamError) as info:
        call(_smooth_image(gen)[None])
    assert str(info.value) == message


# -- sweeps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("conduction", ["exp", "tukey"])
def test_a_classic_sweep_is_medpy_once_per_kappa_and_dt(gen, conduction):
    """Variant n is the diffusion with kappa[n] and dt[n] (0.5 takes two substeps of 0.25);
    a single value serves every variant."""
    image = _smooth_image(gen)
    kappas, dts = [0.05, 0.1, 0.3], [0.2, 0.25, 0.5]
    ours = perona_malik_sweep(image, steps=12, kappa=kappas, dt=dts, conduction=conduction)
    assert ours.shape == (3, *image.shape)
    for n, (kappa, dt) in enumerate(zip(kappas, dts, strict=True)):
        niter, gamma = (24, 0.25) if dt == 0.5 else (12, dt)
        ref = np.stack([anisotropic_diffusion(image[c].numpy(), niter=niter, kappa=kappa,
                                              gamma=gamma, option=OPTIONS[conduction])
                        for c in range(3)])
        np.testing.assert_allclose(ours[n].numpy(), ref, atol=1e-5, rtol=0, err_msg=str(n))
    one_dt = perona_malik_sweep(image, steps=12, kappa=kappas, dt=[0.2], conduction=conduction)
    assert torch.equal(one_dt[0], ours[0]) and not torch.equal(one_dt[2], ours[2])


def test_a_seed_sweep_follows_the_posts_step_for_each_variant(gen):
    image = torch.rand(3, 10, 11, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 3, 3, 3, generator=gen, dtype=torch.float64)
    operator = laplacian_operator(3, dtype=torch.float64) + 0.2 * noise
    seen = []
    ours = perona_malik_sweep(image, steps=7, kappa=[0.1, 0.4], dt=0.2, scheme="seed",
                              operator=operator, callback_every=3,
                              callback=lambda step, images: seen.append((step, images.shape)))
    assert seen == [(3, (2, 3, 10, 11)), (6, (2, 3, 10, 11)), (7, (2, 3, 10, 11))]
    for n, kappa in enumerate((0.1, 0.4)):
        ref = image.numpy()
        for _ in range(7):
            ref = _numpy_seed_step(ref, operator.numpy(), kappa, 0.2)
        np.testing.assert_allclose(ours[n].numpy(), ref, atol=1e-10, err_msg=str(n))
    assert not torch.allclose(ours[0], ours[1])


def test_a_sweep_of_no_steps_is_copies_of_the_image(gen):
    image = _smooth_image(gen)
    out = perona_malik_sweep(image.unsqueeze(0), steps=0, kappa=0.1, dt=[0.1, 0.2])
    assert out.shape == (2, *image.shape) and torch.equal(out[1], image)
    out[0] += 1  # copies, not views of the input
    assert torch.equal(out[1], image)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kappa": [0.1, 0.2, 0.3], "dt": [0.1, 0.2]}, ParamError,
         r"dt has 2 values but kappa has 3; give dt 3 values or one"),
        ({"kappa": []}, ParamError, "kappa is an empty list; give at least one value"),
        ({"kappa": [0.1, 0.0]}, ParamError, r"kappa\[1\]=0.0 must be >= 1e-18"),
        ({"dt": [0.2, 0.4], "substep": "off"}, ParamError,
         r"dt\[1\]=0.4 exceeds the stability bound 0.25"),
        ({"dt": 0.4, "substep": "off"}, ParamError, r"^dt=0.4 exceeds the stability bound"),
        ({"scheme": "seed", "operator": torch.zeros(3, 1, 3, 3)}, ShapeError,
         r"operator must be \(3, 3, 3, 3\)"),
    ],
)
def test_sweep_errors_name_the_variant(gen, kwargs, error, message):
    params = {"steps": 1, "kappa": [0.1, 0.2], "dt": 0.2, **kwargs}
    with pytest.raises(error, match=message):
        perona_malik_sweep(_smooth_image(gen), **params)
    with pytest.raises(ShapeError, match=r"image must be one \(C, H, W\) image, got shape "
                                         r"\(2, 3, 24, 32\)"):
        perona_malik_sweep(torch.stack([_smooth_image(gen)] * 2), steps=1, kappa=0.1, dt=0.2)
