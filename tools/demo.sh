#!/bin/bash
# The main job, end to end: installs what is missing (as root), builds
# qsnapd, starts a private bus and qsnapd on it (no system changes beyond
# packages), then drives a VM through busctl: define, start, write guest
# data live, snapshots (disk-only and with memory), an active commit with
# progress and pivot, pause, resume, stop —
# printing every call and every signal, and checking the data at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${QSNAP_BUILD_DIR:-$top/build}

if [ "$(id -u)" = 0 ]; then
        "$top/tools/install-deps.sh"
else
        "$top/tools/install-deps.sh" || { echo "Run once as root to install packages: sudo $0" >&2; exit 1; }
fi
[ -d "$build" ] || meson setup "$build" "$top" >/dev/null
meson compile -C "$build" >/dev/null
echo "== built $build/daemon/qsnapd ($("$build/daemon/qsnapd" --version))"

work=$(mktemp -d /tmp/qsnap-demo.XXXXXX)
bus_pid= daemon_pid= monitor_pid=
cleanup() {
        set +e
        [ -n "$monitor_pid" ] && kill "$monitor_pid" 2>/dev/null
        if [ -n "$daemon_pid" ]; then
                busctl --address="$addr" call org.example.Snapshot1 "$dom" org.example.Snapshot1.Domain Stop t 0 >/dev/null 2>&1
                kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
        fi
        [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT

# A private bus of our own: nothing on the machine changes.
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

bc() { echo "\$ busctl $*" | sed "s|--address=[^ ]*|--address=…|"; busctl --address="$addr" "$@"; }
busctl --address="$addr" monitor --match="sender=org.example.Snapshot1,type=signal" >"$work/signals" 2>&1 &
monitor_pid=$!

qemu-img create -q -f qcow2 "$work/disk.qcow2" 256M
xml="<domain type='kvm'><name>demo vm</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='$work/disk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>"

echo "== define a domain"
out=$(bc call org.example.Snapshot1 /org/example/Snapshot1 org.example.Snapshot1.Manager DefineDomain st "$xml" 0)
echo "$out"
dom=$(echo "$out" | sed -n 's/^o "\(.*\)"$/\1/p')
I=org.example.Snapshot1.Domain
echo "== start it (real qemu-system-x86_64, KVM if available, else TCG)"
bc call org.example.Snapshot1 "$dom" $I Start t 0
bc get-property org.example.Snapshot1 "$dom" $I State Disks
echo "== write a pattern into the live disk through the monitor"
bc call org.example.Snapshot1 "$dom" $I QemuMonitorCommand st \
        'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0xab 0 1M"' 1
bc call org.example.Snapshot1 "$dom" $I QemuMonitorCommand st '{"execute":"query-status"}' 0
echo "== an external disk-only snapshot (16 = DISK_ONLY): a new overlay, the old file frozen"
bc call org.example.Snapshot1 "$dom" $I CreateSnapshot st '<domainsnapshot><name>before-upgrade</name><description>first</description></domainsnapshot>' 16
bc call org.example.Snapshot1 "$dom" $I QemuMonitorCommand st \
        'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0xcd 1M 1M"' 1
echo "== a full-system snapshot: memory saved to a file, disks switched, the guest keeps running"
bc call org.example.Snapshot1 "$dom" $I CreateSnapshot st \
        "<domainsnapshot><name>with-memory</name><memory snapshot='external' file='$work/mem.state'/></domainsnapshot>" 0
bc get-property org.example.Snapshot1 "$dom" $I State Disks CurrentSnapshot
bc call org.example.Snapshot1 "$dom" $I ListSnapshots t 0
bc call org.example.Snapshot1 "$dom/snapshot/before_2dupgrade" org.example.Snapshot1.Snapshot GetXMLDesc t 0 | sed "s/\\\\n/\n/g" | head -13
echo "== commit the whole chain back into the base while the guest runs (ACTIVE commit, 4), then pivot"
out=$(bc call org.example.Snapshot1 "$dom" $I BlockCommit ssstt vda "" "" 0 4)
echo "$out"
job=$(echo "$out" | sed -n 's/^o "\(.*\)"$/\1/p')
for _ in $(seq 100); do
        st=$(busctl --address="$addr" get-property org.example.Snapshot1 "$job" org.example.BlockJob1 State)
        [ "$st" = 's "ready"' ] && break; sleep 0.1
done
bc get-property org.example.Snapshot1 "$job" org.example.BlockJob1 Type State Cur End
bc call org.example.Snapshot1 "$job" org.example.BlockJob1 Pivot
sleep 0.5
bc get-property org.example.Snapshot1 "$job" org.example.BlockJob1 State
bc get-property org.example.Snapshot1 "$dom" $I Disks
echo "== pause, resume, stop"
bc call org.example.Snapshot1 "$dom" $I Pause
bc get-property org.example.Snapshot1 "$dom" $I State
bc call org.example.Snapshot1 "$dom" $I Resume
bc call org.example.Snapshot1 "$dom" $I Stop t 0
bc get-property org.example.Snapshot1 "$dom" $I State
echo "== after the commit the base holds everything"
qemu-io -r -f qcow2 -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 1M 1M' "$work/disk.qcow2"
qemu-img check -q "$work/disk.qcow2" && echo "qemu-img check: clean"

sleep 0.3
echo "== signals qsnapd sent"
grep -E 'Member=(InterfacesAdded|Progress|Ready|Completed|BlockJobEvent)|STRING "(running|paused|shutoff|completed)"' "$work/signals" | sed 's/^ *//' | grep -v '^$' | head -60 || true
echo "== done"
