#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qsnapd under a real systemd: the host's own systemd, booted as PID 1 of a
# systemd-nspawn container, with qsnapd installed into it by `meson install`.
# Proves, end to end, that
#   - a call to org.example.Snapshot1 D-Bus-activates qsnapd.service
#     through systemd (SystemdService=), with its StateDirectory=;
#   - every QEMU qsnapd launches is moved into a transient scope
#     qsnap-<uuid>.scope, out of qsnapd.service's cgroup;
#   - `systemctl stop qsnapd.service` leaves that QEMU running, and the
#     next call re-activates qsnapd, which re-attaches to it (State
#     "running");
#   - the hardening of the unit (docs/security.md) is applied — DevicePolicy,
#     DeviceAllow, CapabilityBoundingSet, SystemCallFilter, ProtectProc,
#     PrivateMounts as systemctl show reports them, and as the kernel shows
#     them on qsnapd and on the QEMU it forks (/proc/PID/status: the
#     capability bounding set, seccomp, no_new_privs; /proc mounted with
#     hidepid=invisible) — and QEMU still runs under it: an external
#     snapshot of the running VM and a block job (BlockPull) complete;
#   - qsnapctl -M CONTAINER from the host (and qsnapctl inside) drives that
#     qsnapd: list --json, domblklist, suspend/resume, a named error;
#   - qsnapctl on a terminal in a logind session (systemd-run -p
#     PAMName=login) starts pkttyagent, which asks for host-admin's password;
#     a wrong one is AccessDenied; --no-ask-password asks nothing;
#   - Stop quits QEMU and the scope goes away.
#
#   test_systemd.sh BUILD_ROOT SOURCE_ROOT        (as root)
#
# QSNAP_TEST_VERBOSE=1 prints the journals and logs also on success.
#
# How the container is built (see the project notes, "Real systemd for unit
# tests"): a tiny root in a temporary directory with the merged-/usr
# symlinks, a copy of /etc (with a real /etc/os-release), and the host's /usr
# as an overlay whose upper directory receives our installed files, so the
# host's /usr is never touched. nspawn runs in a private mount namespace with
# its own tmpfs on /run (nspawn refuses a non-tmpfs /run) and as PID 1 of a
# PID namespace of its own (so that nothing of the container can outlive this
# script), with --register=no --keep-unit (no host systemd or machined is
# needed) and a private network. Commands run inside through nsenter into
# the container's namespaces. The container boots a minimal target (basic.target + D-Bus), so
# whatever the host has enabled cannot slow or break the boot.
#
# A missing requirement is a failure, never a skip. Every wait is bounded;
# everything is cleaned up on any exit (the container is powered off, or
# killed, and since QEMU lives in the container's PID namespace it cannot
# outlive it).
set -u -o pipefail

T0=$(date +%s%N)
BUILD=${1:-}
SRC=${2:-}

NAME=org.example.Snapshot1
ROOT_PATH=/org/example/Snapshot1
DOM_NAME="scope test"
DOM_PATH=$ROOT_PATH/domain/scope_20test
IMAGES_IN=/srv/qsnap-test              # where $TMP/shared appears inside

TMP='' NSPAWN_PID='' LEADER='' PIDNS='' FAILED=0 CLEANED=0
UNITS_LOAD=/run/systemd/systemd-units-load
HAD_UNITS_LOAD=no
[ -e "$UNITS_LOAD" ] && HAD_UNITS_LOAD=yes
declare -a CG_PARENTS=()

