#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: CreateCheckpoint on a running 4-disk domain, N checkpoints
one after another (issue #12: ≤ 10 ms median, cost flat from 1 to 100
and beyond).

Each call is timed by the client's clock around the D-Bus call (Gio,
call_sync): the latency a client sees, qsnapd's work (journal, one QMP
transaction for the four disks, the metadata store's fsync'ed commit)
and the bus both ways. Also the CPU time per call of qsnapd and of QEMU
(all threads, /proc/<pid>/task/*/schedstat), which the machine's load
does not inflate the way it inflates latency. The series is reported per
hundred (per tenth when N < 300) and as least-squares slopes in µs per
checkpoint: a cost that grows with the number of checkpoints shows as a
slope well above its noise. The size of QEMU's query-named-block-nodes
reply is sampled along the way (through QemuMonitorCommand, outside the
timed calls) to show what an inventory per create would cost; a monitor
command makes qsnapd read the inventory again at the next create (docs/
decisions.md), so one create in a hundred here pays for it. Then
Delete of the newest checkpoints (merge into the parent, four disks, one
transaction) the same way, at the end of the series and (--delete-early)
with 10 checkpoints only.

At 1, 100 and 1000 checkpoints (those the series reaches, and its end)
the series stops for the costs that grew with the number of bitmaps in
the images: a Size read (GetXMLDesc with SIZE, which waits for the
measurement a Get of Size starts), Delete of a middle checkpoint (two
more created, the first of them deleted: it has a parent and a child,
its bitmaps merge into the parent's) and of a leaf (the second), five
times each; their qsnapd CPU counts until qsnapd is idle again (a
Delete's Problems refresh runs after its reply).

    sudo bench/bench_checkpoints.py [--count 100] [--build build] [--out FILE]
        [--perf-from K --perf-out perf.data]

Runs the real qsnapd on a private bus (tests/lib/qsnaptest.py), as the
tests do. Build it without sanitizers for figures worth quoting
(`meson setup build-bench -Dbuildtype=release`).
"""

import argparse
import glob
import os
import signal
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402

DISKS = ('vda', 'vdb', 'vdc', 'vdd')


def cpu_ns(pid):
    """CPU time of every thread of pid, in ns."""
    total = 0
    for f in glob.glob('/proc/%d/task/*/schedstat' % pid):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def wait_idle(pid, timeout=60.0):
    """Until pid (the guest booting in QEMU) uses under 5 % of a CPU over
    half a second; the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = cpu_ns(pid)
        time.sleep(0.5)
        if cpu_ns(pid) - c0 < 0.05 * 0.5e9:
            break
    return time.monotonic() - t0


def cpu_settled(pid, c0):
    """qsnapd's CPU since c0 once it stopped using any (work it does
    after a reply, like a refresh, counts too), in s."""
    last = cpu_ns(pid)
    while True:
        time.sleep(0.03)
        now = cpu_ns(pid)
        if now == last:
            return (now - c0) / 1e9
        last = now


def ms(values):
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return 'median %.2f ms, p90 %.2f ms, min %.2f ms (n=%d)' % (statistics.median(values) * 1e3, p90 * 1e3,
                                                                  values[0] * 1e3, len(values))


def slope(values):
    """Least-squares slope of values (seconds) against their index, in µs
    per checkpoint, and its standard error."""
    n = len(values)
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, values)) / sxx
    if n < 3:
        return b * 1e6, 0.0
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, values))
    return b * 1e6, (resid / (n - 2) / sxx) ** 0.5 * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=100)
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--out', default=None)
    ap.add_argument('--perf-from', type=int, default=None,
                    help='attach `perf record -g` to qsnapd from this call on')
    ap.add_argument('--perf-out', default='perf-qsnapd.data')
    args = ap.parse_args()
    if args.count < 30:
        ap.error('--count must be at least 30')

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    lines = []
    perf = None

    def out(s):
        lines.append(s)
        print(s, flush=True)

    def load():
        return open('/proc/loadavg').read().split()[0]

    try:
        out('CreateCheckpoint: %d on a running 4-disk domain, through the bus; kvm: %s; load %s'
            % (args.count, q.kvm_works(), load()))
        disks = [q.Disk(t, h.create_image('bench-%s.qcow2' % t, '1G')) for t in DISKS]
        path = h.define_domain('bench', disks)
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        client = h.new_client()
        pid, qpid = h.daemon_pid(), h.qemu_pid(path)
        out('waited %.1f s for the guest to settle (QEMU under 5 %% of a CPU)' % wait_idle(qpid))
        step = 100 if args.count >= 300 else max(10, args.count // 10)
        samples = {1, 100, 1000, args.count} | set(range(step, args.count + 1, step))
        nodes_size = []

        def sample_nodes(i):
            reply = client.call(path, q.DOMAIN_IFACE, 'QemuMonitorCommand',
                                ('{"execute":"query-named-block-nodes"}', 0), 'st')
            nodes_size.append((i, len(reply)))

        costs = []  # (checkpoints, what, latencies, qsnapd CPUs, QEMU CPUs)
        extra = []

        def timed(what, n, f, setup=lambda: None):
            lat_, cpu_, qcpu_ = [], [], []
            for _ in range(5):
                arg = setup()
                c0, qc0, t0 = cpu_ns(pid), cpu_ns(qpid), time.monotonic()
                f(arg)
                lat_.append(time.monotonic() - t0)
                cpu_.append(cpu_settled(pid, c0))
                qcpu_.append((cpu_ns(qpid) - qc0) / 1e9)
            costs.append((n, what, lat_, cpu_, qcpu_))

        def make_two():
            """Two more checkpoints (untimed); the first, now between its
            parent and the second, is returned."""
            made = []
            for _ in range(2):
                xml = '<domaincheckpoint><name>x%d</name></domaincheckpoint>' % len(extra)
                extra.append(client.call(path, q.DOMAIN_IFACE, 'CreateCheckpoint', (xml, 0), 'st'))
                made.append(extra[-1])
            return made[0]

        def measure_costs(n):
            """Size, middle and leaf Delete with n checkpoints in the series."""
            leaves = []
            wait_settled = lambda: cpu_settled(pid, 0)  # noqa: E731
            timed('Size (GetXMLDesc SIZE)', n,
                  lambda _: client.call(cps[-1], q.CHECKPOINT_IFACE, 'GetXMLDesc', (4,), 't'), wait_settled)
            timed('Delete middle', n, lambda c: client.call(c, q.CHECKPOINT_IFACE, 'Delete', (0,), 't'),
                  lambda: (make_two(), leaves.append(extra[-1]), wait_settled())[0])
            timed('Delete leaf', n, lambda c: client.call(c, q.CHECKPOINT_IFACE, 'Delete', (0,), 't'),
                  lambda: (leaves.pop(), wait_settled())[0])

        lat, cpu, qcpu, cps = [], [], [], []
        for i in range(args.count):
            if args.perf_from is not None and i == args.perf_from:
                perf = subprocess.Popen(['perf', 'record', '--call-graph', os.environ.get('BENCH_PERF_CALLGRAPH', 'fp'), '-q', '-p', str(pid), '-o', args.perf_out],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            xml = '<domaincheckpoint><name>c%d</name></domaincheckpoint>' % i
            c0, qc0, t0 = cpu_ns(pid), cpu_ns(qpid), time.monotonic()
            cps.append(client.call(path, q.DOMAIN_IFACE, 'CreateCheckpoint', (xml, 0), 'st'))
            lat.append(time.monotonic() - t0)
            cpu.append((cpu_ns(pid) - c0) / 1e9)
            qcpu.append((cpu_ns(qpid) - qc0) / 1e9)
            if i + 1 in (1, 100, 1000, args.count):
                measure_costs(i + 1)
            if i + 1 in samples and i + 1 != args.count:
                sample_nodes(i + 1)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        out('load after the series: %s' % load())
        out('all:          %s; qsnapd CPU median %.2f ms, QEMU CPU median %.2f ms'
            % (ms(lat), statistics.median(cpu) * 1e3, statistics.median(qcpu) * 1e3))
        out('first 10:     %s' % ms(lat[:10]))
        out('last 10:      %s' % ms(lat[-10:]))
        out('last/first median ratio: %.2f' % (statistics.median(lat[-10:]) / statistics.median(lat[:10])))
        out('%-11s %10s %10s %12s %12s' % ('checkpoints', 'latency', 'p90', 'qsnapd CPU', 'QEMU CPU'))
        for a in range(0, args.count, step):
            b = min(args.count, a + step)
            part = sorted(lat[a:b])
            out('%4d-%-6d %7.2f ms %7.2f ms %9.2f ms %9.2f ms'
                % (a + 1, b, statistics.median(part) * 1e3, part[min(len(part) - 1, int(len(part) * 0.9))] * 1e3,
                   statistics.median(cpu[a:b]) * 1e3, statistics.median(qcpu[a:b]) * 1e3))
        for what, v in (('latency', lat), ('qsnapd CPU', cpu), ('QEMU CPU', qcpu)):
            s, e = slope(v)
            out('slope %-11s %+7.2f ± %.2f µs per checkpoint (%+.1f ms over %d)'
                % (what, s, e, s * args.count / 1e3, args.count))
            if args.count > 100:
                s100, e100 = slope(v[:100])
                out('slope %-11s %+7.2f ± %.2f µs per checkpoint over the first 100' % (what, s100, e100))
        sample_nodes(args.count)
        out('query-named-block-nodes reply (not sent by a create): '
            + ', '.join('%d checkpoints %d bytes' % x for x in nodes_size))
        out('%-11s %-24s %10s %10s %12s %12s' % ('checkpoints', 'call (5 each)', 'latency', 'max',
                                                'qsnapd CPU', 'QEMU CPU'))
        for n, what, lat_, cpu_, qcpu_ in costs:
            out('%-11d %-24s %7.2f ms %7.2f ms %9.2f ms %9.2f ms'
                % (n, what, statistics.median(lat_) * 1e3, max(lat_) * 1e3, statistics.median(cpu_) * 1e3,
                   statistics.median(qcpu_) * 1e3))
        dl, dcpu = [], []
        for c in reversed(cps[-10:]):
            c0, t0 = cpu_ns(pid), time.monotonic()
            client.call(c, q.CHECKPOINT_IFACE, 'Delete', (0,), 't')
            dl.append(time.monotonic() - t0)
            dcpu.append((cpu_ns(pid) - c0) / 1e9)
        out('Delete at %d (newest, merged into its parent): %s; qsnapd CPU median %.2f ms'
            % (args.count, ms(dl), statistics.median(dcpu) * 1e3))
        for c in reversed(cps[10:-10]):
            client.call(c, q.CHECKPOINT_IFACE, 'Delete', (2,), 't')  # METADATA_ONLY: fast shrink
        dl, dcpu = [], []
        for c in reversed(cps[:10]):
            c0, t0 = cpu_ns(pid), time.monotonic()
            client.call(c, q.CHECKPOINT_IFACE, 'Delete', (0,), 't')
            dl.append(time.monotonic() - t0)
            dcpu.append((cpu_ns(pid) - c0) / 1e9)
        out('Delete at 10 (metadata of the rest dropped, bitmaps stay): %s; qsnapd CPU median %.2f ms'
            % (ms(dl), statistics.median(dcpu) * 1e3))
        out('load at the end: %s' % load())
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't', timeout=120)
        client.close()
    finally:
        if perf and perf.poll() is None:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        h.stop()
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
