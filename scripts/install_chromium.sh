#!/usr/bin/env bash
# Install Debian's Chromium and its matching chromedriver for the browser test (tests/browser/).
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver are already there.
# Needs root (or passwordless sudo) and network access to the Debian mirrors.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install_chromium.sh: need root or passwordless sudo to apt-get install chromium chromium-driver" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation
echo "installed: $(/usr/bin/chromium --version)"