log() {
        local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
        printf '[%3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}

# ---- running things inside the container ----

# inside CMD...: run CMD in all the container's namespaces, with a clean
# environment, bounded by $INSIDE_TIMEOUT (default 30 s).
inside() {
        timeout -k 5 "${INSIDE_TIMEOUT:-30}" \
                nsenter -t "$LEADER" -m -u -i -n -p -C -r -w \
                env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 \
                "$@"
}

bus() { inside busctl --timeout=20 "$@"; }

# prop OBJECT_PATH INTERFACE PROPERTY: the value of a string/object property,
# without busctl's type prefix and quotes.
prop() {
        local out
        out=$(bus get-property "$NAME" "$1" "$2" "$3") || return 1
        out=${out#[so] }
        out=${out#\"}
        printf '%s\n' "${out%\"}"
}

unit_prop() { inside systemctl show --value -p "$2" "$1"; }

# ---- diagnostics, failure, cleanup ----

diagnostics() {
        [ -n "$LEADER" ] && [ -d "/proc/$LEADER" ] || return 0
        echo "======== journal of qsnapd.service (inside) ========"
        INSIDE_TIMEOUT=10 inside journalctl -b --no-pager -o short-monotonic -u qsnapd.service
        echo "======== D-Bus and scopes in the journal (inside) ========"
        INSIDE_TIMEOUT=10 inside journalctl -b --no-pager -o short-monotonic -u dbus.service -u 'qsnap-*.scope' \
                -u polkit.service | tail -n 60
        echo "======== systemctl --failed, scopes (inside) ========"
        INSIDE_TIMEOUT=10 inside systemctl --no-pager --failed
        INSIDE_TIMEOUT=10 inside systemctl --no-pager status --all 'qsnap-*.scope' qsnapd.service
        echo "======== QEMU logs (inside /var/lib/qsnap/log) ========"
        INSIDE_TIMEOUT=10 inside sh -c 'for f in /var/lib/qsnap/log/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done'
}

fail() {
        echo "FAIL: $*" >&2
        FAILED=1
        diagnostics
        exit 1
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
        local secs=$1 what=$2 end
        shift 2
        end=$(( $(date +%s%N) + secs * 1000000000 ))
        until "$@"; do
                [ "$(date +%s%N)" -lt "$end" ] || fail "timed out after ${secs}s waiting for $what"
                sleep 0.1
        done
}

nspawn_alive() { [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; }

# Wait up to $1 seconds for nspawn to exit; reap it.
wait_nspawn_exit() {
        local end=$(( $(date +%s%N) + $1 * 1000000000 ))
        while nspawn_alive; do
                # A zombie child of ours still answers kill -0: reap it.
                if grep -q '^State:.*Z' "/proc/$NSPAWN_PID/status" 2>/dev/null; then break; fi
                [ "$(date +%s%N)" -lt "$end" ] || return 1
                sleep 0.1
        done
        wait "$NSPAWN_PID" 2>/dev/null
        NSPAWN_PID=
        return 0
}

cleanup() {
        local rc=$? p
        [ "$CLEANED" = 1 ] && return
        CLEANED=1
        trap - EXIT INT TERM HUP
        [ "$rc" -ne 0 ] && FAILED=1
        if nspawn_alive; then
                if [ -n "$LEADER" ] && [ -d "/proc/$LEADER" ]; then
                        INSIDE_TIMEOUT=10 inside systemctl --no-block poweroff >/dev/null 2>&1
                fi
                if ! wait_nspawn_exit 20; then
                        echo "cleanup: the container did not power off in 20 s; killing systemd-nspawn" >&2
                        kill -TERM "$NSPAWN_PID" 2>/dev/null
                        wait_nspawn_exit 5 || { kill -KILL "$NSPAWN_PID" 2>/dev/null; wait_nspawn_exit 5; }
                fi
        fi
        # Anything still in the container's PID namespace (there should be
        # nothing once its PID 1 is gone: the kernel kills the rest).
        if [ -n "$PIDNS" ]; then
                for p in /proc/[0-9]*; do
                        [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$PIDNS" ] || continue
                        echo "cleanup: killing stray process ${p#/proc/} ($(cat "$p/comm" 2>/dev/null))" >&2
                        kill -KILL "${p#/proc/}" 2>/dev/null
                done
        fi
        # nspawn --keep-unit creates payload/ and supervisor/ cgroups under
        # ours and leaves them. Remove them if empty (rmdir refuses a cgroup
        # that still has processes, e.g. another test's container).
        for dir in "${CG_PARENTS[@]}"; do
                for p in payload supervisor; do
                        [ -d "$dir/$p" ] && find "$dir/$p" -depth -type d -exec rmdir {} + 2>/dev/null
                done
        done
        if [ "$HAD_UNITS_LOAD" = no ]; then rm -f "$UNITS_LOAD"; fi
        if [ "$FAILED" = 1 ] && [ -n "$TMP" ] && [ -f "$TMP/console.log" ]; then
                echo "======== container console (last 150 lines) ========"
                tail -n 150 "$TMP/console.log" | sed 's/\x1b\[[0-9;]*m//g'
        fi
        if [ -n "$TMP" ] && [ -d "$TMP" ]; then
                if nspawn_alive; then
                        echo "cleanup: systemd-nspawn $NSPAWN_PID is still alive; leaving $TMP in place" >&2
                else
                        rm -rf --one-file-system "$TMP"
                fi
        fi
        if [ "$FAILED" = 1 ]; then
                echo "test_systemd.sh: FAILED" >&2
                exit 1
        fi
        exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; FAILED=1; exit 1' INT TERM HUP

# ---- preconditions ----

[ -n "$BUILD" ] && [ -n "$SRC" ] || fail "usage: $0 BUILD_ROOT SOURCE_ROOT"
[ "$(id -u)" = 0 ] || fail "must run as root (boots a container)"
[ -x "$BUILD/daemon/qsnapd" ] || fail "$BUILD/daemon/qsnapd is not built"
BUILD=$(cd "$BUILD" && pwd) SRC=$(cd "$SRC" && pwd)     # the script changes folders below
for cmd in systemd-nspawn unshare nsenter setpriv timeout meson qemu-img qemu-system-x86_64 busctl; do
        command -v "$cmd" >/dev/null || case $cmd in
                systemd-nspawn) fail "systemd-nspawn not found: apt-get install systemd-container" ;;
                qemu-img) fail "qemu-img not found: apt-get install qemu-utils" ;;
                qemu-system-x86_64) fail "qemu-system-x86_64 not found: apt-get install qemu-system-x86" ;;
                *) fail "$cmd not found" ;;
        esac
done
[ -e /usr/lib/os-release ] || fail "/usr/lib/os-release missing"
[ -x /usr/lib/systemd/systemd ] || fail "/usr/lib/systemd/systemd missing (the container's PID 1)"
[ -e /usr/share/dbus-1/system.conf ] || fail "dbus is not installed (/usr/share/dbus-1/system.conf missing)"

# Temporary dirs of earlier runs that were killed outright (kill -9 leaves
# no container behind, but cannot clean up).
for d in /tmp/qsnap-nspawn.*; do
        [ -f "$d/owner.pid" ] && ! kill -0 "$(cat "$d/owner.pid")" 2>/dev/null &&
                rm -rf --one-file-system "$d"
done
TMP=$(mktemp -d /tmp/qsnap-nspawn.XXXXXX) || fail "mktemp failed"
chmod 0755 "$TMP"
echo $$ >"$TMP/owner.pid"
mkdir -p "$TMP/root" "$TMP/upper" "$TMP/stage" "$TMP/shared"

# ---- install qsnapd into the overlay's upper dir ----

meson install -C "$BUILD" --no-rebuild --quiet --destdir "$TMP/stage" >"$TMP/install.log" 2>&1 ||
        { cat "$TMP/install.log"; fail "meson install --destdir failed"; }

unit_file=$(find "$TMP/stage" -path '*/lib/systemd/system/qsnapd.service' | head -n 1)
[ -n "$unit_file" ] || fail "meson install did not install qsnapd.service"
prefix=${unit_file#"$TMP/stage"}
prefix=${prefix%/lib/systemd/system/qsnapd.service}
case "$prefix" in
        /usr | /usr/*) ;;
        *) fail "installed under prefix '$prefix': systemd reads units only under /usr (or /etc), configure with --prefix=/usr" ;;
esac
[ -z "$(find "$TMP/stage" -mindepth 1 -maxdepth 1 ! -name usr)" ] ||
        fail "meson install put files outside /usr: $(find "$TMP/stage" -mindepth 1 -maxdepth 1 ! -name usr)"
for f in "libexec/qsnapd" "bin/qsnapctl" "share/dbus-1/system-services/$NAME.service" "share/dbus-1/system.d/$NAME.conf" \
         "share/polkit-1/actions/org.example.snapshot1.policy"; do
        [ -e "$TMP/stage$prefix/$f" ] || fail "meson install did not install $prefix/$f (contents: $(cd "$TMP/stage" && find . -type f))"
done
cp -a "$TMP/stage/usr/." "$TMP/upper/"
if [ "$prefix" != /usr ]; then
        # systemd reads /usr/local/lib/systemd/system and dbus-daemon
        # /usr/local/share/dbus-1/system-services, but neither dbus-daemon
        # (system.d) nor polkitd (actions) look under /usr/local: put those
        # two where a package would.
        log "NOTE: build dir has prefix $prefix; copying the bus policy and the polkit actions to /usr/share as a package would"
        mkdir -p "$TMP/upper/share/dbus-1/system.d" "$TMP/upper/share/polkit-1/actions"
        cp "$TMP/stage$prefix/share/dbus-1/system.d/$NAME.conf" "$TMP/upper/share/dbus-1/system.d/"
        cp "$TMP/stage$prefix/share/polkit-1/actions/org.example.snapshot1.policy" "$TMP/upper/share/polkit-1/actions/"
fi
exec_start=$(sed -n 's/^ExecStart=//p' "$unit_file")
exec_path=${exec_start%% *}
[ "${exec_path#/usr/}" != "$exec_path" ] && [ -x "$TMP/upper/${exec_path#/usr/}" ] ||
        fail "the installed unit's ExecStart=$exec_start does not name the installed qsnapd"
log "installed qsnapd under $prefix (ExecStart=$exec_start)"

# ---- the container's root ----

cd "$TMP/root" || fail "cd $TMP/root"
mkdir -p usr proc sys dev run tmp var root "${IMAGES_IN#/}"
chmod 1777 tmp
for l in /bin /sbin /lib /lib32 /lib64 /libx32; do
        [ -L "$l" ] && ln -s "$(readlink "$l")" ".$l"
done
# Files may come and go in /etc while we copy it (e.g. useradd's
# /etc/passwd.lock): tolerate that, but require what the boot needs.
cp -a /etc etc 2>"$TMP/cp-etc.log" || log "note: copying /etc: $(tr '\n' ' ' <"$TMP/cp-etc.log")"
for f in passwd group shadow systemd/system dbus-1 polkit-1; do
        [ -e "etc/$f" ] || [ ! -e "/etc/$f" ] || fail "copying /etc: etc/$f is missing in the copy"
done
cp --remove-destination /usr/lib/os-release etc/os-release
# QEMU's user, as a package's installation makes it from the sysusers.d
# file meson installed (whether or not the host has it already).
sysusers=$(find "$TMP/stage" -path '*/lib/sysusers.d/qsnapd.conf' | head -n 1)
[ -n "$sysusers" ] || fail "meson install did not install sysusers.d/qsnapd.conf"
systemd-sysusers --root="$PWD" "$sysusers" >"$TMP/sysusers.log" 2>&1 ||
        { cat "$TMP/sysusers.log"; fail "systemd-sysusers $sysusers failed"; }
# A machine id of its own (not the host's; not empty, which would mean
# "first boot" and run systemd-firstboot).
tr -d - </proc/sys/kernel/random/uuid >etc/machine-id
# Boot only what the test needs: journald, tmpfiles and the like
# (basic.target) and the system bus. polkit.service is bus-activated.
cat >etc/systemd/system/qsnap-test.target <<'EOF'
[Unit]
Description=qsnapd systemd test
Requires=basic.target
Wants=dbus.service
After=basic.target dbus.service
AllowIsolate=yes
EOF
ln -sf qsnap-test.target etc/systemd/system/default.target
# An ASan build: LeakSanitizer stops the world with ptrace() at exit, which
# the unit's SystemCallFilter=~@debug refuses (EPERM), so LSan would fail
# the exit. Leaks are checked by every other e2e test; this one checks the
# unit, which stays as installed (the drop-in only sets the environment).
if grep -qa 'libasan\.so' "$BUILD/daemon/qsnapd"; then
        mkdir -p etc/systemd/system/qsnapd.service.d
        printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' >etc/systemd/system/qsnapd.service.d/50-asan.conf
fi
cd / || exit 1

# The disk image, on the host, bind-mounted into the container.
qemu-img create -q -f qcow2 "$TMP/shared/disk.qcow2" 64M || fail "qemu-img create failed"

# Our cgroup(s), for removing what nspawn creates under them.
while IFS=: read -r _ ctrl path; do
        case "$ctrl" in
                name=systemd) dir=/sys/fs/cgroup/systemd$path ;;
                "") if [ -e /sys/fs/cgroup/cgroup.controllers ]; then dir=/sys/fs/cgroup$path; else dir=/sys/fs/cgroup/unified$path; fi ;;
                *) continue ;;
        esac
        [ -d "$dir" ] && CG_PARENTS+=("$dir")
