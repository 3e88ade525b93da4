"""Run a `.pte` with the ExecuTorch runtime (never the eager model)."""

from __future__ import annotations

import tempfile
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


class AotiProgram:
    """A server artifact's AOTInductor package (`model.pt2`): `program(*inputs) -> output` on
    the device it was compiled for (inputs moved there, the output brought back to the CPU)."""

    def __init__(self, package: Path, device: str, threads: int):
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError(f"{package} was compiled for a CUDA GPU and this machine has none; run it on the GPU server "
                            "or rebuild with --fallback cpu")
        torch.set_num_threads(threads)
        try:
            self._run = torch._inductor.aoti_load_package(str(package))
        except Exception as e:
            raise UserError(f"could not load the AOTInductor package {package} ({e}); rebuild the artifact") from None
        self.device = device

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self._run(*(x.to(self.device) for x in inputs))
        return (out[0] if isinstance(out, (list, tuple)) else out).cpu()


def open_program(artifact, threads: int, pte: Path | None = None, method: str = "forward"):
    """The runnable form of an artifact: its `.pte` through ExecuTorch (its `method`), or a server package."""
    artifact.check_runs_here()
    m = artifact.manifest
    if m.pte.get("format") == "aoti":
        return AotiProgram(pte or artifact.pte_file, m.pte.get("device", "cpu"), threads)
    return Program(pte or artifact.pte_file, threads, causal_lm=bool(m.generation), method=method, data=artifact.data_file)


class Program:
    """A loaded `.pte` method (`forward` unless named): `program(*inputs) -> output`.

    `causal_lm`: register the kernels of ExecuTorch's LLM custom ops (llama::update_cache,
    custom_sdpa; importing them costs ~35 MiB, so encoders skip it) and silence the native
    stderr of each call (the custom SDPA kernel logs "No temp allocator provided" every time).
    `data`: the program's data file (`model.ptd`, or `Lowered.data`'s bytes), where it has one."""

    def __init__(self, pte: bytes | Path, threads: int, causal_lm: bool = False, method: str = "forward",
                 data: Path | bytes | None = None):
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
        if isinstance(data, bytes):  # the runtime reads a data file by path: one that lives as long as the program
            self._data = tempfile.NamedTemporaryFile(suffix=".ptd")
            self._data.write(data)
            self._data.flush()
            data = Path(self._data.name)
        try:
            self._program = Runtime.get().load_program(str(pte) if isinstance(pte, Path) else pte,
                                                       data_path=None if data is None else str(data))
            self._method = self._program.load_method(method)
        except Exception as e:  # the runtime raises RuntimeError/ValueError with a status code
            raise UserError(f"the ExecuTorch runtime could not load the program ({e}); rebuild the artifact") from None

    @classmethod
    def of(cls, lowered, threads: int, **kwargs) -> Program:
        """A backend's `Lowered` program, with its data file where it has one."""
        return cls(lowered.pte, threads, data=lowered.data, **kwargs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        try:
            if self._quiet:
                with native_stderr_silenced():
                    return self._method.execute(list(inputs))[0]
            return self._method.execute(list(inputs))[0]
        except RuntimeError as e:  # e.g. a shape a static program was not built for
            shapes = ", ".join(str(list(x.shape)) for x in inputs)
            raise UserError(f"the program refused inputs of shape {shapes} ({e}); give the shapes its manifest's "
                            "inputs name (a static .pte takes exactly that shape)") from None
