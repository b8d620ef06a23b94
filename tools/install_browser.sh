#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when missing: the browser tests
# (tests/ui) drive the MLflow UI and optuna-dashboard through them.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# one apt-get at a time (the test suite runs on several pytest-xdist workers, and
# tools/postgres.sh may be installing too), waiting up to 15 minutes for the lock; whoever
# waited checks again before installing; DPkg::Lock::Timeout waits for another apt's
# dpkg lock during the install
$SUDO env DEBIAN_FRONTEND=noninteractive flock -w 900 /tmp/dpap-apt.lock sh -c '
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
  apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null'
command -v chromium >/dev/null && command -v chromedriver >/dev/null
