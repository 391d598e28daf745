"""Learned-operator minimization: an eager reference of the post's loop, resume, reductions,
errors."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from minart import diffusion
from minart import minimize as minimize_module
from minart.composite import resize
from minart.errors import ParamError, ShapeError
from minart.minimize import MinimizeState, frame_iterations, minimize, minimize_refresh, minimize_step

SCHEDULE = dict(iterations=20, frame_every=5, refresh_every=10, refresh_at=5)
FAST = dict(lr=2e-4, kappa=0.2, dt=0.2, momentum=0.9, weight_decay=5e-4, blend=0.6)


def _pattern(gen: torch.Generator, c: int = 3, h: int = 64, w: int = 64) -> torch.Tensor:
    """Smooth waves plus blocks plus a little noise, in [0, 1], as (C, H, W)."""
    y = torch.linspace(0, 1, h).view(1, h, 1)  # (H,) -> (1, H, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w)  # (W,) -> (1, 1, W)
    phase = torch.arange(c, dtype=torch.float32).view(c, 1, 1)  # (C,) -> (C, 1, 1)
    waves = 0.5 + 0.3 * torch.sin(2 * math.pi * (3 * x + 2 * y) + phase)
    blocks = (torch.rand(c, h // 16, w // 16, generator=gen)
              .repeat_interleave(16, 1).repeat_interleave(16, 2))  # (C, H/16, W/16) -> (C, H, W)
    return (0.6 * waves + 0.3 * blocks + 0.1 * torch.rand(c, h, w, generator=gen)).clamp(0, 1)


def _laplacian(c: int) -> torch.Tensor:
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return k.repeat(c, c, 1, 1)  # (3, 3) -> (C, C, 3, 3)


def _eager_step(x, k, *, kappa, dt, pad="reflect"):
    """I' = clamp(I + dt g exp(-g^2 / kappa^2), 0, 1), g = K * pad(I), from the post's equations."""
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=pad), k)
    return torch.clamp(x + dt * g * torch.exp(-(g ** 2) / kappa ** 2), 0.0, 1.0), g


def _reference(image0, *, iterations, frame_every, refresh_every, refresh_at, lr, kappa, dt,
               momentum, weight_decay, blend, pad="reflect", g_sign=1.0, frame_offset=0):
    """The demo's loop written out plainly; pad/g_sign/frame_offset perturb it on purpose."""
    x0 = image0.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
    c = x0.shape[1]

    def fresh(rate):
        k = _laplacian(c).requires_grad_()
        return k, torch.optim.SGD([k], lr=rate, momentum=momentum, dampening=0,
                                  weight_decay=weight_decay)

    k, opt = fresh(lr)
    with torch.no_grad():
        x = _eager_step(x0, k, kappa=kappa, dt=dt, pad=pad)[0]
    frames, ops = [], []
    for i in range(iterations):
        opt.zero_grad()
        x, g = _eager_step(x.detach(), k, kappa=kappa, dt=dt, pad=pad)
        energy = torch.sum((x - x0) ** 2 + g_sign * torch.abs(g) + x ** 2)
        energy.backward()
        opt.step()
        if (i + frame_offset) % frame_every == 0:
            frames.append(x.detach()[0].clone())
            ops.append(k.detach().clone())
            if (i + frame_offset) % refresh_every == refresh_at:
                lr *= 0.995
                k, opt = fresh(lr)
                x = blend * x.detach() + (1 - blend) * x0
    return torch.stack(frames), torch.stack(ops)


def _video_reference(frames_in, *, iterations, frame_every, refresh_every, refresh_at, lr, kappa,
                     dt, momentum, weight_decay, blend, skip=8, g_sign=1.0):
    """demo_video.py's order: free step, 0.8/0.2 bleed-in except every 8th, learned step."""
    c = frames_in.shape[1]
    k = _laplacian(c).requires_grad_()
    opt = torch.optim.SGD([k], lr=lr, momentum=momentum, dampening=0, weight_decay=weight_decay)
    x = frames_in[:1].clone()
    out = []
    for i in range(iterations):
        x0 = frames_in[i % frames_in.shape[0]].unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
        with torch.no_grad():
            x = _eager_step(x, k, kappa=kappa, dt=dt)[0]
            if i % skip != 0:
                x = x * 0.8 + x0 * 0.2
        opt.zero_grad()
        x, g = _eager_step(x, k, kappa=kappa, dt=dt)
        energy = torch.sum((g * (x - x0)) ** 2 + g_sign * g + 10 * (x * g) ** 2)
        energy.backward()
        opt.step()
        x = x.detach()
        if i % frame_every == 0:
            out.append(x[0].clone())
            if i % refresh_every == refresh_at:
                lr *= 0.995
                k = _laplacian(c).requires_grad_()
                opt = torch.optim.SGD([k], lr=lr, momentum=momentum, dampening=0,
                                      weight_decay=weight_decay)
                x = blend * x + (1 - blend) * x0
    return torch.stack(out)


