#!/bin/bash
# Fuzzes qsnapd's parsers with libFuzzer: tools/fuzz.sh TARGET|all SECONDS
#
# Sets up (once) a clang build dir with -Dfuzzing=true and ASan+UBSan
# ($QSNAP_FUZZ_BUILD_DIR, default build-fuzz/ in the source tree), builds
# the targets of fuzz/ and runs each for SECONDS, one after the other,
# starting from its seeds (fuzz/corpus/<target>/) and regression inputs
# (fuzz/regressions/<target>/); what the fuzzer adds goes to
# <build>/fuzz-work/<target>/corpus, a crash input to .../artifacts/.
# Prints one line of figures per target and fails when a target crashed,
# leaked, timed out or could not be built (clang and libclang-rt-14-dev are
# in tools/packages.txt). Targets: xml-domain xml-snapshot store qmp image
# xml-checkpoint xml-backup.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${QSNAP_FUZZ_BUILD_DIR:-$top/build-fuzz}")
all=(xml-domain xml-snapshot store qmp image xml-checkpoint xml-backup)

usage() {
        echo "usage: $0 TARGET|all SECONDS   (targets: ${all[*]})" >&2
        exit 2
}
[ $# -eq 2 ] || usage
case "$2" in ''|*[!0-9]*) usage ;; esac
seconds=$2
if [ "$1" = all ]; then
        targets=("${all[@]}")
else
        case " ${all[*]} " in *" $1 "*) targets=("$1") ;; *) usage ;; esac
fi

fuzz_cc=${QSNAP_FUZZ_CC:-}
if [ -z "$fuzz_cc" ]; then
        for c in clang-14 clang; do
                command -v "$c" >/dev/null && { fuzz_cc=$c; break; }
        done
fi
if [ -z "$fuzz_cc" ] || ! command -v "$fuzz_cc" >/dev/null; then
        echo "fuzz.sh: clang is not installed (Debian 12: apt-get install clang-14 libclang-rt-14-dev; tools/install-deps.sh installs them)" >&2
        exit 1
fi
if [ ! -f "$build/build.ninja" ]; then
        CC=$fuzz_cc meson setup "$build" "$top" -Dfuzzing=true -De2e-tests=false \
                -Db_sanitize=address,undefined -Db_lundef=false >"$build.setup.log" 2>&1 || {
                cat "$build.setup.log" >&2
                echo "fuzz.sh: meson setup of $build failed" >&2
                exit 1
        }
        rm -f "$build.setup.log"
fi
meson compile -C "$build" "${targets[@]/#/fuzz/fuzz-}" >"$build/fuzz-compile.log" 2>&1 || {
        cat "$build/fuzz-compile.log" >&2
        echo "fuzz.sh: building the fuzz targets failed (is libclang-rt-14-dev installed?)" >&2
        exit 1
}

# Temporary image and store files on a tmpfs: fsync there costs nothing.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        export TMPDIR=/dev/shm
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=0
printf '%-15s %6s %10s %8s %6s %7s %7s  %s\n' target seconds execs exec/s cov ft corpus result
for t in "${targets[@]}"; do
        work=$build/fuzz-work/$t
        log=$build/fuzz-work/$t.log
        mkdir -p "$work/corpus" "$work/artifacts"
        dict=()
        [ -f "$top/fuzz/dict/$t.dict" ] && dict=(-dict="$top/fuzz/dict/$t.dict")
        seeds=("$top/fuzz/corpus/$t")
        [ -d "$top/fuzz/regressions/$t" ] && seeds+=("$top/fuzz/regressions/$t")
        "$build/fuzz/fuzz-$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
                -print_final_stats=1 -artifact_prefix="$work/artifacts/" "${dict[@]}" \
                "$work/corpus" "${seeds[@]}" >"$log" 2>&1
        rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
        cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
        ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
        corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
        if [ $rc -eq 0 ] && [ -n "$execs" ] && [ "$execs" -gt 0 ]; then
                result=ok
        else
                result="FAILED (exit $rc; log $log)"
                failed=1
        fi
        printf '%-15s %6s %10s %8s %6s %7s %7s  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
                "${ft:-?}" "${corp:-?}" "$result"
        if [ $rc -ne 0 ]; then
                grep -E 'ERROR|invariant broken|SUMMARY|Test unit written|runtime error' "$log" | head -n 20 >&2
        fi
done
exit $failed