done </proc/self/cgroup

# ---- boot ----

# nspawn runs as PID 1 of a PID namespace of its own, whose death kills
# everything in it, the container included (nspawn's own death does not stop
# the container's systemd). unshare --kill-child kills that PID 1 when
# unshare dies, and setpriv --pdeathsig kills unshare when this script dies:
# even `kill -9` of this script leaves no container and no QEMU behind.
# shellcheck disable=SC2016
setpriv --pdeathsig KILL -- \
        unshare --mount --propagation private --pid --fork --kill-child=SIGKILL --mount-proc -- \
        sh -c 'mount -t tmpfs -o mode=0755 tmpfs /run && exec "$@"' sh \
        systemd-nspawn --boot --register=no --keep-unit --console=read-only --link-journal=no \
        --private-network --machine=qsnaptest -D "$TMP/root" \
        --overlay="/usr:$TMP/upper:/usr" --bind="$TMP/shared:$IMAGES_IN" \
        </dev/null >"$TMP/console.log" 2>&1 &
NSPAWN_PID=$!         # the unshare around nspawn: nspawn_alive, wait_nspawn_exit use it

# The container's PID 1: the grandchild of unshare ($NSPAWN_PID), through nspawn.
find_leader() {
        local c
        nspawn_alive || fail "systemd-nspawn exited during boot"
        for c in $(pgrep -P "$(pgrep -P "$NSPAWN_PID" | head -n 1)"); do
                [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] || continue
                [ "$(awk '/^NSpid:/ { print $NF }' "/proc/$c/status" 2>/dev/null)" = 1 ] || continue
                LEADER=$c
                return 0
        done
        return 1
}
wait_for 20 "the container's PID 1" find_leader
PIDNS=$(readlink "/proc/$LEADER/ns/pid")

