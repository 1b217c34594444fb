#!/bin/sh
# /init of balloonlab's tiny guest: busybox sh as PID 1 in the initramfs, never a real root filesystem.
# guest_image.py fills in the placeholders (between double percent signs) when it builds the image; the
# launcher and tests rely on the ready line (console, ttyS0) and on the command protocol (ttyS1) below.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Workloads write here: page cache in tmpfs is what makes free-memory fall and disk-caches grow.
mount -t tmpfs -o mode=1777 tmpfs %%WORKDIR%%

# The virtio drivers are modules in the Debian cloud kernel and need exactly this order (else "Unknown
# symbol"); a module absent from the image is built into the kernel (or not needed), so it is skipped.
for m in %%MODULES%%; do
    if [ -e "/lib/modules/balloonlab/$m.ko" ]; then
        insmod "/lib/modules/balloonlab/$m.ko" || echo "balloonlab-guest: insmod $m failed"
    fi
done
driver=no
[ -d /sys/bus/virtio/drivers/virtio_balloon ] && driver=yes
device=no
for d in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do [ -e "$d" ] && device=yes; done

# Command channel on ttyS1.  The host writes one line per command:
#     @CMD@ TOKEN BASE64(command)
# and the guest answers with
#     @BEGIN@ TOKEN\n<output of sh, stdout and stderr>\n@END@ TOKEN EXIT_CODE\n
# (the newline before @END@ is always added, the host strips it).  Anything else on the line is ignored, so the
# host may send a bare newline first to flush a half-written line.  The port is raw: no echo, no CR/LF mangling.
serve() {
    exec 3<>/dev/ttyS1
    stty raw -echo clocal <&3
    echo "%%READY%% kernel=$(uname -r) driver=$driver device=$device channel=ttyS1"
    while :; do
        IFS=' ' read -r tag token payload <&3 || { sleep 1; continue; }
        [ "$tag" = "@CMD@" ] || continue
        if printf '%s\n' "$payload" | base64 -d > /run/cmd.sh 2>/dev/null; then
            printf '@BEGIN@ %s\n' "$token" >&3
            (cd %%WORKDIR%% && exec sh /run/cmd.sh) </dev/null >&3 2>&3
            rc=$?
        else
            printf '@BEGIN@ %s\n' "$token" >&3
            echo "balloonlab-guest: could not decode the command" >&3
            rc=126
        fi
        printf '\n@END@ %s %s\n' "$token" "$rc" >&3
    done
}

# A port without a UART behind it may open but fails stty (EIO).  Try in a subshell: a failed `exec` would
# end PID 1.
if (exec 3<>/dev/ttyS1 && stty raw -echo clocal <&3) 2>/dev/null; then
    serve
fi
echo "%%READY%% kernel=$(uname -r) driver=$driver device=$device channel=none"
while :; do sleep 3600; done
