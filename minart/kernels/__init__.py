"""Fast paths for minart's hot loops: Triton kernels on CUDA, a compiled path on CPU.

The eager functions in :mod:`minart.diffusion` and :mod:`minart.fractal` stay the readable
references; the functions here are exact replacements (1e-5 forward, 1e-4 relative gradients,
fractal counts on >= 99.9 % of pixels) that :mod:`minart.kernels.dispatch` picks automatically.
``MINART_KERNELS=eager`` forces the references.

Nothing is imported or compiled at import time: :mod:`triton` is imported on the first call that
needs it, so ``TRITON_INTERPRET=1`` can still be set before that (to run the kernels on CPU).
"""

from .dispatch import (
    CPU_COMPILE_MIN_WORK,
    classic_step_fast,
    fractal_field_fast,
    kernels_mode,
    perona_malik_step_fast,
    seed_loss_step,
    seed_step_fast,
    seed_sweep,
    step_path,
    triton_available,
)

__all__ = [
    "CPU_COMPILE_MIN_WORK",
    "classic_step_fast",
    "fractal_field_fast",
    "kernels_mode",
    "perona_malik_step_fast",
    "seed_loss_step",
    "seed_step_fast",
    "seed_sweep",
    "step_path",
    "triton_available",
]
