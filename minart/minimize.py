"""Learned-operator "minimization art": the seed post's demo, a diffusion whose operator learns.

The "Art with Math" post runs the seed Perona-Malik step (:func:`minart.diffusion.seed_step`,
``g = K * reflect_pad(I)``, ``I <- clamp(I + dt g c(g), 0, 1)``) while SGD trains the dense
``(C, C, 3, 3)`` operator ``K`` to minimise an energy of the step's own output. Since each step
starts from the previous output, the minimisation never converges: ``K`` drifts away from the
Laplacian and the image grows reaction-diffusion-like grain, cells and stripes.

``loss="seed"`` (the post's ``demo.py``), for one image ``I_0``::

    K = laplacian_operator(C)                       # learnable
    opt = SGD([K], lr, momentum, dampening=0, weight_decay)
    I = step(I_0, K)                                # once, no learning
    for i in range(iterations):
        I, g = step(detach(I), K)
        E = sum((I - I_0)^2 + |g| + I^2)            # or the mean, reduction="mean"
        E.backward(); opt.step(); opt.zero_grad()
        if i % frame_every == 0:
            keep I as a frame and K as its operator
            if i % refresh_every == refresh_at:     # the "refresh" (none: refresh_every None)
                K = laplacian_operator(C); lr *= 0.995; opt = SGD(...)   # momentum cleared
                I = blend I + (1 - blend) I_0

``loss="seed_video"`` (the post's ``demo_video.py``, its camera variant), for input frames
``F_0 .. F_{T-1}`` (a single image is a sequence of one); ``I`` starts as ``F_0`` with no step::

    for i in range(iterations):
        I_0 = F[i % T]
        I = detach(step(I, K))                      # a step without learning
        if i % 8 != 0:
            I = 0.8 I + 0.2 I_0                     # the camera frame bleeds in
        I, g = step(I, K)
        E = sum((g (I - I_0))^2 + g + 10 (I g)^2)   # note: + g, not |g|, as the demo
        E.backward(); opt.step(); opt.zero_grad()
        frames and refreshes as above, the refresh blending towards I_0 = F[i % T]

Unlike the demo, the input is *not* min-max normalised: images arrive in [0, 1] and are used as
they are (an input outside [0, 1] is refused; values within 1e-6 of it, float rounding of an
earlier op such as a resize, are clamped). ``K`` keeps its ``(C, C, 3, 3)`` form, so each
output channel may learn to mix all input channels.

The summed loss makes ``lr`` depend on the image size (see ``docs/minimize.md`` for a measured
table); ``reduction="mean"`` divides the energy by the number of elements ``C*H*W`` of the image,
which is the same as multiplying ``lr`` by it.

The loop is chaotic: a relative change of 1e-6 in ``K``'s gradient grows about 60x every ten
iterations, so two implementations that sum in a different order agree on short runs only.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import torch
from torch import Tensor

from ._checks import as_batch, check_choice, check_range, check_unit_range, check_whole
from .diffusion import _CONDUCTIONS, KAPPA_MIN, Conduction, laplacian_operator
from .errors import ParamError, ShapeError

__all__ = [
    "MinimizeResult",
    "MinimizeState",
    "frame_iterations",
    "minimize",
    "minimize_refresh",
    "minimize_step",
]

Loss = Literal["seed", "seed_video"]
Reduction = Literal["sum", "mean"]

_LOSSES = ("seed", "seed_video")
_REDUCTIONS = ("sum", "mean")

LR_DECAY = 0.995
"""Factor applied to ``lr`` at every refresh (the post's value)."""

VIDEO_BLEND = 0.8
"""``seed_video``: weight of the running image when the input frame bleeds in."""

VIDEO_BLEND_SKIP = 8
"""``seed_video``: iterations ``i`` with ``i % 8 == 0`` skip the bleed-in (as the post's demo)."""

_STATE_KEYS = ("image", "original", "operator", "lr", "iteration", "frames", "operators")


class MinimizeResult(NamedTuple):
    """What :func:`minimize` returns.

    Attributes:
        frames: ``(T, C, H, W)`` images in [0, 1], one per frame boundary
            (``T = ceil(iterations / frame_every)``).
        operators: ``(T, C, C, 3, 3)`` operator ``K`` at each frame (after that iteration's update).

    Example:
        >>> r = MinimizeResult(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 3, 3, 3))
        >>> frames, operators = r
        >>> tuple(frames.shape)
        (2, 3, 4, 4)
    """

    frames: Tensor
    operators: Tensor


@dataclass(eq=False)
class MinimizeState:
    """Everything a :func:`minimize` run needs to continue exactly where it stopped.

    Build one with :meth:`start`, advance it with :func:`minimize_step`, save it with
    :meth:`state_dict` (a flat ``{name: tensor}`` for safetensors, scalars as 0-d tensors) and
    restore it with :meth:`from_state_dict`.

    Attributes:
        image: ``(1, C, H, W)`` running image ``I`` in [0, 1].
        original: ``(T, C, H, W)`` input ``I_0`` (``T = 1`` for ``loss="seed"``; the input frames
            for ``"seed_video"``).
        operator: ``(C, C, 3, 3)`` learned operator ``K``, a leaf with ``requires_grad``.
        momentum_buffer: ``(C, C, 3, 3)`` SGD momentum of ``K``, ``None`` before the first update
            after a (re)start.
        lr: current learning rate (it decays at each refresh).
        iteration: iterations done so far.
        frames: frames kept so far, each ``(C, H, W)``.
        operators: the operator at each kept frame, each ``(C, C, 3, 3)``.

    Example:
        >>> s = MinimizeState.start(torch.full((3, 4, 4), 0.5), lr=1e-3, kappa=0.2, dt=0.2)
        >>> s.iteration, tuple(s.image.shape), sorted(s.state_dict())[:3]
        (0, (1, 3, 4, 4), ['frames', 'image', 'iteration'])
    """

    image: Tensor
    original: Tensor
    operator: Tensor
    momentum_buffer: Tensor | None
    lr: float
    iteration: int = 0
    frames: list[Tensor] = field(default_factory=list)
    operators: list[Tensor] = field(default_factory=list)
    _optimizer: torch.optim.SGD | None = field(default=None, repr=False)

    @classmethod
    def start(cls, image: Tensor, *, lr: float, kappa: float, dt: float, loss: Loss = "seed",
              conduction: Conduction = "exp") -> MinimizeState:
        """The state before iteration 0: ``K`` the Laplacian and, for ``"seed"``, ``I = step(I_0)``.

        Args:
            image: ``(C, H, W)`` or ``(1, C, H, W)`` image (or ``(T, C, H, W)`` frames for
                ``"seed_video"``), floating, in [0, 1], ``H, W >= 2``.
            lr: initial learning rate (> 0).
            kappa: conduction scale (>= KAPPA_MIN, 1e-18).
            dt: time step (> 0).
            loss: ``"seed"`` or ``"seed_video"``.
            conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.

        Returns:
            A fresh :class:`MinimizeState` on the image's device and dtype.

        Raises:
            ShapeError: bad shape, dtype or values; several frames with ``loss="seed"``.
            ParamError: a parameter out of range.

        Example:
            >>> s = MinimizeState.start(torch.zeros(1, 3, 4, 4), lr=1e-3, kappa=0.2, dt=0.2)
            >>> s.operator.requires_grad, s.momentum_buffer is None
            (True, True)
        """
        check_choice("loss", loss, _LOSSES)
        check_choice("conduction", conduction, _CONDUCTIONS)
        check_range("lr", lr, gt=0)
        check_range("kappa", kappa, ge=KAPPA_MIN)
        check_range("dt", dt, gt=0)
        original = _check_input(image, loss)
        operator = _fresh_operator(original)
        if loss == "seed":
            with torch.no_grad():
                first = _step(original, operator, kappa=kappa, dt=dt, conduction=conduction)
        else:
            first = original[:1].clone()
        return cls(image=first, original=original, operator=operator, momentum_buffer=None,
                   lr=float(lr))

    def state_dict(self) -> dict[str, Tensor]:
        """A snapshot as a flat ``{name: tensor}`` (contiguous copies, ready for safetensors).

        Keys: ``image``, ``original``, ``operator``, ``frames`` ``(n, C, H, W)``, ``operators``
        ``(n, C, C, 3, 3)``, ``lr`` (0-d float64), ``iteration`` (0-d int64) and, once it
        exists, ``momentum_buffer``.

        Example:
            >>> s = MinimizeState.start(torch.zeros(3, 4, 4), lr=1e-3, kappa=0.2, dt=0.2)
            >>> d = s.state_dict()
            >>> d["lr"].dtype, int(d["iteration"]), tuple(d["frames"].shape)
            (torch.float64, 0, (0, 3, 4, 4))
        """
        c, h, w = self.original.shape[1:]
        like = self.original
        frames = (torch.stack(self.frames) if self.frames
                  else like.new_zeros((0, c, h, w)))  # n x (C, H, W) -> (n, C, H, W)
        operators = (torch.stack(self.operators) if self.operators
                     else like.new_zeros((0, c, c, 3, 3)))  # n x (C, C, 3, 3) -> (n, C, C, 3, 3)
        out = {
            "image": self.image.detach().clone().contiguous(),
            "original": self.original.detach().clone().contiguous(),
            "operator": self.operator.detach().clone().contiguous(),
            "frames": frames.contiguous(),
            "operators": operators.contiguous(),
            "lr": torch.tensor(self.lr, dtype=torch.float64),
            "iteration": torch.tensor(self.iteration, dtype=torch.int64),
        }
        if self.momentum_buffer is not None:
            out["momentum_buffer"] = self.momentum_buffer.detach().clone().contiguous()
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], *,
                        device: torch.device | str | None = None) -> MinimizeState:
        """Rebuild a state saved by :meth:`state_dict` (on ``device``, default where it was).

        Args:
            state: the flat dict (e.g. read back with ``safetensors.torch.load_file``).
            device: where to put the tensors (``None``: keep them where they are).

        Returns:
            The :class:`MinimizeState`; the next :func:`minimize_step` continues bit for bit.

        Raises:
            ShapeError: a key is missing or a tensor has an inconsistent shape.

        Example:
            >>> s = MinimizeState.start(torch.zeros(3, 4, 4), lr=1e-3, kappa=0.2, dt=0.2)
            >>> MinimizeState.from_state_dict(s.state_dict()).lr
            0.001
        """
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ShapeError(f"minimize state lacks {', '.join(missing)}; it is not a state "
                             f"saved by MinimizeState.state_dict()", param="state")
        t = {k: v.to(device) if device is not None else v for k, v in state.items()}
        original, image, operator = t["original"], t["image"], t["operator"]
        if original.ndim != 4 or original.shape[0] < 1:
            raise ShapeError(f"minimize state: original must be (T, C, H, W), got "
                             f"{tuple(original.shape)}", param="state")
        _, c, h, w = original.shape
        expected = {"image": (1, c, h, w), "operator": (c, c, 3, 3)}
        if "momentum_buffer" in t:
            expected["momentum_buffer"] = (c, c, 3, 3)
        for name, shape in expected.items():
            if tuple(t[name].shape) != shape:
                raise ShapeError(f"minimize state: {name} must be {shape}, got "
                                 f"{tuple(t[name].shape)}", param="state")
        frames, operators = t["frames"], t["operators"]
        if (frames.ndim != 4 or tuple(frames.shape[1:]) != (c, h, w)
                or tuple(operators.shape[1:]) != (c, c, 3, 3)
                or operators.shape[0] != frames.shape[0]):
            raise ShapeError(f"minimize state: frames {tuple(frames.shape)} and operators "
                             f"{tuple(operators.shape)} do not fit a {c}-channel {w}x{h} image",
                             param="state")
        return cls(
            image=image.clone(),
            original=original.clone(),
            operator=operator.detach().clone().requires_grad_(True),
            momentum_buffer=t["momentum_buffer"].clone() if "momentum_buffer" in t else None,
            lr=float(t["lr"]),
            iteration=int(t["iteration"]),
            frames=list(frames.unbind(0)),  # (n, C, H, W) -> n x (C, H, W)
            operators=list(operators.unbind(0)),  # (n, C, C, 3, 3) -> n x (C, C, 3, 3)
        )

    def input_frame(self, iteration: int) -> Tensor:
        """``I_0`` of iteration ``iteration``: ``original[iteration % T]`` as ``(1, C, H, W)``.

        Args:
            iteration: 0-based iteration index (>= 0).

        Returns:
            A ``(1, C, H, W)`` view of :attr:`original`.

        Example:
            >>> frames = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
            >>> s = MinimizeState.start(frames, lr=1e-3, kappa=0.2, dt=0.2, loss="seed_video")
            >>> [float(s.input_frame(i).mean()) for i in range(3)]
            [0.0, 1.0, 0.0]
        """
        i = iteration % self.original.shape[0]
        return self.original[i:i + 1]  # (T, C, H, W) -> (1, C, H, W)