booted() {
        local s
        nspawn_alive || fail "systemd-nspawn exited during boot"
        s=$(INSIDE_TIMEOUT=5 inside systemctl is-system-running 2>/dev/null)
        case "$s" in
                running) return 0 ;;
                degraded) log "container is degraded:"; INSIDE_TIMEOUT=5 inside systemctl --no-pager --failed; return 0 ;;
                *) return 1 ;;
        esac
}
wait_for 30 "the container to finish booting (systemctl is-system-running)" booted
log "container booted, PID 1 is host pid $LEADER; $(inside systemctl --version | head -n 1)"

[ "$(unit_prop qsnapd.service LoadState)" = loaded ] || fail "qsnapd.service is not loaded inside: $(inside systemctl status qsnapd.service 2>&1)"
[ "$(unit_prop qsnapd.service ActiveState)" = inactive ] || fail "qsnapd.service is already active before the first call"
[ -z "$(bus list --acquired 2>/dev/null | awk -v n="$NAME" '$1 == n')" ] || fail "$NAME already owned before the first call"

# ---- 1. the first call D-Bus-activates qsnapd.service through systemd ----

XML="<domain type='kvm'><name>$DOM_NAME</name><memory unit='MiB'>128</memory><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$IMAGES_IN/disk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
out=$(bus call "$NAME" "$ROOT_PATH" org.example.Snapshot1.Manager DefineDomain st "$XML" 0 2>&1) ||
        fail "DefineDomain failed: $out"
[ "$out" = "o \"$DOM_PATH\"" ] || fail "DefineDomain returned '$out', expected o \"$DOM_PATH\""
log "DefineDomain -> $DOM_PATH"

[ "$(inside systemctl is-active qsnapd.service)" = active ] || fail "qsnapd.service is not active after the first call"
MAINPID1=$(unit_prop qsnapd.service MainPID)
[ -n "$MAINPID1" ] && [ "$MAINPID1" != 0 ] || fail "qsnapd.service has no MainPID"
[ "$(inside cat "/proc/$MAINPID1/comm")" = qsnapd ] || fail "MainPID $MAINPID1 is not qsnapd"
inside grep -q '/qsnapd\.service$' "/proc/$MAINPID1/cgroup" ||
        fail "qsnapd (pid $MAINPID1) is not in qsnapd.service's cgroup: $(inside cat "/proc/$MAINPID1/cgroup")"
owner=$(bus status --no-pager "$NAME" 2>/dev/null | sed -n 's/^PID=//p')
[ "$owner" = "$MAINPID1" ] || fail "$NAME is owned by pid '$owner', not qsnapd.service's MainPID $MAINPID1"
activated() {
        inside journalctl -b --no-pager -o cat -u dbus.service |
                grep -qF "Activating via systemd: service name='$NAME' unit='qsnapd.service'"
}
wait_for 5 "dbus-daemon's \"Activating via systemd: ... unit='qsnapd.service'\" in the journal" activated
log "qsnapd.service was bus-activated through systemd, MainPID $MAINPID1"