@pytest.fixture
def image(gen) -> torch.Tensor:
    return _pattern(gen)


@pytest.fixture(scope="module")
def scheduled() -> tuple[torch.Tensor, object]:
    """The 64x64 test image and minimize's result on it, shared by the reference tests."""
    x = _pattern(torch.Generator().manual_seed(1234))
    return x, minimize(x, **SCHEDULE, **FAST)


def test_matches_the_eager_reference_on_every_frame(scheduled):
    image, ours = scheduled
    ref_frames, ref_ops = _reference(image, **SCHEDULE, **FAST)
    assert ours.frames.shape == (4, 3, 64, 64) and ours.operators.shape == (4, 3, 3, 3, 3)
    torch.testing.assert_close(ours.frames, ref_frames, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.operators, ref_ops, atol=1e-4, rtol=1e-4)
    # The operator really learned (so the loss and its sign matter), and frames really evolve.
    assert (ours.operators[-1] - _laplacian(3)).abs().max() > 1e-2
    assert (ours.frames[-1] - ours.frames[0]).abs().mean() > 1e-2


@pytest.mark.parametrize("perturbation", [
    {"pad": "constant"},          # wrong border
    {"g_sign": -1.0},             # wrong sign of the |g| term
    {"frame_offset": 5},          # wrong schedule: frames and refreshes half a period off
])
def test_a_perturbed_reference_does_not_match(scheduled, perturbation):
    image, result = scheduled
    ours = result.frames
    wrong = _reference(image, **SCHEDULE, **FAST, **perturbation)[0]
    assert wrong.shape == ours.shape
    assert (ours - wrong).abs().max() > 1e-3


def test_frame_count_follows_the_schedule(image):
    small = image[:, :8, :8]
    cases = [(0, 5, 0), (1, 5, 1), (5, 5, 1), (6, 5, 2), (7, 1, 7)]
    for iterations, frame_every, expected in cases:
        result = minimize(small, iterations=iterations, frame_every=frame_every)
        assert result.frames.shape == (expected, 3, 8, 8)
        assert result.operators.shape == (expected, 3, 3, 3, 3)


@pytest.mark.slow  # 1-3 s on two shared cores
def test_default_400_iterations_finite_in_range(gen):
    x = _pattern(gen, h=32, w=32)
    result = minimize(x, iterations=400)
    frames = result.frames
    assert frames.shape == (6, 3, 32, 32)  # i = 0, 75, 150, 225, 300, 375
    assert bool(torch.isfinite(frames).all())
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
    assert (frames[1:] - frames[:-1]).abs().amax(dim=(1, 2, 3)).min() > 0  # every frame moved


def test_bit_identical_across_runs(scheduled):
    image, a = scheduled
    b = minimize(image, **SCHEDULE, **FAST)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.operators, b.operators)


def test_accepts_a_batch_of_one_and_keeps_the_input(image):
    before = image.clone()
    a = minimize(image, iterations=6, frame_every=5, lr=2e-4)
    b = minimize(image.unsqueeze(0), iterations=6, frame_every=5, lr=2e-4)
    assert torch.equal(a.frames, b.frames)
    assert torch.equal(image, before)


def test_resume_from_a_safetensors_checkpoint_is_bit_identical(scheduled):
    image, full = scheduled
    saved: dict[int, bytes] = {}

    class Recorder:  # the engine's Checkpoint has this save(iteration, state) method
        def save(self, iteration, state):
            saved[iteration] = st_save(dict(state))

    minimize(image, **SCHEDULE, **FAST, checkpoint=Recorder())
    assert sorted(saved) == [1, 6, 11, 16]
    for at in (6, 11, 16):  # before and after each refresh (refreshes at i = 5, 15)
        state = st_load(saved[at])
        assert int(state["iteration"]) == at and state["lr"].ndim == 0
        resumed = minimize(image, **SCHEDULE, **FAST, state=state)
        assert torch.equal(resumed.frames, full.frames)
        assert torch.equal(resumed.operators, full.operators)