class _StateView(Mapping[str, Tensor]):
    """:meth:`MinimizeState.state_dict` computed on first access (a throttled save skips it)."""

    def __init__(self, state: MinimizeState) -> None:
        self._state = state
        self._dict: dict[str, Tensor] | None = None

    def _tensors(self) -> dict[str, Tensor]:
        if self._dict is None:
            self._dict = self._state.state_dict()
        return self._dict

    def __getitem__(self, key: str) -> Tensor:
        return self._tensors()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors())

    def __len__(self) -> int:
        return len(self._tensors())


class _Checkpoint(Protocol):
    def save(self, iteration: int, state: Mapping[str, Tensor]) -> None: ...

    def load(self) -> tuple[Mapping[str, Tensor], int] | None: ...


def _check_input(image: Tensor, loss: str) -> Tensor:
    batch, _ = as_batch(image, min_size=2)
    if loss == "seed" and batch.shape[0] != 1:
        raise ShapeError(f"loss 'seed' takes one image (C, H, W) or (1, C, H, W), got "
                         f"{batch.shape[0]} images; use loss 'seed_video' for a frame sequence",
                         param="image")
    return check_unit_range("image", batch, hint="normalise it explicitly", param="image")


def _fresh_operator(like: Tensor) -> Tensor:
    return laplacian_operator(like.shape[1], dtype=like.dtype,
                              device=like.device).requires_grad_(True)