[ "$(unit_prop qsnapd.service StateDirectory)" = qsnap ] || fail "StateDirectory= of qsnapd.service is not qsnap"
[ "$(unit_prop qsnapd.service RuntimeDirectory)" = qsnap ] || fail "RuntimeDirectory= of qsnapd.service is not qsnap"
UUID=$(prop "$DOM_PATH" org.example.Snapshot1.Domain UUID) || fail "Get UUID failed"
[[ "$UUID" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] || fail "bad UUID '$UUID'"
SCOPE=qsnap-$UUID.scope
inside test -f "/var/lib/qsnap/domains/$UUID.xml" || fail "/var/lib/qsnap/domains/$UUID.xml does not exist inside"
inside grep -qF "<name>$DOM_NAME</name>" "/var/lib/qsnap/domains/$UUID.xml" ||
        fail "/var/lib/qsnap/domains/$UUID.xml does not hold the domain"
state=$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)
[ "$state" = shutoff ] || fail "State is '$state' before Start, expected shutoff"

# ---- 2. Start: QEMU goes into qsnap-<uuid>.scope ----

out=$(bus call "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain Start t 0 2>&1) || fail "Start failed: $out"
state=$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)
[ "$state" = running ] || fail "State is '$state' after Start, expected running"
QPID=$(inside cat "/run/qsnap/$UUID.pid" | tr -d '[:space:]')
[[ "$QPID" =~ ^[0-9]+$ ]] || fail "no pid in /run/qsnap/$UUID.pid"
inside grep -qaF "$UUID" "/proc/$QPID/cmdline" || fail "pid $QPID from /run/qsnap/$UUID.pid is not this domain's QEMU"
case "$(inside cat "/proc/$QPID/comm")" in
        qemu-system*) ;;
        *) fail "pid $QPID is not a QEMU" ;;
esac
log "QEMU is pid $QPID (in the container; $(inside test -e /dev/kvm && echo "/dev/kvm present" || echo "no /dev/kvm, so TCG"))"

in_scope() { inside grep -q "/$SCOPE\$" "/proc/$QPID/cgroup"; }
wait_for 10 "QEMU (pid $QPID) to be moved into $SCOPE (cgroup: $(inside cat "/proc/$QPID/cgroup" | tr '\n' ' '))" in_scope
inside grep -q 'qsnapd\.service' "/proc/$QPID/cgroup" &&
        fail "QEMU is still in qsnapd.service's cgroup: $(inside cat "/proc/$QPID/cgroup")"
[ "$(unit_prop "$SCOPE" ActiveState)" = active ] || fail "$SCOPE is not active"
desc=$(unit_prop "$SCOPE" Description)
[ "$desc" = "QEMU of qsnapd domain $DOM_NAME" ] || fail "$SCOPE has Description '$desc'"

# The cgroup.procs files, as systemd sees them: QEMU in the scope's, not in
# the service's.
cgfs() {        # cgfs CONTROL_GROUP: its directory in the container
        if inside test -e /sys/fs/cgroup/cgroup.controllers; then echo "/sys/fs/cgroup$1"; else echo "/sys/fs/cgroup/systemd$1"; fi
}
SCOPE_CG=$(unit_prop "$SCOPE" ControlGroup)
SERVICE_CG=$(unit_prop qsnapd.service ControlGroup)
[ -n "$SCOPE_CG" ] && [ -n "$SERVICE_CG" ] || fail "ControlGroup of $SCOPE ('$SCOPE_CG') or qsnapd.service ('$SERVICE_CG') is empty"
inside grep -qx "$QPID" "$(cgfs "$SCOPE_CG")/cgroup.procs" || fail "QEMU $QPID is not in $(cgfs "$SCOPE_CG")/cgroup.procs"
inside grep -qx "$QPID" "$(cgfs "$SERVICE_CG")/cgroup.procs" && fail "QEMU $QPID is in $(cgfs "$SERVICE_CG")/cgroup.procs"
inside grep -qx "$MAINPID1" "$(cgfs "$SERVICE_CG")/cgroup.procs" || fail "qsnapd $MAINPID1 is not in $(cgfs "$SERVICE_CG")/cgroup.procs"
log "QEMU is in $SCOPE_CG, qsnapd in $SERVICE_CG"

# ---- 2b. the hardening is applied, and QEMU works under it ----

show_is() {     # show_is UNIT PROPERTY EXPECTED
        local got
        got=$(unit_prop "$1" "$2")
        [ "$got" = "$3" ] || fail "$1: $2 is '$got', expected '$3'"
}
show_is qsnapd.service DevicePolicy closed
for dev in "/dev/kvm rw" "/dev/net/tun rw" "/dev/vhost-net rw"; do
        unit_prop qsnapd.service DeviceAllow | grep -qF "$dev" ||
                fail "qsnapd.service: DeviceAllow lacks '$dev': $(unit_prop qsnapd.service DeviceAllow)"
done
show_is qsnapd.service ProtectProc invisible
show_is qsnapd.service PrivateMounts yes
show_is qsnapd.service NoNewPrivileges yes
caps=" $(unit_prop qsnapd.service CapabilityBoundingSet) "
for c in cap_chown cap_dac_override cap_dac_read_search cap_fowner cap_kill cap_setgid cap_setuid cap_net_admin; do
        case "$caps" in *" $c "*) ;; *) fail "CapabilityBoundingSet lacks $c:$caps" ;; esac