def test_resumes_through_the_engine_checkpoint(scheduled, tmp_path):
    from minart.cache import TensorCache
    from minart.engine import Checkpoint

    image, full = scheduled
    ckpt = Checkpoint(TensorCache(str(tmp_path / "cache")), "k", every=0)
    stopped = []

    def stop_after_second_frame(done, state):
        stopped.append(done)
        if len(stopped) == 2:
            raise KeyboardInterrupt  # a render cut off between two frames

    with pytest.raises(KeyboardInterrupt):
        minimize(image, **SCHEDULE, **FAST, callback=stop_after_second_frame, checkpoint=ckpt)
    assert ckpt.load()[1] == stopped[1]  # each frame is saved before its callback can stop it
    resumed = minimize(image, **SCHEDULE, **FAST, checkpoint=ckpt)
    assert ckpt.resumed_from == stopped[1] > stopped[0]
    assert torch.equal(resumed.frames, full.frames)


def test_a_skipped_save_does_not_build_the_state_dict(image, monkeypatch):
    built = []
    real = MinimizeState.state_dict
    monkeypatch.setattr(MinimizeState, "state_dict", lambda self: built.append(1) or real(self))
    minimize(image[:, :8, :8], iterations=12, frame_every=5, checkpoint=lambda done, state: None)
    assert built == [1]  # once, for the result; the three ignored saves built nothing


def test_minimize_step_resumes_from_a_state_dict_bit_for_bit(image):
    kw = dict(kappa=0.2, dt=0.2, momentum=0.9, weight_decay=5e-4)
    straight = MinimizeState.start(image, lr=2e-4, kappa=0.2, dt=0.2)
    for _ in range(9):
        minimize_step(straight, **kw)
    state = MinimizeState.start(image, lr=2e-4, kappa=0.2, dt=0.2)
    for _ in range(4):
        minimize_step(state, **kw)
    assert state.momentum_buffer is not None and state.iteration == 4
    state = MinimizeState.from_state_dict(state.state_dict())
    for _ in range(5):
        minimize_step(state, **kw)
    assert state.iteration == 9
    assert torch.equal(state.image, straight.image)
    assert torch.equal(state.operator, straight.operator)
    assert torch.equal(state.momentum_buffer, straight.momentum_buffer)


def test_callback_sees_each_frame_boundary_and_the_end(image):
    seen = []
    minimize(image[:, :8, :8], iterations=12, frame_every=5,
             callback=lambda done, state: seen.append((done, state.iteration, len(state.frames))))
    assert seen == [(1, 1, 1), (6, 6, 2), (11, 11, 3), (12, 12, 3)]
    # what grid captions show as a frame's {step.iterations}: the count at each kept frame
    assert frame_iterations(12, 5) == [done for done, _, frames in seen[:3]]
    assert frame_iterations(0, 5) == [] and frame_iterations(10, 5) == [1, 6]


def test_refresh_resets_operator_momentum_lr_and_blends(image):
    state = MinimizeState.start(image, lr=1e-3, kappa=0.2, dt=0.2)
    minimize_step(state)
    before = state.image.clone()
    minimize_refresh(state, blend=0.6)
    assert torch.equal(state.operator.detach(), _laplacian(3))
    assert state.momentum_buffer is None and state.lr == pytest.approx(1e-3 * 0.995)
    torch.testing.assert_close(state.image, 0.6 * before + 0.4 * image.unsqueeze(0))


def test_mean_reduction_divides_the_energy_by_the_element_count(image):
    n = image.numel()
    s_sum = MinimizeState.start(image, lr=1e-6, kappa=0.2, dt=0.2)
    s_mean = MinimizeState.start(image, lr=1e-6 * n, kappa=0.2, dt=0.2)
    e_sum = minimize_step(s_sum, momentum=0.0, weight_decay=0.0)
    e_mean = minimize_step(s_mean, momentum=0.0, weight_decay=0.0, reduction="mean")
    torch.testing.assert_close(e_mean * n, e_sum, rtol=1e-6, atol=0)
    # Same first image; with lr scaled by n the mean's update equals the sum's update.
    assert torch.equal(s_sum.image, s_mean.image)
    lap = _laplacian(3)
    step_sum = s_sum.operator.detach() - lap
    step_mean = s_mean.operator.detach() - lap
    assert step_sum.abs().max() > 1e-4
    torch.testing.assert_close(step_mean, step_sum, rtol=1e-4, atol=1e-9)
    # ... and a short run agrees once weight decay (added to the gradient, not divided by n)
    # is divided by n too
    kw = dict(iterations=8, frame_every=2, refresh_every=4, refresh_at=2)
    a = minimize(image, lr=1e-4, weight_decay=5e-4, **kw)
    b = minimize(image, lr=1e-4 * n, weight_decay=5e-4 / n, reduction="mean", **kw)
    torch.testing.assert_close(b.frames, a.frames, atol=1e-4, rtol=0)
    # while the same lr with mean barely moves the operator
    c = minimize(image, lr=1e-4, reduction="mean", **kw)
    assert (c.operators[0] - lap).abs().max() < 1e-3 < (a.operators[0] - lap).abs().max()


