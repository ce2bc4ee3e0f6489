#!/bin/bash
# The end-to-end tests with every qsnapd they start under valgrind memcheck:
#   tools/valgrind.sh [TEST…]      (meson test names; default: every e2e
#                                   test that runs the real qsnapd)
# Sets up (once) a build without sanitizers ($QSNAP_VG_BUILD_DIR, default
# build-vg/ in the source tree: valgrind and ASan do not mix), runs each test
# through tools/isolated.sh with QSNAPD_WRAPPER (tests/lib/qsnaptest.py puts
# it in front of every qsnapd, also bus-activated ones, and multiplies its
# timeouts by 10), one valgrind log per qsnapd process in
# <build>/valgrind/<test>/, and prints per test: the meson result, how many
# qsnapd processes ran, how many exited (a process killed with SIGKILL on
# purpose writes no summary), valgrind errors, and leaked bytes. Fails when
# a test failed or valgrind found an error or a definite/indirect leak.
# Needs root (as the e2e tests do) and valgrind.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${QSNAP_VG_BUILD_DIR:-$top/build-vg}")
out=$build/valgrind

if [ "$(id -u)" != 0 ]; then
        echo "valgrind.sh: the e2e tests need root (sudo $0)" >&2
        exit 1
fi
if ! command -v valgrind >/dev/null; then
        echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
        exit 1
fi
if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" "$top" -Db_sanitize=none || exit 1
fi
meson compile -C "$build" || exit 1

if [ $# -gt 0 ]; then
        tests=("$@")
else
        # harness runs a fake qsnapd (Python); systemd-nspawn the installed
        # one inside a container: neither starts the build's qsnapd here.
        mapfile -t tests < <(meson test -C "$build" --list --suite e2e 2>/dev/null |
                             sed -n 's/^qsnapd:e2e \/ //p' | grep -vx -e harness -e systemd-nspawn)
fi
[ ${#tests[@]} -gt 0 ] || { echo "valgrind.sh: no tests to run" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
chmod 0755 "$out"
failed=0
for t in "${tests[@]}"; do
        dir=$out/$t
        mkdir -p "$dir"
        chmod 1777 "$dir"   # qsnapd --user runs as nobody
        start=$(date +%s)
        QSNAPD_WRAPPER="valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --child-silent-after-fork=yes --track-origins=yes --num-callers=40 --log-file=$dir/qsnapd.%p.log" \
                "$top/tools/isolated.sh" meson test -C "$build" --num-processes 1 --timeout-multiplier 10 \
                --print-errorlogs "$t" >"$dir/meson.log" 2>&1
        rc=$?
        echo "$t $rc $(( $(date +%s) - start ))" >>"$out/results"
done

/usr/bin/python3 - "$out" <<'PY' || failed=1
import glob, os, re, sys
out = sys.argv[1]
bad = False
print('%-18s %-7s %5s %9s %6s %7s %10s %10s %10s' % ('test', 'result', 'secs', 'processes', 'exited', 'errors',
                                                    'definite', 'indirect', 'possible'))
for line in open(os.path.join(out, 'results')):
    t, rc, secs = line.split()
    procs = exited = errors = 0
    lost = {'definitely': 0, 'indirectly': 0, 'possibly': 0}
    logs = {}
    for log in glob.glob(os.path.join(out, t, 'qsnapd.*.log')):
        text = open(log, errors='replace').read()
        m = re.search(r'^==(\d+)== Parent PID: (\d+)', text, re.M)
        if m:
            logs[int(m.group(1))] = (int(m.group(2)), text)
    for pid, (parent, text) in logs.items():
        if parent in logs:
            continue                                  # a child qsnapd forked to exec QEMU or qemu-img
        procs += 1
        m = re.search(r'ERROR SUMMARY: ([\d,]+) errors', text)
        if m:
            exited += 1
            errors += int(m.group(1).replace(',', ''))
        for kind in lost:
            m = re.search(kind + r' lost: ([\d,]+) bytes', text)
            if m:
                lost[kind] += int(m.group(1).replace(',', ''))
    result = 'OK' if rc == '0' else 'FAIL'
    if rc != '0' or errors or lost['definitely'] or lost['indirectly'] or procs == 0:
        bad = True
    print('%-18s %-7s %5s %9d %6d %7d %10d %10d %10d' % (t, result, secs, procs, exited, errors,
                                                        lost['definitely'], lost['indirectly'], lost['possibly']))
print('logs: %s/<test>/qsnapd.<pid>.log, meson output: %s/<test>/meson.log' % (out, out))
sys.exit(1 if bad else 0)
PY
exit $failed
