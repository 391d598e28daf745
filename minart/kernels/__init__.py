"""Fast paths for minart's hot loops: Triton kernels on CUDA, a compiled path on CPU.

The eager functions in :mod:`minart.diffusion` stay the readable references; the functions here
are exact replacements (1e-5 forward, 1e-4 relative gradients) that :mod:`minart.kernels.dispatch`
picks automatically. ``MINART_KERNELS=eager`` forces the references.

Nothing is imported or compiled at import time: :mod:`triton` is imported on the first call that
needs it, so ``TRITON_INTERPRET=1`` can still be set before that (to run the kernels on CPU).
"""