def test_seed_video_matches_its_reference(gen):
    # 3 x (C, H, W) -> (T, C, H, W)
    frames_in = torch.stack([_pattern(gen, h=32, w=32) for _ in range(3)])
    kw = dict(iterations=12, frame_every=3, refresh_every=6, refresh_at=3, lr=1e-4, kappa=0.5,
              dt=0.2, momentum=0.9, weight_decay=5e-4, blend=0.6)
    ours = minimize(frames_in, loss="seed_video", **kw)
    ref = _video_reference(frames_in, **kw)
    assert ours.frames.shape == (4, 3, 32, 32)
    torch.testing.assert_close(ours.frames, ref, atol=1e-4, rtol=0)
    for wrong in ({"skip": 7}, {"g_sign": -1.0}):  # a wrong bleed-in schedule or energy sign
        assert (ours.frames - _video_reference(frames_in, **kw, **wrong)).abs().max() > 1e-3
    assert bool(torch.isfinite(ours.frames).all())
    assert float(ours.frames.min()) >= 0 and float(ours.frames.max()) <= 1
    # the input frames matter: one still image gives another result
    still = minimize(frames_in[:1], loss="seed_video", **kw)
    assert (still.frames - ours.frames).abs().max() > 1e-3


def test_seed_video_resume_is_bit_identical(gen):
    frames_in = torch.stack([_pattern(gen, h=16, w=16) for _ in range(2)])  # -> (T, C, H, W)
    kw = dict(iterations=10, frame_every=3, loss="seed_video", lr=1e-4)
    full = minimize(frames_in, **kw)
    states = []
    minimize(frames_in, **kw, checkpoint=lambda it, st: states.append(dict(st)))
    resumed = minimize(frames_in, **kw, state=states[1])
    assert torch.equal(resumed.frames, full.frames)


@pytest.mark.parametrize("conduction", ["inverse", "tukey"])
def test_other_conductions_run(image, conduction):
    frames = minimize(image[:, :16, :16], iterations=6, frame_every=2, conduction=conduction).frames
    assert frames.shape == (3, 3, 16, 16)
    assert bool(torch.isfinite(frames).all()) and float(frames.max()) <= 1.0


def test_state_dict_is_flat_and_safetensors_ready(image):
    state = MinimizeState.start(image[:, :8, :8], lr=1e-3, kappa=0.2, dt=0.2)
    minimize_step(state)
    d = state.state_dict()
    assert sorted(d) == ["frames", "image", "iteration", "lr", "momentum_buffer", "operator",
                         "operators", "original"]
    back = st_load(st_save(d))
    assert all(torch.equal(back[k], d[k]) for k in d)
    assert back["iteration"].dtype == torch.int64 and back["lr"].item() == 1e-3


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": -1}, "iterations=-1 must be a whole number >= 0"),
    ({"iterations": 2.5}, "iterations=2.5 must be a whole number >= 0"),
    ({"frame_every": 0}, "frame_every=0 must be a whole number >= 1"),
    ({"refresh_every": 0}, "refresh_every=0 must be a whole number >= 1"),
    ({"refresh_at": 375}, "refresh_at=375 must be < refresh_every=375"),
    ({"refresh_at": -1}, "refresh_at=-1 must be a whole number >= 0"),
    ({"lr": 0.0}, "lr=0.0 must be > 0"),
    ({"lr": float("nan")}, "lr=nan must be a finite number"),
    ({"kappa": -1.0}, "kappa=-1.0 must be >= 1e-18"),
    ({"dt": 0}, "dt=0 must be > 0"),
    ({"momentum": 1.0}, "momentum=1.0 must be < 1"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1 must be >= 0"),
    ({"blend": 1.5}, "blend=1.5 must be <= 1"),
    ({"loss": "l2"}, "loss='l2' is not one of 'seed', 'seed_video'"),
    ({"reduction": "max"}, "reduction='max' is not one of 'sum', 'mean'"),
    ({"conduction": "gauss"}, "conduction='gauss' is not one of 'exp', 'inverse', 'tukey'"),
    ({"generator": 3}, "generator must be a torch.Generator, got int"),
    ({"checkpoint": 3}, "checkpoint must be callable or have a save(iteration, state) method"),
])
def test_param_errors(kwargs, message):
    params = {"iterations": 1, **kwargs}
    with pytest.raises(ParamError) as info:
        minimize(torch.zeros(3, 4, 4), **params)
    assert str(info.value) == message


