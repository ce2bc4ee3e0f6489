#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# README.md's "A busctl walk-through", run as printed: its indented lines
# (busctl, and gdbus with --system made --address=) are the script, on the private bus README's "Without installing" starts (its
# lines run too, on this build tree; each busctl gets --address=, as the
# README says) with real QEMU; /var/lib/images becomes a folder of this test. Where the README reads a job's Ready or State, a
# person would have seen its signal first: the test waits for that signal
# (Ready, Completed) in a bus monitor started before the first call. Every
# call must succeed (set -e), the "# →" replies shown must be what busctl
# prints, and the guest data written through the monitor must be in the
# disk at the end.
#
#   test_readme_busctl.sh SOURCE_ROOT QSNAPD_BINARY
set -euo pipefail
src=$1 qsnapd=$2
t=$(mktemp -d /tmp/qsnap-readme-busctl.XXXXXX)
addr="unix:path=$t/bus"
bus_pid= daemon_pid= mon_pid=
cleanup() {
        set +e
        [ -n "$mon_pid" ] && kill "$mon_pid" 2>/dev/null
        if [ -n "$daemon_pid" ]; then
                command busctl --address="$addr" call org.example.Snapshot1 /org/example/Snapshot1/domain/vm1 \
                        org.example.Snapshot1.Domain Stop t 0 >/dev/null 2>&1
                kill "$daemon_pid"; wait "$daemon_pid"
        fi
        [ -n "$bus_pid" ] && kill "$bus_pid"
        for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done   # whatever README's start left
        rm -rf "$t"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$t/out" ] && { echo "---- the walk-through printed:"; cat "$t/out"; }; exit 1; }

mkdir "$t/images"
# The bus and qsnapd started as README.md's "Without installing" shows it,
# its /tmp/qs being ours and build/ this build tree; the test only waits
# for the bus socket and for qsnapd's name where a person would look.
build=$(dirname "$(dirname "$qsnapd")")
awk '/^Without installing/ {on = 1; next} /^## / {on = 0} on && /^    / {print substr($0, 5)}' "$src/README.md" \
        | sed "s|/tmp/qs|$t|g; s|build/|$build/|g" >"$t/start.sh"
grep -q 'dbus-daemon' "$t/start.sh" && grep -q 'qsnapd ' "$t/start.sh" || fail "README.md shows no private bus to start"
sed -i "/qsnapd /i for _ in \$(seq 100); do [ -S $t/bus ] \&\& break; sleep 0.1; done" "$t/start.sh"
sed -i "/^$(printf '%s' "$build" | sed 's|/|\\/|g')\/tools\/qsnapctl/i for _ in \$(seq 100); do command busctl --address=$addr status org.example.Snapshot1 >/dev/null 2>\&1 \&\& break; sleep 0.1; done" "$t/start.sh"
source "$t/start.sh" >"$t/start.out" 2>"$t/start.err" || fail "README.md's start failed: $(cat "$t/start.err")"
mapfile -t pids < <(jobs -p)
bus_pid=${pids[0]:-} daemon_pid=${pids[1]:-}
[ -n "$daemon_pid" ] || fail "README.md's start left no qsnapd running: $(cat "$t/start.err")"
grep -q 'Name *State' "$t/start.out" || fail "qsnapctl list --all printed: $(cat "$t/start.out" "$t/start.err")"
command busctl --address="$addr" monitor org.example.Snapshot1 >"$t/monitor" 2>&1 &
mon_pid=$!
for _ in $(seq 100); do [ -s "$t/monitor" ] && break; sleep 0.1; done

# The block of the README, its indented lines, /var/lib/images → ours; the
# closing `busctl monitor` (which runs until Ctrl-C) ends after 2 s.
awk '/^## A busctl walk-through/ {on = 1; next} /^## / {on = 0} on && /^    / {print substr($0, 5)}' "$src/README.md" \
        | sed "s|/var/lib/images|$t/images|g; s|^busctl monitor |monitor_2s |" >"$t/walk.sh"
grep -q 'DefineDomain' "$t/walk.sh" || fail "README.md has no busctl walk-through"

# A job's signal, seen by the monitor (now or later).
wait_signal() {
        grep -q -m1 "Path=$1 *Interface=org.example.BlockJob1 *Member=$2" \
                < <(timeout 60 tail -n +1 -f --pid=$$ "$t/monitor") || fail "no $2 signal of $1 within 60 s"
}
{
        echo 'set -euo pipefail'
        echo "busctl() { command busctl --address=$addr \"\$@\"; }"
        echo "gdbus() { local a=(); for x in \"\$@\"; do if [ \"\$x\" = --system ]; then a+=(--address $addr); else a+=(\"\$x\"); fi; done; command gdbus \"\${a[@]}\"; }"
        echo "monitor_2s() { timeout 2 busctl --address=$addr monitor \"\$@\" || [ \$? = 124 ]; }"
        declare -f wait_signal
        echo 'fail() { echo "FAIL: $*"; exit 1; }'
        echo "t=$t"
        sed -E 's|^(busctl get-property org.example.Snapshot1 \$J org.example.BlockJob1 State.*)$|wait_signal "$J" Completed; \1|;
                s|^(busctl get-property org.example.Snapshot1 \$J org.example.BlockJob1 Ready.*)$|wait_signal "$J" Ready; \1|' "$t/walk.sh"
} >"$t/run.sh"
grep -q 'wait_signal "$J" Completed' "$t/run.sh" || fail "the walk-through no longer reads the delete job's State"
grep -q 'wait_signal "$J" Ready' "$t/run.sh" || fail "the walk-through no longer reads the commit's Ready"

bash "$t/run.sh" >"$t/out" 2>&1 || fail "the walk-through failed (exit $?)"

# The replies the README shows ("# → ..."), in its order, in what busctl printed.
grep -o '# → .*' "$t/walk.sh" | sed 's/^# → //' | while IFS= read -r want; do
        case $want in
        *…* | "b s"* | "b s t"*) continue ;;   # elided or a signature only
        esac
        grep -qF -- "$want" "$t/out" || fail "busctl did not print the README's reply: $want"
done
grep -qF 's "completed"' "$t/out" || fail "the delete's job did not complete"
grep -qF 'a{oa{sa{sv}}} 0' "$t/out" || fail "GetManagedObjects after Undefine is not empty"
# The data written through QEMU's monitor (0xab at 0) is in the disk the
# domain ended on (Undefine keeps images): the file GetXMLDesc names.
disk=$(grep -o "source file=\\\\'[^\\\\]*" "$t/out" | tail -1 | sed "s/.*'//")
[ -f "$disk" ] || fail "cannot find the final disk in GetXMLDesc's reply"
qemu-io -r -f qcow2 -c 'read -P 0xab 0 1M' "$disk" >"$t/read" 2>&1 || fail "$disk lacks the guest's data: $(cat "$t/read")"
grep -q 'read 1048576/1048576' "$t/read" || fail "$disk: $(cat "$t/read")"
qemu-img check -q "$disk" || fail "qemu-img check $disk"
echo "README.md busctl walk-through: OK"