def _optimizer(state: MinimizeState, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """The SGD of ``state.operator`` (kept in the state), its buffer restored from the state."""
    opt = state._optimizer
    if opt is None or opt.param_groups[0]["params"][0] is not state.operator:
        opt = torch.optim.SGD([state.operator], lr=state.lr, momentum=momentum, dampening=0.0,
                              weight_decay=weight_decay)
        if state.momentum_buffer is not None:
            opt.state[state.operator]["momentum_buffer"] = state.momentum_buffer
        state._optimizer = opt
    opt.param_groups[0].update(lr=state.lr, momentum=momentum, weight_decay=weight_decay)
    return opt


def _energy(state: MinimizeState, image0: Tensor, *, kappa: float, dt: float, loss: str,
            conduction: str) -> tuple[Tensor, Tensor]:
    """The learned step from ``state.image``: ``(next image, summed energy)``."""
    if loss == "seed":
        # The fused forward + energy + dL/dK on CUDA; elsewhere seed_step and the eager sum.
        from .kernels.dispatch import seed_loss_step

        return seed_loss_step(state.image, image0, state.operator, kappa=kappa, dt=dt,
                              conduction=conduction)
    from .kernels.dispatch import seed_step_fast  # Triton forward and backward on CUDA

    new, g = seed_step_fast(state.image, state.operator, kappa=kappa, dt=dt,
                            conduction=conduction)
    energy = ((g * (new - image0)) ** 2 + g + 10.0 * (new * g) ** 2).sum()
    return new.detach(), energy


def _step(image: Tensor, operator: Tensor, *, kappa: float, dt: float,
          conduction: str) -> Tensor:
    """One seed step without gradients, on the fastest exact path (Triton on CUDA)."""
    from .kernels.dispatch import seed_step_fast

    return seed_step_fast(image, operator, kappa=kappa, dt=dt, conduction=conduction,
                          need_g=False)[0]


def frame_iterations(iterations: int, frame_every: int) -> list[int]:
    """How many iterations are done at each frame :func:`minimize` keeps: it keeps one after
    iteration ``i = 0, frame_every, 2 frame_every, ...``, so after ``i + 1`` iterations.

    Args:
        iterations: iterations of the run (>= 0).
        frame_every: iterations between two frames (>= 1).

    Returns:
        ``ceil(iterations / frame_every)`` counts, growing.

    Example:
        >>> frame_iterations(300, 75)
        [1, 76, 151, 226]
    """
    return [i + 1 for i in range(0, iterations, frame_every)]


def minimize_step(state: MinimizeState, *, kappa: float = 0.2, dt: float = 0.2,
                  momentum: float = 0.9, weight_decay: float = 5e-4, loss: Loss = "seed",
                  reduction: Reduction = "sum", conduction: Conduction = "exp") -> Tensor:
    """One iteration of :func:`minimize`: a seed step, its energy, backward and an SGD update.

    ``loss="seed"``: ``I, g = step(I, K)``, ``E = sum((I - I_0)^2 + |g| + I^2)``.
    ``loss="seed_video"``: ``I = step(I, K)`` without learning, ``I = 0.8 I + 0.2 I_0`` unless
    ``iteration % 8 == 0``, then ``I, g = step(I, K)``, ``E = sum((g (I - I_0))^2 + g +
    10 (I g)^2)``, with ``I_0 = original[iteration % T]``. ``reduction="mean"`` divides ``E`` by
    ``C*H*W``. Then ``K <- SGD(K, dE/dK)`` (lr ``state.lr``, dampening 0). ``state`` is updated in
    place (``image``, ``operator``, ``momentum_buffer``, ``iteration + 1``); frames and refreshes
    are the loop's business (:func:`minimize`, :func:`minimize_refresh`). Parameters are not
    validated here (:func:`minimize` does it once).

    Args:
        state: the run's :class:`MinimizeState`.
        kappa: conduction scale (> 0).
        dt: time step (> 0).
        momentum: SGD momentum in [0, 1).
        weight_decay: SGD weight decay (>= 0).
        loss: ``"seed"`` or ``"seed_video"``.
        reduction: ``"sum"`` or ``"mean"``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.

    Returns:
        The energy ``E`` before the update, a detached 0-d tensor.

    Example:
        >>> s = MinimizeState.start(torch.full((3, 4, 4), 0.5), lr=1e-3, kappa=0.2, dt=0.2)
        >>> float(minimize_step(s)), s.iteration   # flat image: g = 0, E = sum(0 + 0 + 0.25)
        (12.0, 1)
    """
    i = state.iteration
    image0 = state.input_frame(i)
    if loss == "seed_video":
        with torch.no_grad():
            image = _step(state.image, state.operator, kappa=kappa, dt=dt, conduction=conduction)
            if i % VIDEO_BLEND_SKIP != 0:
                image = VIDEO_BLEND * image + (1.0 - VIDEO_BLEND) * image0
        state.image = image
    opt = _optimizer(state, momentum, weight_decay)
    opt.zero_grad(set_to_none=True)
    new, energy = _energy(state, image0, kappa=kappa, dt=dt, loss=loss, conduction=conduction)
    if reduction == "mean":
        energy = energy / new.numel()
    energy.backward()
    opt.step()
    state.momentum_buffer = opt.state[state.operator].get("momentum_buffer")
    state.image = new
    state.iteration = i + 1
    return energy.detach()


def minimize_refresh(state: MinimizeState, *, blend: float = 0.6) -> None:
    """The post's refresh: ``K`` back to the Laplacian, ``lr *= 0.995``, momentum cleared and
    ``I = blend I + (1 - blend) I_0`` (``I_0`` the input of the iteration just done).

    Args:
        state: the run's :class:`MinimizeState`, updated in place.
        blend: weight of the running image, in [0, 1] (1 keeps it, 0 restarts from ``I_0``).

    Example:
        >>> s = MinimizeState.start(torch.zeros(3, 4, 4), lr=1.0, kappa=0.2, dt=0.2)
        >>> s.image = torch.ones(1, 3, 4, 4)
        >>> minimize_refresh(s, blend=0.25)
        >>> float(s.image.mean()), s.lr
        (0.25, 0.995)
    """
    image0 = state.input_frame(max(state.iteration - 1, 0))
    state.operator = _fresh_operator(state.image)
    state.momentum_buffer = None
    state._optimizer = None
    state.lr *= LR_DECAY
    state.image = blend * state.image + (1.0 - blend) * image0


_DETERMINISTIC_LOCK = threading.Lock()
_deterministic_users = 0
_deterministic_saved: tuple[bool, bool, bool, bool] | None = None


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels (cuDNN included) on CUDA for the loop; previous settings restored.

    The flags are global to the process while runs may overlap (Prefect runs tasks on a thread
    pool), so the runs share one setting: the first to enter saves the flags and sets them, the
    last to leave restores them, under a lock with a count of the runs inside.
    """
    global _deterministic_users, _deterministic_saved
    if device.type != "cuda":
        yield
        return
    with _DETERMINISTIC_LOCK:
        if _deterministic_users == 0:
            _deterministic_saved = (torch.are_deterministic_algorithms_enabled(),
                                    torch.is_deterministic_algorithms_warn_only_enabled(),
                                    torch.backends.cudnn.deterministic,
                                    torch.backends.cudnn.benchmark)
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        _deterministic_users += 1
    try:
        yield
    finally:
        with _DETERMINISTIC_LOCK:
            _deterministic_users -= 1
            if _deterministic_users == 0 and _deterministic_saved is not None:
                enabled, warn_only, cudnn_deterministic, cudnn_benchmark = _deterministic_saved
                torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
                torch.backends.cudnn.deterministic = cudnn_deterministic
                torch.backends.cudnn.benchmark = cudnn_benchmark
                _deterministic_saved = None


def _check_refresh_schedule(frame_every: int, refresh_every: int, refresh_at: int) -> None:
    """Refuse a refresh that no iteration can trigger.

    A refresh needs ``i % frame_every == 0`` and ``i % refresh_every == refresh_at``; by the
    Chinese remainder theorem some ``i`` has both exactly when ``gcd(frame_every, refresh_every)``
    divides ``refresh_at``. The message names the nearest values that do.
    """
    step = math.gcd(frame_every, refresh_every)
    if refresh_at % step == 0:
        return
    below = refresh_at // step * step
    options = [v for v in (below, below + step) if v < refresh_every]
    raise ParamError(
        f"refresh_at={refresh_at} is never reached: refreshes happen on frame boundaries "
        f"(i % frame_every == 0) and with frame_every={frame_every}, refresh_every={refresh_every} "
        f"those fall on multiples of {step} within each period; use refresh_at: "
        f"{' or '.join(map(str, options))}, or refresh_every: null for no refresh",
        param="refresh_at")


def minimize(
    image: Tensor,
    *,
    iterations: int,
    frame_every: int = 75,
    lr: float = 2e-6,
    kappa: float = 0.2,
    dt: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    refresh_every: int | None = 375,
    refresh_at: int = 300,
    blend: float = 0.6,
    loss: Loss = "seed",
    reduction: Reduction = "sum",
    conduction: Conduction = "exp",
    generator: torch.Generator | None = None,
    callback: Callable[[int, MinimizeState], None] | None = None,
    state: MinimizeState | Mapping[str, Tensor] | None = None,
    checkpoint: _Checkpoint | Callable[[int, dict[str, Tensor]], None] | None = None,
) -> MinimizeResult:
    """The seed post's minimization art: diffuse with ``K`` while SGD trains ``K`` on an energy.

    Each iteration is :func:`minimize_step`; at every ``i % frame_every == 0`` the image and ``K``
    are kept and, if also ``i % refresh_every == refresh_at``, :func:`minimize_refresh` runs. See
    the module docstring for the exact loop of each ``loss`` (Polat 2017, "Art with Math").

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], ``H, W >= 2``; for
            ``loss="seed_video"`` also ``(T, C, H, W)`` input frames, used in turn. Not normalised.
        iterations: total iterations (>= 0), counted from the start even when resuming.
        frame_every: keep a frame every this many iterations (>= 1), at ``i = 0, frame_every, ...``.
        lr: SGD learning rate of ``K`` (> 0); with ``reduction="sum"`` scale it by the inverse
            pixel-count ratio when changing size (``docs/minimize.md``).
        kappa: conduction scale (>= KAPPA_MIN, 1e-18).
        dt: time step (> 0).
        momentum: SGD momentum in [0, 1).
        weight_decay: SGD weight decay (>= 0).
        refresh_every: refresh period in iterations (>= 1), or ``None`` for no refresh (the
            post's ``demo_video.py`` has none; ``refresh_at`` is then ignored).
        refresh_at: refresh when ``i % refresh_every == refresh_at`` at a frame boundary
            (``0 <= refresh_at < refresh_every``, and a multiple of
            ``gcd(frame_every, refresh_every)`` so that some frame boundary meets it).
        blend: weight of the running image in a refresh, in [0, 1].
        loss: ``"seed"`` or ``"seed_video"``.
        reduction: ``"sum"`` (the post) or ``"mean"`` (energy divided by ``N = C*H*W``; weight
            decay is not, so ``lr * N`` with ``weight_decay / N`` reproduces a ``"sum"`` run).
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"`` (see
            :func:`minart.diffusion.seed_step`).
        generator: unused (the loop has no randomness); kept so every stage takes one.
        callback: called as ``callback(iterations_done, state)`` after every frame boundary and
            after the last iteration; it must not change ``state``.
        state: a :class:`MinimizeState` (advanced in place) or its
            :meth:`~MinimizeState.state_dict` to resume from;
            ``image`` must be the run's input and the other parameters the same. Its ``lr`` (decayed
            by refreshes) replaces ``lr``.
        checkpoint: called at every frame boundary with ``(iterations_done, state_dict)``, either
            a callable or an object with such a ``save`` method (e.g.
            :class:`minart.engine.Checkpoint`). ``state_dict`` is a read-only mapping built on
            first access, so a save that skips this boundary costs nothing; read it (or copy it
            with ``dict()``) during the call. It holds the frames so far, so a resumed run
            returns all frames. When ``state`` is ``None`` and the object also has ``load()``
            returning ``(state_dict, iteration)`` or ``None``, the run resumes from what it
            returns.

    Returns:
        :class:`MinimizeResult` ``(frames (T, C, H, W), operators (T, C, C, 3, 3))`` with
        ``T = ceil(iterations / frame_every)``, on the image's device and dtype. Same inputs,
        device and versions give bit-identical frames; so does a resumed run.

    Raises:
        ShapeError: bad image shape, dtype or values, or a state that does not fit the image.
        ParamError: a parameter out of range, a refresh schedule no frame boundary meets, a
            state from another input or past ``iterations``, or a diverging run (non-finite
            frames or operator; lower ``lr``).

    Example:
        >>> x = torch.linspace(0, 1, 3 * 8 * 8).reshape(3, 8, 8)  # (C*H*W,) -> (C, H, W)
        >>> r = minimize(x, iterations=10, frame_every=5)
        >>> tuple(r.frames.shape), tuple(r.operators.shape)
        ((2, 3, 8, 8), (2, 3, 3, 3, 3))
        >>> bool(r.frames.min() >= 0) and bool(r.frames.max() <= 1)
        True
    """
    check_choice("loss", loss, _LOSSES)
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("conduction", conduction, _CONDUCTIONS)
    check_whole("iterations", iterations, ge=0)
    check_whole("frame_every", frame_every, ge=1)
    check_whole("refresh_at", refresh_at, ge=0)
    if refresh_every is not None:
        check_whole("refresh_every", refresh_every, ge=1)
        if refresh_at >= refresh_every:
            raise ParamError(f"refresh_at={refresh_at} must be < refresh_every={refresh_every}",
                             param="refresh_at")
        _check_refresh_schedule(frame_every, refresh_every, refresh_at)
    check_range("lr", lr, gt=0)
    check_range("kappa", kappa, ge=KAPPA_MIN)
    check_range("dt", dt, gt=0)
    check_range("momentum", momentum, ge=0)
    if momentum >= 1:
        raise ParamError(f"momentum={momentum} must be < 1", param="momentum")
    check_range("weight_decay", weight_decay, ge=0)
    check_range("blend", blend, ge=0, le=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ParamError(f"generator must be a torch.Generator, got {type(generator).__name__}",
                         param="generator")
    save = getattr(checkpoint, "save", checkpoint)
    if save is not None and not callable(save):
        raise ParamError("checkpoint must be callable or have a save(iteration, state) method",
                         param="checkpoint")

    if state is None and callable(getattr(checkpoint, "load", None)):
        found = checkpoint.load()  # type: ignore[union-attr]
        state = found[0] if found is not None else None
    if state is None:
        run = MinimizeState.start(image, lr=lr, kappa=kappa, dt=dt, loss=loss,
                                  conduction=conduction)
    else:
        run = _resume(image, state, loss=loss, iterations=iterations)
    device = run.image.device

    with _deterministic(device):
        for i in range(run.iteration, iterations):
            minimize_step(run, kappa=kappa, dt=dt, momentum=momentum, weight_decay=weight_decay,
                          loss=loss, reduction=reduction, conduction=conduction)
            if i % frame_every != 0:
                continue
            run.frames.append(run.image[0].clone())
            run.operators.append(run.operator.detach().clone())
            if refresh_every is not None and i % refresh_every == refresh_at:
                minimize_refresh(run, blend=blend)
            if save is not None:  # before the callback, which may stop the run (Ctrl-C)
                save(run.iteration, _StateView(run))
            if callback is not None:
                callback(run.iteration, run)
        if callback is not None and iterations > 0 and (iterations - 1) % frame_every != 0:
            callback(run.iteration, run)

    result = run.state_dict()
    frames, operators = result["frames"], result["operators"]
    if not (bool(torch.isfinite(frames).all()) and bool(torch.isfinite(operators).all())):
        raise ParamError(f"the run diverged (NaN or Inf in the frames or the operator) with "
                         f"lr={lr}; lower lr", param="lr")
    return MinimizeResult(frames, operators)


def _resume(image: Tensor, state: MinimizeState | Mapping[str, Tensor], *, loss: str,
            iterations: int) -> MinimizeState:
    original = _check_input(image, loss)
    run = state if isinstance(state, MinimizeState) else MinimizeState.from_state_dict(
        state, device=original.device)
    if (run.original.shape != original.shape or run.original.dtype != original.dtype
            or not torch.equal(run.original.to(original.device), original)):
        raise ParamError("state was saved for another input image; pass the same image or no "
                         "state", param="state")
    if run.iteration > iterations:
        raise ParamError(f"state is at iteration {run.iteration}, past iterations={iterations}",
                         param="state")
    if not math.isfinite(run.lr) or run.lr <= 0:
        raise ParamError(f"state has lr={run.lr}; it must be a finite number > 0", param="state")
    return run
