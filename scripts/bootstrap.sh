#!/usr/bin/env bash
# Install uv (pinned) when missing and sync the locked Python environment into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# Version and hashes in scripts/uv-requirements.txt: without them pip installed whatever file its
# index, a mirror or a --find-links folder served as uv.
UV_REQUIREMENTS=scripts/uv-requirements.txt
UV_VERSION="$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "$UV_REQUIREMENTS")"
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  pip_uv() {
    python3 -m pip install --quiet --user --disable-pip-version-check --require-hashes -r "$UV_REQUIREMENTS" "$@"
  }
  pip_uv || pip_uv --break-system-packages
fi
uv sync --locked --quiet
# Bytecode, compiled once here: where PYTHONDONTWRITEBYTECODE is set (this machine sets it), Python
# never writes .pyc files, so every process compiled each module it imported from source, about
# 3-4 CPU-s a service start (a gateway took 5 CPU-s to answer /health; 1-2 with bytecode), a whole
# stack 20, and the tests start hundreds. Python reads a current .pyc whatever the variable says;
# compileall skips the ones that are current (seconds), and a source edited since is compiled in
# memory as before. The Docker image compiles its own (UV_COMPILE_BYTECODE).
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  libs services tools tests bench chaos >/dev/null
