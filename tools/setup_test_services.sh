#!/usr/bin/env bash
# Installs the system packages some tests need, from Debian's archive (apt-get), and says
# what it installs. pytest itself never installs anything: without these packages the
# tests that need them are skipped, each with a line naming this script.
#
#   chromium, chromium-driver   tests/ui: the MLflow UI and optuna-dashboard in a real browser
#   postgresql                  tests/search: workers sharing a PostgreSQL study, an MLflow
#                               server on PostgreSQL (tools/postgres.sh runs the server)
#   dataset-fashion-mnist       tests/data: the real Fashion-MNIST files, checked by content
#
# Idempotent: installed packages are left alone, and with all four present it changes
# nothing (no apt-get update either). Needs root: as root it runs apt-get itself, else
# through sudo when sudo is there; otherwise it prints the command to run and exits 1.
#
#   bash tools/setup_test_services.sh            install what is missing
#   bash tools/setup_test_services.sh --check    only say what is missing (exit 1 if any)
set -euo pipefail

PACKAGES=(chromium chromium-driver postgresql dataset-fashion-mnist)

installed() {  # whether Debian package $1 is installed
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

say() { echo "setup_test_services: $*"; }

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    *) echo "usage: bash tools/setup_test_services.sh [--check]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    say "no apt-get/dpkg here (not Debian or Ubuntu): install ${PACKAGES[*]} (or their equivalents) another way;" \
        "without them the tests that need them are skipped" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if installed "$p"; then
        say "$p: installed"
    else
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    say "nothing to install"
    exit 0
fi
if [[ $check_only -eq 1 ]]; then
    say "missing: ${missing[*]}; run: bash tools/setup_test_services.sh" >&2
    exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        say "installing ${missing[*]} needs root; as root run:" >&2
        echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

say "installing with apt-get: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
for p in "${missing[@]}"; do
    installed "$p" || { say "apt-get did not install $p" >&2; exit 1; }
    say "$p: installed now"
done