done
for c in cap_sys_admin cap_sys_ptrace cap_sys_module cap_mknod cap_sys_time; do
        case "$caps" in *" $c "*) fail "CapabilityBoundingSet keeps $c:$caps" ;; esac
done
filter=$(unit_prop qsnapd.service SystemCallFilter)
case "$filter" in "~"*) ;; *) fail "SystemCallFilter is not a deny list: $filter" ;; esac
for call in ptrace reboot swapon init_module settimeofday mount modify_ldt ioperm; do
        case " ${filter#\~} " in *" $call "*) ;; *) fail "SystemCallFilter does not deny $call" ;; esac
done
show_is qsnapd.service SystemCallErrorNumber 1    # EPERM
# What the kernel enforces on qsnapd and on the QEMU it forked: the
# bounding set (chown, dac_override, dac_read_search, fowner, kill, setgid,
# setuid = bits 0-3 and 5-7, net_admin = bit 12: 0x10ef), a seccomp filter,
# no new privileges. QEMU left the service's cgroup but keeps all three.
for pid in "$MAINPID1" "$QPID"; do
        status=$(inside cat "/proc/$pid/status")
        grep -qx $'CapBnd:\t00000000000010ef' <<<"$status" || fail "pid $pid: $(grep CapBnd <<<"$status")"
        grep -qx $'Seccomp:\t2' <<<"$status" || fail "pid $pid: $(grep Seccomp <<<"$status")"
        grep -qx $'NoNewPrivs:\t1' <<<"$status" || fail "pid $pid: $(grep NoNewPrivs <<<"$status")"
done
# On the system bus QEMU runs as its own user (--qemu-user=, default
# qsnap-qemu from the installed sysusers.d file), with no capability left
# and QEMU's own seccomp sandbox on top: no QEMU of ours runs as root.
qstatus=$(inside cat "/proc/$QPID/status")
quid=$(inside id -u qsnap-qemu) || fail "the container has no user qsnap-qemu"
grep -qx $'Uid:\t'"$quid"$'\t'"$quid"$'\t'"$quid"$'\t'"$quid" <<<"$qstatus" ||
        fail "QEMU pid $QPID does not run as qsnap-qemu ($quid): $(grep Uid <<<"$qstatus")"
for cap in CapPrm CapEff CapAmb; do
        grep -qx "$cap:"$'\t0000000000000000' <<<"$qstatus" || fail "QEMU pid $QPID keeps capabilities: $(grep "$cap" <<<"$qstatus")"
done
inside grep -qaF -- '-sandbox' "/proc/$QPID/cmdline" || fail "QEMU pid $QPID runs without -sandbox"
inside grep -E ' /proc .* - proc [^ ]+ .*hidepid=(invisible|2)' "/proc/$MAINPID1/mountinfo" >/dev/null ||
        fail "qsnapd's /proc is not mounted with hidepid=invisible: $(inside grep ' /proc ' "/proc/$MAINPID1/mountinfo")"
log "hardening applied: DevicePolicy=closed, bounding set 0x10ef on qsnapd and QEMU, seccomp, hidepid=invisible, QEMU as qsnap-qemu ($quid) without capabilities"

