#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# README.md's qsnapctl section, run as printed: its indented qsnapctl (and
# the pull backup's qemu-img) lines are the script, on a private bus with
# qsnapd and qsnapctl from this build and real QEMU (each qsnapctl gets
# --address=, as the README says), with a vm1.xml of one 64 MiB qcow2 disk
# as a user would write it; /var/lib/images becomes a folder of this test,
# SOCKET the socket backup-begin printed, and `qsnapctl monitor` (until
# Ctrl-C) ends after 2 s. Every command must succeed (set -e), print what
# the README says it does, and the pulled backup must equal the disk.
#
#   test_readme_qsnapctl.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
src=$1 build=$2
t=$(mktemp -d /tmp/qsnap-readme-qsnapctl.XXXXXX)
addr="unix:path=$t/bus"
cleanup() {
        set +e
        "$build/tools/qsnapctl/qsnapctl" --address="$addr" destroy vm1 >/dev/null 2>&1
        for pid in $(jobs -p); do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
        rm -rf "$t"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$t/out" ] && { echo "---- the commands printed:"; cat "$t/out"; }; exit 1; }

mkdir "$t/images"
dbus-daemon --session --address="$addr" --nofork --nopidfile >/dev/null 2>&1 &
for _ in $(seq 100); do [ -S "$t/bus" ] && break; sleep 0.1; done
"$build/daemon/qsnapd" --address="$addr" --polkit=no --idle-timeout=0 --state-dir="$t/state" --runtime-dir="$t/run" \
        2>"$t/qsnapd.log" &
for _ in $(seq 100); do
        busctl --address="$addr" status org.example.Snapshot1 >/dev/null 2>&1 && break; sleep 0.1
done

qemu-img create -q -f qcow2 "$t/images/vm1.qcow2" 64M
cat >"$t/vm1.xml" <<XML
<domain type='kvm'><name>vm1</name><memory unit='MiB'>128</memory>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='$t/images/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML

awk '/^## qsnapctl/ {on = 1; next} /^## / {on = 0} on && /^    (qsnapctl|qemu-img|echo) / {print substr($0, 5)}' \
        "$src/README.md" | sed "s|/var/lib/images|$t/images|g" >"$t/walk.sh"
grep -q '^qsnapctl define vm1.xml' "$t/walk.sh" || fail "README.md's qsnapctl section lost its define"
grep -q 'SOCKET' "$t/walk.sh" || fail "README.md's qsnapctl section shows no pull backup"
{
        echo 'set -euo pipefail'
        echo "qsnapctl() { if [ \"\$1\" = monitor ]; then timeout 2 $build/tools/qsnapctl/qsnapctl --address=$addr \"\$@\" || [ \$? = 124 ];" \
             "else $build/tools/qsnapctl/qsnapctl --address=$addr \"\$@\"; fi; }"
        # The socket backup-begin prints, where the README writes SOCKET.
        sed -E "s|'(nbd\\+unix:[^']*)'|\"\\1\"|g" "$t/walk.sh" | sed -E 's|SOCKET|$SOCKET|g;
                s|^(qsnapctl backup-begin vm1 pull.xml)( .*)?$|\1 \| tee pull.out; SOCKET=$(sed -n "s/.*socket=//p" pull.out)|'
} >"$t/run.sh"
(cd "$t" && bash run.sh) >"$t/out" 2>&1 || fail "the commands failed (exit $?)"

for want in "Domain 'vm1' defined from vm1.xml" "Domain snapshot clean created" "Domain snapshot full created" \
        "Active Block Commit: successfully pivoted" "  +- full" "would go ahead now." \
        "Domain 'vm1' reverted to snapshot clean" "Domain checkpoint monday created" "Backup: completed" \
        " monday " '"type": "backup"' "Monitoring qsnapd's signals" "nbd+unix:///vda?socket=" \
        "Backup of domain 'vm1' ended"; do
        grep -qF -- "$want" "$t/out" || fail "the output lacks: $want"
done
grep -q '"data": true' "$t/out" || fail "qemu-img map printed no extents"
# The pulled copy is the disk (nothing wrote since the backup began).
disk=$("$build/tools/qsnapctl/qsnapctl" --address="$addr" domblklist vm1 --json | sed -n 's/.*"source": "\(.*\)".*/\1/p')
qemu-img compare -q "$t/vda-backup.qcow2" "$disk" || fail "the pulled backup differs from $disk"
echo "README.md qsnapctl section: OK"
