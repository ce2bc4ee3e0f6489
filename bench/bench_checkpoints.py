#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: CreateCheckpoint on a running 4-disk domain, N checkpoints
one after another (issue #12: ≤ 10 ms median, cost flat from 1 to 100).

Each call is timed by the client's clock around the D-Bus call (Gio,
call_sync): the latency a client sees, qsnapd's work (inventory over QMP,
journal, one QMP transaction for the four disks, the metadata store's
fsync'ed commit) and the bus both ways. Also qsnapd's CPU time per call
(/proc/<pid>/schedstat). The series is split into the first ten, the
middle and the last ten calls, so that a cost growing with the number of
checkpoints shows. Then Delete of the newest checkpoint (merge into its
parent, four disks, one transaction) the same way.

    sudo bench/bench_checkpoints.py [--count 100] [--build build] [--out FILE]

Runs the real qsnapd on a private bus (tests/lib/qsnaptest.py), as the
tests do. Build it without sanitizers for figures worth quoting
(`meson setup build-bench -Dbuildtype=release`).
"""

import argparse
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402

DISKS = ('vda', 'vdb', 'vdc', 'vdd')


def cpu_ns(pid):
    with open('/proc/%d/schedstat' % pid) as f:
        return int(f.read().split()[0])


def ms(values):
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return 'median %.2f ms, p90 %.2f ms, min %.2f ms (n=%d)' % (statistics.median(values) * 1e3, p90 * 1e3,
                                                                  values[0] * 1e3, len(values))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=100)
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    if args.count < 30:
        ap.error('--count must be at least 30')

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    lines = []

    def out(s):
        lines.append(s)
        print(s, flush=True)

    try:
        out('CreateCheckpoint: %d on a running 4-disk domain, through the bus; kvm: %s; load %s'
            % (args.count, q.kvm_works(), open('/proc/loadavg').read().split()[0]))
        disks = [q.Disk(t, h.create_image('bench-%s.qcow2' % t, '1G')) for t in DISKS]
        path = h.define_domain('bench', disks)
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        client = h.new_client()
        pid = h.daemon_pid()
        lat, cpu, cps = [], [], []
        for i in range(args.count):
            xml = '<domaincheckpoint><name>c%d</name></domaincheckpoint>' % i
            c0, t0 = cpu_ns(pid), time.monotonic()
            cps.append(client.call(path, q.DOMAIN_IFACE, 'CreateCheckpoint', (xml, 0), 'st'))
            lat.append(time.monotonic() - t0)
            cpu.append((cpu_ns(pid) - c0) / 1e9)
        out('all:          %s; qsnapd CPU median %.2f ms' % (ms(lat), statistics.median(cpu) * 1e3))
        out('first 10:     %s' % ms(lat[:10]))
        out('middle:       %s' % ms(lat[10:-10]))
        out('last 10:      %s' % ms(lat[-10:]))
        ratio = statistics.median(lat[-10:]) / statistics.median(lat[:10])
        out('last/first median ratio: %.2f' % ratio)
        dl = []
        for c in reversed(cps[-10:]):
            t0 = time.monotonic()
            client.call(c, q.CHECKPOINT_IFACE, 'Delete', (0,), 't')
            dl.append(time.monotonic() - t0)
        out('Delete (newest, merged into its parent): %s' % ms(dl))
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't', timeout=120)
        client.close()
    finally:
        h.stop()
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
