#!/bin/bash
# The main job, end to end, with qsnapctl: installs what is missing (as
# root), builds qsnapd and qsnapctl, starts a private bus and qsnapd on it
# (nothing else on the machine changes), then drives a VM: define, start,
# write guest data live, an external snapshot, more data, a full-system
# snapshot with memory, more data, an active block commit with its live
# progress bar and the pivot, a revert, the snapshot tree, a delete that
# merges, stop — printing every command, and checking the data at the end.
# Run it as root on a fresh Debian 12 machine (no sudo needed), or as a user
# once the packages are there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${QSNAP_BUILD_DIR:-$top/build}

if [ "$(id -u)" = 0 ]; then
        "$top/tools/install-deps.sh"
else
        "$top/tools/install-deps.sh" || { echo "Run once as root to install the packages: $0 (or sudo $0)" >&2; exit 1; }
fi
[ -d "$build" ] || meson setup "$build" "$top" >/dev/null
meson compile -C "$build" >/dev/null
echo "== built $build/daemon/qsnapd ($("$build/daemon/qsnapd" --version)) and $build/tools/qsnapctl/qsnapctl"

work=$(mktemp -d /tmp/qsnap-demo.XXXXXX)
bus_pid= daemon_pid=
cleanup() {
        set +e
        if [ -n "$daemon_pid" ]; then
                "$build/tools/qsnapctl/qsnapctl" --address="$addr" destroy "demo vm" >/dev/null 2>&1
                kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
        fi
        [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT

# A private bus of our own, and qsnapd on it (without polkit: it is ours).
addr="unix:path=$work/bus"
dbus-daemon --session --address="$addr" --nofork --nopidfile --print-address >/dev/null 2>&1 &
bus_pid=$!
for _ in $(seq 50); do [ -S "$work/bus" ] && break; sleep 0.1; done
"$build/daemon/qsnapd" --address="$addr" --polkit=no --idle-timeout=0 \
        --state-dir="$work/state" --runtime-dir="$work/run" --graceful-timeout=3 2>"$work/qsnapd.log" &
daemon_pid=$!
for _ in $(seq 100); do
        busctl --address="$addr" status org.example.Snapshot1 >/dev/null 2>&1 && break; sleep 0.1
done

# qsnapctl on that bus; each command is printed before it runs. On the
# system bus (after meson install) it is plain `qsnapctl ...`.
q() {
        printf '\n$ qsnapctl'; printf ' %q' "$@"; printf '\n'
        "$build/tools/qsnapctl/qsnapctl" --address="$addr" "$@"
}
write() {       # write PATTERN OFFSET LENGTH: guest data, through QEMU's monitor
        q qemu-monitor-command "demo vm" --hmp \
                "qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P $1 $2 $3\""
        "$build/tools/qsnapctl/qsnapctl" --address="$addr" qemu-monitor-command "demo vm" --hmp \
                'qemu-io -d /machine/peripheral/vda/virtio-backend "flush"' >/dev/null
}

qemu-img create -q -f qcow2 "$work/disk.qcow2" 512M
echo "== define a domain (a libvirt <domain>) and start it: real qemu-system-x86_64, KVM if it can, else TCG"
q define - <<EOF
<domain type='kvm'><name>demo vm</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='$work/disk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
EOF
q start "demo vm"
q list
echo
echo "== write guest data live: 0xab at 0"
write 0xab 0 1M
echo
echo "== an external disk-only snapshot: a new overlay, the old file frozen"
q snapshot-create-as "demo vm" before-upgrade "the clean system" --disk-only
write 0xcd 1M 1M
echo
echo "== a full-system snapshot: memory saved to a file, the disks switched, the guest keeps running"
q snapshot-create-as "demo vm" with-memory --memspec "file=$work/mem.state,snapshot=external"
echo "== 96 MiB more guest data into the new overlay"
write 0xef 8M 96M
q domblklist "demo vm"
echo
echo "== commit the active overlay into the one below while the guest runs, with a live bar, then pivot"
q blockcommit "demo vm" vda --active --shallow --pivot --wait --verbose --bandwidth 48MiB/s
q domblklist "demo vm"
echo
echo "== the dry run of a revert, then the revert: a new overlay on the frozen base"
q snapshot-check-revert "demo vm" before-upgrade || true
q snapshot-revert "demo vm" before-upgrade --running --force
echo
echo "== the snapshot tree (as virsh draws it), and the snapshots"
q snapshot-list "demo vm" --tree
q snapshot-list "demo vm" --parent
echo
echo "== delete a snapshot: the dry run with the space its merge needs, then the delete"
q snapshot-check-delete "demo vm" with-memory || true
q snapshot-delete "demo vm" with-memory
q snapshot-list "demo vm" --tree
q stop "demo vm"
q list --all --json

echo
echo "== the data: the reverted disk reads the clean system (0xab) and nothing written after it"
active=$("$build/tools/qsnapctl/qsnapctl" --address="$addr" domblklist "demo vm" --json | sed -n 's/.*"source": "\(.*\)".*/\1/p')
qemu-io -r -f qcow2 -c 'read -P 0xab 0 1M' -c 'read -P 0 1M 1M' -c 'read -P 0 8M 96M' "$active"
qemu-img check -q "$active" && echo "qemu-img check $active: clean"
echo "== done"
