#!/usr/bin/env bash
# Install Debian's Chromium for the console's browser tests when it is missing (idempotent).
# Playwright's own browser download cannot reach its host; the tests point Playwright at this one.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "scripts/browser.sh: chromium is missing; install Debian's 'chromium' package (root and apt-get needed)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
