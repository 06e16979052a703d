#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine with only Python 3.11+, then run them.
# Creates ./.venv, installs the project with its test extra, installs Debian's chromium
# for the browser tests when it is missing (needs root or sudo), and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

exec .venv/bin/python -m pytest "$@"
