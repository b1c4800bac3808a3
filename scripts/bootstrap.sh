#!/usr/bin/env bash
# Install uv (pinned) when missing and sync the locked Python environment into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --user --disable-pip-version-check "uv==$UV_VERSION" \
    || python3 -m pip install --quiet --user --break-system-packages "uv==$UV_VERSION"
fi
uv sync --locked --quiet
