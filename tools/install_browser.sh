#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when missing: the browser tests
# (tests/ui) drive the MLflow UI and optuna-dashboard through them.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# one apt-get at a time: tools/postgres.sh may be installing too (the test suite runs on
# several pytest-xdist workers); DPkg::Lock::Timeout waits for any other apt user
$SUDO env DEBIAN_FRONTEND=noninteractive flock /tmp/dpap-apt.lock sh -c 'apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null'
command -v chromium >/dev/null && command -v chromedriver >/dev/null
