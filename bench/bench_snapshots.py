#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: N external disk-only snapshots of a running one-disk domain,
through the bus, one after another.

Reports per-snapshot latency (median of the first and of the last 10, and
every 100th), the metadata bytes on disk per snapshot, qsnapd's RSS, and
QEMU's share of each snapshot (the time between our first and last QMP
command of it, from qsnapd's debug log) next to ours.

    sudo bench/bench_snapshots.py [--count 1000] [--build build] [--out docs/performance-snapshots.txt]

Runs the real qsnapd on a private bus (tests/lib/qsnaptest.py), as the tests do.
"""

import argparse
import os
import re
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=1000)
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--out', default=None)
    args = ap.parse_args()

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    lines = []
    try:
        img = h.create_image('bench.qcow2', '256M')
        path = h.define_domain('bench', [q.Disk('vda', img)])
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        pid = h.daemon_pid()
        rss_start = rss_kib(pid)

        lat = []
        t_all = time.monotonic()
        for i in range(args.count):
            xml = '<domainsnapshot><name>s%05d</name></domainsnapshot>' % i
            t0 = time.monotonic()
            h.call(path, q.DOMAIN_IFACE, 'CreateSnapshot', (xml, 16), 'st', timeout=120)
            lat.append((time.monotonic() - t0) * 1000.0)
        wall = time.monotonic() - t_all

        meta = dir_bytes(os.path.join(h.state_dir, 'snapshots'))
        # qsnapd logs each snapshot's own time and the part spent waiting for QEMU.
        inside, qemu = [], []
        with open(h.daemon_log, errors='replace') as f:
            for m in re.finditer(r"snapshot 's\d+' taken in ([0-9.]+) ms, ([0-9.]+) ms of it waiting for QEMU", f.read()):
                inside.append(float(m.group(1)))
                qemu.append(float(m.group(2)))
        ours = [a - b for a, b in zip(inside, qemu)]
        rss_end = rss_kib(pid)
        first, last = statistics.median(lat[:10]), statistics.median(lat[-10:])
        lines += [
            'snapshots: %d external disk-only, running one-disk domain, through the bus' % args.count,
            'kvm: %s' % q.kvm_works(),
            'latency ms: median first 10 = %.2f, median last 10 = %.2f, ratio = %.2f, overall median = %.2f, max = %.2f'
            % (first, last, last / first, statistics.median(lat), max(lat)),
            'latency ms at every 100th: ' + ', '.join('%d:%.1f' % (i, lat[i]) for i in range(0, args.count, 100)),
            'inside qsnapd ms (median first 10 / last 10): QEMU %.2f / %.2f, qsnapd itself %.2f / %.2f'
            % (statistics.median(qemu[:10]), statistics.median(qemu[-10:]),
               statistics.median(ours[:10]), statistics.median(ours[-10:])),
            'bus round trip outside qsnapd (client, dbus-daemon) ms, median first 10 / last 10: %.2f / %.2f'
            % (statistics.median(lat[:10]) - statistics.median(inside[:10]),
               statistics.median(lat[-10:]) - statistics.median(inside[-10:])),
            'metadata bytes: %d total, %.0f per snapshot' % (meta, meta / args.count),
            'qsnapd RSS KiB: %d at start, %d after' % (rss_start, rss_end),
            'wall: %.1f s' % wall,
        ]
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't', timeout=120)
    finally:
        h.stop()
    text = '\n'.join(lines) + '\n'
    sys.stdout.write(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
