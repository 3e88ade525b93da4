"""Keep third-party noise out of user-facing output.

torchao logs a warning for each CUDA-only extension it cannot load on a CPU machine, and
torch's pytree logs deprecation notes from torchao's enum registrations; neither is
actionable for an edgeformer user (shared/NOTES.md).
"""

import logging
import os
import warnings
from contextlib import contextmanager

_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet() -> None:
    import torch  # noqa: F401  torch configures its loggers on import; adjust after it

    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*is deprecated.*", module=r"torch\.export.*")
    # executorch's custom_ops validation calls torch._check_is_size (deprecated in torch 2.13)
    warnings.filterwarnings("ignore", message=r".*_check_is_size.*", category=FutureWarning)
    # the KV cache is a mutated buffer, zero at load and always written before it is read
    warnings.filterwarnings("ignore", message=r"Mutation on a buffer in the model is detected.*", category=UserWarning)


@contextmanager
def native_stderr_silenced():
    """Silence C/C++ writes to fd 2 (ExecuTorch's cpuinfo and threadpool logs)."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