# An external snapshot of the running VM: overlay made, QMP transaction.
out=$(bus call "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain CreateSnapshot st \
        '<domainsnapshot><name>s1</name></domainsnapshot>' 16 2>&1) || fail "CreateSnapshot failed: $out"
[ "$out" = "o \"$DOM_PATH/snapshot/s1\"" ] || fail "CreateSnapshot returned '$out'"
inside test -f "$IMAGES_IN/disk.s1" || fail "the overlay $IMAGES_IN/disk.s1 was not created"
disks=$(bus get-property "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain Disks)
[ "$disks" = "a(ssss) 1 \"vda\" \"qcow2\" \"$IMAGES_IN/disk.s1\" \"$IMAGES_IN/disk.qcow2 <- $IMAGES_IN/disk.s1\"" ] ||
        fail "Disks after the snapshot: $disks"
log "external snapshot s1 taken under the hardened unit"

# A block job: pull the base into the overlay; it ends completed.
out=$(bus call "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain BlockPull stt vda 0 0 2>&1) || fail "BlockPull failed: $out"
JOB=${out#o \"}
JOB=${JOB%\"}
case "$JOB" in "$DOM_PATH/job/"*) ;; *) fail "BlockPull returned '$out'" ;; esac
job_done() {
        local st
        st=$(prop "$JOB" org.example.BlockJob1 State) || return 1
        case "$st" in completed) return 0 ;; failed | canceled) fail "the pull ended $st" ;; *) return 1 ;; esac
}
wait_for 60 "the BlockPull job to complete" job_done
disks=$(bus get-property "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain Disks)
[ "$disks" = "a(ssss) 1 \"vda\" \"qcow2\" \"$IMAGES_IN/disk.s1\" \"$IMAGES_IN/disk.s1\"" ] ||
        fail "Disks after the pull: $disks"
[ "$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)" = running ] || fail "the VM is not running after the job"
log "BlockPull completed under the hardened unit"

# ---- 2c. qsnapctl -M: the container's qsnapd from the host ----

# sd-bus finds a container's leader in /run/systemd/machines/NAME, which
# systemd-machined writes; nspawn runs with --register=no here, so a private
# /run (in a mount namespace of qsnapctl's own) holds that one file.
QSNAPCTL=$BUILD/tools/qsnapctl/qsnapctl
[ -x "$QSNAPCTL" ] || fail "$QSNAPCTL is not built"
qm() {
        # shellcheck disable=SC2016
        timeout -k 5 60 unshare --mount --propagation private sh -c \
                'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/systemd/machines &&
                 printf "LEADER=%s\nCLASS=container\n" "$1" >/run/systemd/machines/qsnaptest && shift && exec "$@"' \
                sh "$LEADER" "$QSNAPCTL" -M qsnaptest "$@"
}
json_get() {    # json_get EXPRESSION: evaluates EXPRESSION on the JSON document j from stdin
        /usr/bin/python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
out=$(qm list --json 2>&1) || fail "qsnapctl -M qsnaptest list --json failed: $out"
got=$(json_get '[(d["name"], d["state"], d["current_snapshot"]) for d in j]' <<<"$out") ||
        fail "qsnapctl -M qsnaptest list --json printed no JSON: $out"
[ "$got" = "[('$DOM_NAME', 'running', 's1')]" ] || fail "qsnapctl -M qsnaptest list --json: $got"
out=$(qm domblklist "$DOM_NAME" 2>&1) || fail "qsnapctl -M domblklist failed: $out"
grep -qE "^ vda +qcow2 +$IMAGES_IN/disk.s1 " <<<"$out" || fail "qsnapctl -M domblklist: $out"
out=$(qm suspend "$DOM_NAME" 2>&1) || fail "qsnapctl -M suspend failed: $out"
[ "$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)" = paused ] || fail "qsnapctl -M suspend did not pause the VM"
qm resume "$DOM_NAME" >/dev/null 2>&1 || fail "qsnapctl -M resume failed"
[ "$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)" = running ] || fail "qsnapctl -M resume did not resume the VM"
out=$(qm domstate "no such domain" 2>&1)
rc=$?
[ "$rc" = 1 ] && grep -q "^error: NoSuchDomain (" <<<"$out" || fail "qsnapctl -M with a bad name: exit $rc, $out"
# The installed qsnapctl inside the container, on its own system bus.
out=$(inside qsnapctl snapshot-list "$DOM_NAME" --name 2>&1) || fail "qsnapctl inside the container failed: $out"
[ "$out" = s1 ] || fail "qsnapctl snapshot-list inside the container: $out"
log "qsnapctl -M qsnaptest drives the container's qsnapd (list, domblklist, suspend, resume, a named error)"

# polkit's password prompt on a terminal: a user with a logind session of
# its own (systemd-run -p PAMName=login) runs qsnapctl on a pseudo-terminal;
# defining a domain needs host-admin (auth_admin), so qsnapctl's pkttyagent
# asks for an administrator's password; a wrong one is refused (AccessDenied)
# and nothing is defined.
qemu-img create -q -f qcow2 "$TMP/shared/pk.qcow2" 64M || fail "qemu-img create failed"
printf "<domain type='kvm'><name>pk vm</name><memory unit='MiB'>128</memory><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s/pk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n" "$IMAGES_IN" >"$TMP/shared/pk.xml"
chmod 0644 "$TMP/shared/pk.xml"
# answer_on_tty PATTERN ANSWER CMD...: runs CMD on a pseudo-terminal of its
# own, types ANSWER once its output matches PATTERN, prints all it wrote.
answer_on_tty() {
        # shellcheck disable=SC2016
        /usr/bin/python3 -c '
import os, re, select, subprocess, sys, time, fcntl, termios
pattern, answer, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
master, slave = os.openpty()
def ctty():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=ctty, close_fds=True)
os.close(slave)
out, answered, answered_len, tries, end = b"", 0, 0, 0, time.monotonic() + 60
while time.monotonic() < end:
    r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            data = os.read(master, 4096)
        except OSError:
            data = b""
        if not data:
            break
        out += data
    # Type once the prompt is there. Behind systemd-run --pty the terminal
    # that matters is the inner one: typed before the prompt turned its echo
    # off, the answer comes back echoed and is flushed; then type it again
    # (at most 5 times) until it goes unechoed and something else follows.
    since = out[answered_len:].strip()
    if tries < 5 and ((not answered and re.search(pattern.encode(), out)) or
                      (answered and time.monotonic() - answered > 1 and since == answer.encode())):
        os.write(master, answer.encode() + b"\n")
        answered, answered_len, tries = time.monotonic(), len(out), tries + 1
sys.stdout.write(out.decode("utf-8", "replace"))
p.kill() if p.poll() is None else None
sys.exit(p.wait())' "$@"
}
out=$(answer_on_tty 'Password: ?$' not-the-password timeout -k 5 60 \
        nsenter -t "$LEADER" -m -u -i -n -p -C -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        systemd-run --wait --pty --quiet -p PAMName=login --uid=nobody qsnapctl define "$IMAGES_IN/pk.xml" 2>&1)
grep -q "AUTHENTICATING FOR org.example.snapshot1.host-admin" <<<"$out" || fail "no polkit prompt on the terminal: $out"
grep -q "Password:" <<<"$out" || fail "no password prompt: $out"
grep -q "AUTHENTICATION FAILED" <<<"$out" || fail "the wrong password was not refused: $out"
grep -q "error: AccessDenied (polkit did not authorize the call)" <<<"$out" || fail "qsnapctl did not say AccessDenied: $out"
[ "$(bus call "$NAME" "$ROOT_PATH" org.example.Snapshot1.Manager ListDomains | grep -c pk_20vm)" = 0 ] ||
        fail "the refused define defined the domain"
out=$(answer_on_tty 'never asked' - timeout -k 5 60 \
        nsenter -t "$LEADER" -m -u -i -n -p -C -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        systemd-run --wait --pty --quiet -p PAMName=login --uid=nobody qsnapctl define --no-ask-password "$IMAGES_IN/pk.xml" 2>&1)
grep -q "AUTHENTICATING" <<<"$out" && fail "--no-ask-password asked: $out"
grep -q "error: InteractiveAuthorizationRequired (" <<<"$out" || fail "--no-ask-password: $out"
log "qsnapctl on a terminal: pkttyagent asked for the password of host-admin; a wrong one is AccessDenied; --no-ask-password asks nothing"

# ---- 3. systemctl stop qsnapd.service leaves the VM running ----

inside systemctl stop qsnapd.service || fail "systemctl stop qsnapd.service failed"
[ "$(unit_prop qsnapd.service ActiveState)" = inactive ] || fail "qsnapd.service is not inactive after systemctl stop"
inside test -d "/proc/$MAINPID1" && ! inside grep -q '^State:.*Z' "/proc/$MAINPID1/status" &&
        fail "qsnapd (pid $MAINPID1) is still running after systemctl stop"
inside test -d "/proc/$QPID" || fail "QEMU (pid $QPID) died with systemctl stop qsnapd.service"
inside grep -q '^State:.*Z' "/proc/$QPID/status" && fail "QEMU (pid $QPID) is a zombie after systemctl stop qsnapd.service"
inside grep -qaF "$UUID" "/proc/$QPID/cmdline" || fail "pid $QPID is no longer our QEMU"
[ "$(unit_prop "$SCOPE" ActiveState)" = active ] || fail "$SCOPE is not active after systemctl stop qsnapd.service"
inside journalctl -b --no-pager -o cat -u qsnapd.service | grep -E 'remains running after unit stopped|[Ll]eft-over process' &&
        fail "systemd found processes left over in qsnapd.service's cgroup"
inside test -S "/run/qsnap/$UUID.qmp" || inside test -e "/run/qsnap/$UUID.qmp" ||
        fail "/run/qsnap/$UUID.qmp is gone after systemctl stop (RuntimeDirectoryPreserve=)"
log "systemctl stop qsnapd.service: qsnapd gone, QEMU $QPID still running in $SCOPE"

# ---- 4. the next call re-activates qsnapd, which re-attaches ----

state=$(prop "$DOM_PATH" org.example.Snapshot1.Domain State) || fail "Get State after stop (re-activation) failed"
[ "$state" = running ] || fail "re-activated qsnapd reports State '$state', expected running"
[ "$(inside systemctl is-active qsnapd.service)" = active ] || fail "qsnapd.service is not active after re-activation"
MAINPID2=$(unit_prop qsnapd.service MainPID)
[ -n "$MAINPID2" ] && [ "$MAINPID2" != 0 ] && [ "$MAINPID2" != "$MAINPID1" ] ||
        fail "qsnapd.service MainPID after re-activation is '$MAINPID2' (was $MAINPID1)"
in_scope || fail "QEMU left $SCOPE after qsnapd's re-activation"
inside grep -qx "$QPID" "$(cgfs "$SERVICE_CG")/cgroup.procs" && fail "QEMU $QPID is in qsnapd.service's cgroup after re-activation"
log "re-activated qsnapd (MainPID $MAINPID2) reports State running"

# ---- 5. Stop: QEMU quits, State shutoff, the scope goes ----

out=$(bus call "$NAME" "$DOM_PATH" org.example.Snapshot1.Domain Stop t 0 2>&1) || fail "Stop failed: $out"
qemu_gone() { ! inside test -d "/proc/$QPID" || ! inside grep -qaF "$UUID" "/proc/$QPID/cmdline"; }
wait_for 10 "QEMU (pid $QPID) to exit after Stop" qemu_gone
shutoff() { [ "$(prop "$DOM_PATH" org.example.Snapshot1.Domain State)" = shutoff ]; }
wait_for 10 "State shutoff after Stop" shutoff
scope_gone() { [ "$(unit_prop "$SCOPE" ActiveState)" = inactive ]; }
wait_for 10 "$SCOPE to become inactive after Stop" scope_gone
scope_collected() { [ "$(unit_prop "$SCOPE" LoadState)" = not-found ]; }
wait_for 10 "$SCOPE to be garbage-collected (CollectMode=inactive-or-failed)" scope_collected
[ "$(inside systemctl is-active qsnapd.service)" = active ] || fail "qsnapd.service is not active after Stop"
[ "$(unit_prop qsnapd.service NRestarts)" = 0 ] || fail "qsnapd.service restarted (NRestarts=$(unit_prop qsnapd.service NRestarts))"
log "Stop: QEMU gone, State shutoff, $SCOPE gone"

# Nothing alarming from qsnapd itself.
if inside journalctl -b --no-pager -o cat -u qsnapd.service | grep -F 'Could not move QEMU into its own scope'; then
        fail "qsnapd logged that it could not create the scope"
fi

[ "${QSNAP_TEST_VERBOSE:-0}" = 1 ] && diagnostics
log "PASS"
