#!/bin/bash
# The README's first command, tools/demo.sh, as a new user runs it (here on
# this build tree): it must succeed and print what the README promises —
# the live commit's bar and pivot, the revert, the tree, the merge, and the
# data checked at the end (the demo itself fails when the data differ).
# Usage: test_demo.sh SOURCE_ROOT BUILD_ROOT
set -uo pipefail
src=$1 build=$2
out=$(mktemp /tmp/qsnap-test-demo.XXXXXX)
trap 'rm -f "$out"' EXIT

QSNAP_BUILD_DIR=$build "$src/tools/demo.sh" >"$out" 2>&1
rc=$?
fail() { echo "FAIL: $*"; echo "---- tools/demo.sh printed:"; cat "$out"; exit 1; }
[ $rc = 0 ] || fail "tools/demo.sh exited $rc"
for want in \
        "Domain 'demo vm' started" \
        "Domain snapshot before-upgrade created" \
        "Domain snapshot with-memory created" \
        "Active Block Commit: successfully pivoted" \
        "would be refused: Domain 'demo vm' is running and snapshot 'before-upgrade' has no memory state" \
        "Domain 'demo vm' reverted to snapshot before-upgrade (now running)" \
        "  +- with-memory" \
        "would go ahead now." \
        "Snapshot delete: completed" \
        "Domain 'demo vm' stopped" \
        "read 1048576/1048576 bytes at offset 0" \
        "read 100663296/100663296 bytes at offset 8388608" \
        ": clean" \
        "== done"; do
        grep -qF -- "$want" "$out" || fail "the demo's output lacks: $want"
done
# Nothing of the demo is left behind: no QEMU, no qsnapd, no bus, no folder
# (its folder is the one its memory file went to).
work=$(grep -o -- '--memspec file=/tmp/qsnap-demo\.[A-Za-z0-9]*' "$out" | head -1)
work=${work#--memspec file=}
[ -n "$work" ] || fail "cannot find the demo's folder in its output"
if pgrep -f -- "$work" >/dev/null; then
        fail "processes of the demo still run: $(pgrep -af -- "$work")"
fi
[ -e "$work" ] && fail "the demo left $work"
echo "tools/demo.sh: OK"
