#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Checks the built systemd unit with `systemd-analyze verify` and the D-Bus
# activation file's keys.
#
#   test_units.sh BUILT_UNIT BUILT_ACTIVATION_FILE QSNAPD_BINARY
#
# verify insists that ExecStart= names an existing executable, and the
# installed path (@libexecdir@/qsnapd) does not exist in a build tree, so the
# unit is verified as a copy whose ExecStart= points at the built binary.
# Everything else is the built file, byte for byte.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

[ $# -eq 3 ] || fail "usage: $0 BUILT_UNIT BUILT_ACTIVATION_FILE QSNAPD_BINARY"
unit=$1 activation=$2 binary=$3

[ -f "$unit" ] || fail "built unit $unit is missing"
[ -f "$activation" ] || fail "built activation file $activation is missing"
[ -x "$binary" ] || fail "qsnapd binary $binary is missing or not executable (is the daemon built?)"
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (install systemd)"

tmp=$(mktemp -d)
units_load=/run/systemd/systemd-units-load
had_units_load=no
[ -e "$units_load" ] && had_units_load=yes
cleanup() {
        rm -rf "$tmp"
        # verify touches this file; leave /run as we found it.
        if [ "$had_units_load" = no ]; then rm -f "$units_load"; fi
}
trap cleanup EXIT

# key FILE KEY: the value of the single KEY= line of FILE; fails on 0 or >1.
key() {
        local n
        n=$(grep -c "^$2=" "$1" || true)
        [ "$n" -eq 1 ] || fail "$1: expected exactly one $2= line, found $n"
        sed -n "s/^$2=//p" "$1"
}

grep -nE '@[A-Za-z_]+@' "$unit" "$activation" | grep -v '^[^:]*:[0-9]*:#' && fail "unsubstituted @…@ left in the built files"

exec_start=$(key "$unit" ExecStart)
exec_path=${exec_start%% *}
case "$exec_path" in
        /*/qsnapd) ;;
        *) fail "ExecStart= must be an absolute path to qsnapd, got '$exec_path'" ;;
esac
[ "${exec_start#"$exec_path"}" = " --system" ] || fail "ExecStart= must run qsnapd --system, got '$exec_start'"
[ "$(key "$unit" Type)" = dbus ] || fail "Type= must be dbus"
[ "$(key "$unit" BusName)" = org.example.Snapshot1 ] || fail "BusName= must be org.example.Snapshot1"
[ "$(key "$unit" RuntimeDirectoryPreserve)" = yes ] || fail "RuntimeDirectoryPreserve= must be yes (VMs outlive qsnapd)"

# The activation file: a [D-BUS Service] group with the four keys, Exec= the
# same command as the unit, SystemdService= this unit.
[ "$(grep -v '^\s*\(#\|$\)' "$activation" | head -n 1)" = "[D-BUS Service]" ] ||
        fail "$activation does not start with a [D-BUS Service] group"
[ "$(key "$activation" Name)" = org.example.Snapshot1 ] || fail "activation Name= must be org.example.Snapshot1"
[ "$(key "$activation" Exec)" = "$exec_start" ] ||
        fail "activation Exec= '$(key "$activation" Exec)' differs from the unit's ExecStart= '$exec_start'"
[ "$(key "$activation" User)" = root ] || fail "activation User= must be root"
[ "$(key "$activation" SystemdService)" = "$(basename "$unit")" ] ||
        fail "activation SystemdService= must name $(basename "$unit")"

# verify wants the unit file name as the unit name.
sed "s|^ExecStart=$exec_path |ExecStart=$binary |" "$unit" >"$tmp/$(basename "$unit")"
grep -q "^ExecStart=$binary --system\$" "$tmp/$(basename "$unit")" || fail "could not point ExecStart= at $binary"

rc=0
out=$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/$(basename "$unit")" 2>&1) || rc=$?
# verify exits 0 for some problems (unknown keys, bad values it ignores)
# and only prints them: any output is a failure too.
if [ $rc -ne 0 ] || [ -n "$out" ]; then
        echo "$out" >&2
        fail "systemd-analyze verify rejected the unit (rc=$rc)"
fi
echo "ok: $(basename "$unit") verifies, $(basename "$activation") matches it"

# The hardening (docs/security.md): the settings as written, and the
# exposure systemd-analyze computes from them. 6.7 before this hardening,
# 3.4 with it; a change that loosens the unit fails here.
[ "$(key "$unit" DevicePolicy)" = closed ] || fail "DevicePolicy= must be closed"
[ "$(grep '^DeviceAllow=' "$unit" | sort | tr '\n' ' ')" = "DeviceAllow=/dev/kvm rw DeviceAllow=/dev/net/tun rw DeviceAllow=/dev/vhost-net rw " ] ||
        fail "DeviceAllow= must list /dev/kvm, /dev/net/tun and /dev/vhost-net (rw), got: $(grep '^DeviceAllow=' "$unit" | tr '\n' ' ')"
caps=" $(key "$unit" CapabilityBoundingSet) "
for c in CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_SYS_MODULE CAP_SYS_RAWIO CAP_MKNOD CAP_BPF CAP_SYS_TIME CAP_SYS_BOOT CAP_SETPCAP; do
        case "$caps" in *" $c "*) fail "CapabilityBoundingSet= keeps $c" ;; esac
done
for group in @reboot @swap @module @clock @obsolete @debug @cpu-emulation @mount @raw-io; do
        filter=$(key "$unit" SystemCallFilter)
        case " ${filter#\~} " in *" $group "*) ;; *) fail "SystemCallFilter= does not deny $group" ;; esac
done
[ "$(key "$unit" SystemCallFilter | cut -c1)" = "~" ] || fail "SystemCallFilter= must be a deny list (~…)"
[ "$(key "$unit" ProtectProc)" = invisible ] || fail "ProtectProc= must be invisible"
[ "$(key "$unit" PrivateMounts)" = yes ] || fail "PrivateMounts= must be yes"
score=$(cd "$tmp" && systemd-analyze security --offline=yes --no-pager "$tmp/$(basename "$unit")" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security --offline=yes gave no exposure level"
awk -v s="$score" 'BEGIN { exit !(s <= 3.4) }' || fail "exposure level $score is above 3.4 (the hardened unit's)"
echo "ok: hardening settings present, systemd-analyze security exposure $score"

# The session-bus pair, when given: qsnapd --user under the user manager.
if [ -n "${QSNAP_USER_UNIT:-}" ]; then
        uunit=$QSNAP_USER_UNIT uactivation=$QSNAP_SESSION_ACTIVATION
        [ "$(key "$uunit" ExecStart)" = "${exec_path} --user" ] || fail "user unit must run ${exec_path} --user"
        [ "$(key "$uunit" Type)" = dbus ] || fail "user unit Type= must be dbus"
        [ "$(key "$uunit" BusName)" = org.example.Snapshot1 ] || fail "user unit BusName= must be org.example.Snapshot1"
        [ "$(key "$uactivation" Exec)" = "${exec_path} --user" ] || fail "session activation Exec= must run --user"
        [ "$(key "$uactivation" SystemdService)" = qsnapd.service ] || fail "session activation SystemdService= must be qsnapd.service"
        mkdir -p "$tmp/user" "$tmp/xdg"
        sed "s|^ExecStart=$exec_path |ExecStart=$binary |" "$uunit" >"$tmp/user/qsnapd.service"
        rc=0
        out=$(cd "$tmp/user" && XDG_RUNTIME_DIR="$tmp/xdg" systemd-analyze --user verify --man=no "$tmp/user/qsnapd.service" 2>&1) || rc=$?
        if [ $rc -ne 0 ] || [ -n "$out" ]; then
                echo "$out" >&2
                fail "systemd-analyze --user verify rejected the user unit (rc=$rc)"
        fi
        echo "ok: the user unit verifies and its session activation file matches it"
fi
