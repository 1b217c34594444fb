#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: QEMU, busybox and cpio for the live
# backend's tiny guest, Chromium for the browser tests (Debian's: nothing is downloaded by Playwright), libvirt's
# daemon, QEMU driver and headers (the libvirt backend's tests start private libvirtd instances; libvirt-python
# builds against libvirt-dev with pkg-config and gcc), and balloonlab with its test extras in .venv.  Then it
# builds the tiny guest image into the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        qemu-system-x86 busybox-static cpio debootstrap chromium fonts-dejavu-core ca-certificates \
        libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc >/dev/null
    # libvirtd (as root) looks its QEMU user up before it reads qemu.conf; Debian's libvirt-daemon-system would
    # create it, but that package wants systemd, polkit and firewalld.  Create the same user and groups.
    getent group kvm >/dev/null || $SUDO groupadd --system kvm
    getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
    id libvirt-qemu >/dev/null 2>&1 || $SUDO useradd --system --gid kvm --home-dir /var/lib/libvirt \
        --no-create-home --shell /usr/sbin/nologin libvirt-qemu
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# The live backend boots a Debian cloud kernel with a busybox initramfs; build it once, now, so tests do not.
.venv/bin/balloonlab guest build || echo "install-test-deps: guest image not built; live tests will skip" >&2
# A second real QEMU, 10.0 from Debian 13 (debootstrap, about 100 s and 360 MB, root only), so the emulator's
# 10.0 profile is checked against the real thing too.  Optional: its tests skip without it.
if [ "$(id -u)" = 0 ]; then
    .venv/bin/balloonlab guest qemu || echo "install-test-deps: Debian 13 QEMU not built; its tests will skip" >&2
fi