@pytest.mark.parametrize("image, kwargs, message", [
    (torch.zeros(4, 4), {}, "image must be (C, H, W) or (B, C, H, W), got shape (4, 4)"),
    (torch.zeros(3, 1, 4), {}, "image must be at least 2x2 pixels, got 4x1"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), {},
     "image must be a floating tensor in [0, 1], got dtype torch.uint8"),
    (torch.full((3, 4, 4), 2.0), {}, "image values must lie in [0, 1], got [2, 2]; normalise it "
                                     "explicitly"),
    (torch.full((3, 4, 4), 1.0 + 2e-6), {}, "image values must lie in [0, 1], got [1.000002, "
                                            "1.000002]; normalise it explicitly"),
    (torch.full((3, 4, 4), float("nan")), {}, "image contains NaN or Inf values"),
    (torch.zeros(2, 3, 4, 4), {}, "loss 'seed' takes one image (C, H, W) or (1, C, H, W), got 2 "
                                  "images; use loss 'seed_video' for a frame sequence"),
])
def test_shape_errors(image, kwargs, message):
    with pytest.raises(ShapeError) as info:
        minimize(image, iterations=1, **kwargs)
    assert str(info.value) == message


def test_state_errors(image):
    x = image[:, :8, :8]
    state = MinimizeState.start(x, lr=1e-3, kappa=0.2, dt=0.2)
    for _ in range(3):
        minimize_step(state)
    with pytest.raises(ParamError, match=r"^state is at iteration 3, past iterations=2$"):
        minimize(x, iterations=2, state=state.state_dict())
    with pytest.raises(ParamError, match=r"^state was saved for another input image"):
        minimize(1 - x, iterations=5, state=state.state_dict())
    broken = state.state_dict()
    del broken["operator"]
    with pytest.raises(ShapeError, match=r"^minimize state lacks operator;"):
        minimize(x, iterations=5, state=broken)
    wrong = state.state_dict()
    wrong["operator"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ShapeError, match=r"^minimize state: operator must be \(3, 3, 3, 3\)"):
        minimize(x, iterations=5, state=wrong)


def test_a_diverging_run_is_refused(image):
    with pytest.raises(ParamError, match=r"^the run diverged .* lower lr$"):
        minimize(image[:, :8, :8], iterations=3, frame_every=1, lr=1e30)
    # seed_video's "+ g" term is unbounded below: a large lr sends K to infinity while the
    # conduction exp(-g^2/kappa^2) freezes the frames, so the operator is checked too.
    with pytest.raises(ParamError, match=r"^the run diverged .* lower lr$"):
        minimize(image[:, :16, :16], iterations=12, frame_every=3, lr=1e-2, loss="seed_video")


