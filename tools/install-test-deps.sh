#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: QEMU, busybox and cpio for the live
# backend's tiny guest, Chromium for the browser tests (Debian's: nothing is downloaded by Playwright), and
# balloonlab with its test extras in .venv.  Then it builds the tiny guest image and (as root) Debian 13's QEMU into
# the cache, and checks every test requirement: a failure is loud (exit status 1), never a note that tests will skip.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        qemu-system-x86 busybox-static cpio debootstrap chromium fonts-dejavu-core ca-certificates >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# The live backend boots a Debian cloud kernel with a busybox initramfs; build it once, now, so tests do not.
.venv/bin/balloonlab guest build || { echo "install-test-deps: FAILED to build the guest image (above)" >&2; exit 1; }
# A second real QEMU, 10.0 from Debian 13 (debootstrap, about 100 s and 360 MB, root only), so the emulator's
# 10.0 profile is checked against the real thing too.
if [ "$(id -u)" = 0 ]; then
    .venv/bin/balloonlab guest qemu || { echo "install-test-deps: FAILED to build Debian 13's QEMU (above)" >&2; exit 1; }
else
    echo "install-test-deps: not root, so Debian 13's QEMU is not built (as root: balloonlab guest qemu);" \
         "its tests will skip here, and fail under CI=true" >&2
fi

# Everything the tests need, checked by the list the tests themselves use (tests/fixtures/requirements.py):
# under CI=true (or BALLOONLAB_REQUIRE_ALL=1) anything missing fails here, naming it, before pytest runs.
.venv/bin/python -m tests.fixtures.requirements || { echo "install-test-deps: FAILED: see MISSING above" >&2; exit 1; }
