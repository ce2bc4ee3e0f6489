#!/bin/bash
# The whole test suite: installs what is missing, builds with -Werror and
# ASan+UBSan, runs every test (unit, fake-QMP, and end to end on a private
# bus with the real polkitd and real QEMU), and ends with one line
# "N passed, N failed" counted from meson's test log.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${QSNAP_TEST_BUILD_DIR:-$top/build-test}

if [ "$(id -u)" != 0 ]; then
        echo "The suite runs a private system bus, polkitd and QEMU as root: run it as root (sudo $0)." >&2
        exit 1
fi
"$top/tools/install-deps.sh" || exit 1

if [ ! -d "$build" ]; then
        meson setup "$build" "$top" -Db_sanitize=address,undefined -Db_lundef=false || exit 1
fi
meson compile -C "$build" || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=24
meson test -C "$build" --print-errorlogs --num-processes 2 "$@"
rc=$?

log="$build/meson-logs/testlog.json"
if [ -f "$log" ]; then
        /usr/bin/python3 - "$log" <<'PY'
import json, sys
ok = bad = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    try:
        r = json.loads(line)["result"]
    except (ValueError, KeyError):
        print("unreadable line in %s: %.80s" % (sys.argv[1], line), file=sys.stderr)
        r = "ERROR"     # counted as a failure, never dropped
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    else:
        bad += 1     # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, and SKIP: a test that cannot run is a failure
print(f"{ok} passed, {bad} failed")
PY
else
        echo "0 passed, 1 failed"
        rc=1
fi
exit $rc