@pytest.mark.gpu
def test_cuda_runs_are_bit_identical_and_leave_global_flags_alone(image):
    x = image.cuda()
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    a = minimize(x, **SCHEDULE, **FAST)
    b = minimize(x, **SCHEDULE, **FAST)
    assert torch.equal(a.frames, b.frames)
    assert flags == (torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cpu = minimize(image, **SCHEDULE, **FAST)
    torch.testing.assert_close(a.frames.cpu(), cpu.frames, atol=1e-3, rtol=0)


@pytest.mark.gpu
def test_cuda_seed_video_takes_the_kernels_and_matches_its_reference(gen, monkeypatch):
    from minart.kernels import triton_diffusion as td

    frames_in = torch.stack([_pattern(gen, h=32, w=32) for _ in range(3)])  # (T, C, H, W)
    kw = dict(iterations=12, frame_every=3, refresh_every=6, refresh_at=3, lr=1e-4, kappa=0.5,
              dt=0.2, momentum=0.9, weight_decay=5e-4, blend=0.6)
    calls = []
    real = td.SeedStep.apply
    with monkeypatch.context() as patch:
        patch.setattr(td.SeedStep, "apply", lambda *args: calls.append(1) or real(*args))
        a = minimize(frames_in.cuda(), loss="seed_video", **kw)
    assert calls  # the learned steps ran the Triton forward and backward
    b = minimize(frames_in.cuda(), loss="seed_video", **kw)
    assert torch.equal(a.frames, b.frames)  # fixed-order sums: the same bits on every run
    torch.testing.assert_close(a.frames.cpu(), _video_reference(frames_in, **kw), atol=1e-3,
                               rtol=0)


# ---------------------------------------------------------------- review fixes


def test_a_resized_white_image_is_accepted_and_rounding_is_clamped():
    white = resize(torch.ones(3, 5, 25), 17, 23)  # bilinear rounding used to leave 1 + 1.2e-7
    assert minimize(white, iterations=2, frame_every=1).frames.shape == (2, 3, 23, 17)
    image = torch.full((3, 8, 8), 0.5)
    image[0, 0, 0] = 1.0 + 2.4e-7
    a = minimize(image, iterations=3, frame_every=1)
    b = minimize(image.clamp(0, 1), iterations=3, frame_every=1)
    assert torch.equal(a.frames, b.frames)


def _flags() -> tuple[bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark)


def test_overlapping_runs_keep_determinism_on_until_the_last_one_leaves():
    # Prefect runs tasks on a thread pool: run A enters, run B enters, A leaves while B still
    # runs. The flags are global, so this checks them on the CPU (the context sets them for cuda).
    saved = (*_flags(), torch.is_deterministic_algorithms_warn_only_enabled())
    cuda = torch.device("cuda")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, tuple[bool, bool, bool]] = {}

    def run_a():
        with minimize_module._deterministic(cuda):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def run_b():
        a_in.wait(5)
        with minimize_module._deterministic(cuda):
            b_in.set()
            a_out.wait(5)
            seen["b after a left"] = _flags()

    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen["b after a left"] == (True, True, False)
        assert _flags() == (False, False, True)  # the last to leave restored them
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[3])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:3]


def test_a_refresh_no_frame_boundary_reaches_is_refused():
    for iterations in (0, 1):  # 0: the stage's check probe
        with pytest.raises(ParamError) as info:
            minimize(torch.zeros(3, 4, 4), iterations=iterations, frame_every=75,
                     refresh_every=375, refresh_at=100)
        assert info.value.param == "refresh_at"
        assert str(info.value).endswith("; use refresh_at: 75 or 150, or refresh_every: null for "
                                        "no refresh")
    with pytest.raises(ParamError, match=r"; use refresh_at: 4, or refresh_every: null"):
        minimize(torch.zeros(3, 4, 4), iterations=1, frame_every=4, refresh_every=6, refresh_at=5)
    # the defaults and the shipped recipes' schedules (ocean, from_image: frame_every 20)
    for frame_every in (75, 20):
        minimize(torch.zeros(3, 4, 4), iterations=0, frame_every=frame_every)


def test_refresh_every_none_is_no_refresh():
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1))
    kw = dict(iterations=9, frame_every=2, lr=1e-6)
    never = minimize(image, refresh_every=None, refresh_at=1, **kw)  # refresh_at is ignored
    far = minimize(image, refresh_every=1000, refresh_at=998, **kw)  # not reached in 9
    refreshed = minimize(image, refresh_every=4, refresh_at=2, **kw)
    assert torch.equal(never.frames, far.frames)
    assert not torch.equal(never.frames, refreshed.frames)


def test_the_refresh_rule_agrees_with_the_loop_by_brute_force():
    for frame_every in range(1, 9):
        for refresh_every in range(1, 9):
            hits = {i % refresh_every for i in range(0, frame_every * refresh_every, frame_every)}
            for refresh_at in range(refresh_every):
                try:
                    minimize_module._check_refresh_schedule(frame_every, refresh_every, refresh_at)
                except ParamError as exc:
                    assert refresh_at not in hits
                    named = str(exc).rsplit("refresh_at: ", 1)[1].split(", or refresh_every")[0]
                    options = [int(v) for v in named.split(" or ")]
                    below = [h for h in hits if h < refresh_at]
                    above = [h for h in hits if h > refresh_at]
                    nearest = ([max(below)] if below else []) + ([min(above)] if above else [])
                    assert options == nearest
                else:
                    assert refresh_at in hits


def test_conductions_are_defined_once():
    assert minimize_module._CONDUCTIONS is diffusion._CONDUCTIONS
