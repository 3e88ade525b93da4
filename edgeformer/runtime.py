"""Run a `.pte` with the ExecuTorch runtime (never the eager model)."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeformer._quiet import native_stderr_silenced
from edgeformer.errors import UserError


def set_threads(n: int) -> None:
    """Size ExecuTorch's CPU threadpool (XNNPACK uses it) to `n` threads."""
    from executorch.extension.pybindings import portable_lib

    with native_stderr_silenced():
        if portable_lib._threadpool_get_thread_count() != n:
            portable_lib._unsafe_reset_threadpool(n)


class Program:
    """A loaded `.pte` forward method: `program(*inputs) -> output`.

    `causal_lm`: register the kernels of ExecuTorch's LLM custom ops (llama::update_cache,
    custom_sdpa; importing them costs ~35 MiB, so encoders skip it) and silence the native
    stderr of each call (the custom SDPA kernel logs "No temp allocator provided" every time)."""

    def __init__(self, pte: bytes | Path, threads: int, causal_lm: bool = False):
        import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed::embedding_*
        from executorch.runtime import Runtime

        if causal_lm:
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        set_threads(threads)
        # The runtime reads the buffer in place: keep the bytes and the program alive as long
        # as the method (dropping them segfaults on the next execute). A path is mapped, not
        # copied: 120 MiB less peak memory for a 157 MiB LM than its bytes.
        self._pte = pte
        self._quiet = causal_lm
        try:
            self._program = Runtime.get().load_program(str(pte) if isinstance(pte, Path) else pte)
            self._method = self._program.load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError/ValueError with a status code
            raise UserError(f"the ExecuTorch runtime could not load the program ({e}); rebuild the artifact") from None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._quiet:
            with native_stderr_silenced():
                return self._method.execute(list(inputs))[0]
        return self._method.execute(list(inputs))[0]
