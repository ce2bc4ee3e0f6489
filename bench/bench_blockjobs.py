#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: block job throughput through the bus, next to dd.

Per run, on the same filesystem (the harness's images dir) and with the
page cache dropped before every step:
- dd, direct:   dd if=src.raw of=dst.raw bs=1M iflag=direct oflag=direct,
                once before and once after the jobs (the run's baseline is
                the mean of the two times)
- dd, buffered: dd if=src.raw of=dst.raw bs=1M conv=fdatasync
- active commit + pivot: base (empty) <- top (SIZE of data); BlockCommit
  ACTIVE, Ready, Pivot, Completed
- pull: base (SIZE of data) <- top (empty); BlockPull, Completed
- copy + pivot: one image with SIZE of data; BlockCopy to a new qcow2,
  Ready, Pivot, Completed (only when the daemon has BlockCopy)
The data is written with qemu-io, pattern 0xab (nothing sparse), 2 GiB
virtual size. A job's time runs from just before the method call to the
arrival of its Completed signal (Ready → Pivot is part of it); its MiB/s
is SIZE over that time. "+sync" is the time of a host `sync` right after
(what the page cache still held). qsnapd's CPU time during the job comes
from /proc/<pid>/stat (utime+stime, clock ticks) and /proc/<pid>/schedstat
(ns), as a share of the job's wall time; QEMU's (all its threads: stat
utime+stime) likewise. The data is checked afterwards.

    sudo bench/bench_blockjobs.py [--runs 3] [--size-mib 1024] [--build build-bench] [--ops commit,pull,copy] [--out FILE]

build-bench: meson setup build-bench --buildtype=debugoptimized (no sanitizers).

Runs the real qsnapd on a private bus (tests/lib/qsnaptest.py), as the tests do.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402

D, J = q.DOMAIN_IFACE, q.JOB_IFACE
MiB = 1 << 20
PATTERN = 0xab
CHUNK = 64 * MiB
CLK_TCK = os.sysconf('SC_CLK_TCK')


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def load():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


def cpu(pid):
    """(utime+stime in seconds from /proc/pid/stat, on-CPU seconds from schedstat)."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])    # utime, stime (fields 14 and 15)
    with open('/proc/%d/schedstat' % pid) as f:
        ns = int(f.read().split()[0])
    return ticks / CLK_TCK, ns / 1e9


def write_data(img, size, fmt='qcow2'):
    argv = [q.QEMU_IO, '-f', fmt]
    for off in range(0, size, CHUNK):
        argv += ['-c', 'write -P 0x%02x %d %d' % (PATTERN, off, min(CHUNK, size - off))]
    r = subprocess.run(argv + [img], capture_output=True, text=True)
    if r.returncode != 0 or 'wrote' not in r.stdout:
        raise RuntimeError('qemu-io on %s: %s' % (img, r.stdout + r.stderr))


def check_data(img, size):
    r = subprocess.run([q.QEMU_IO, '-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x%02x 0 %d' % (PATTERN, size), img],
                       capture_output=True, text=True)
    if r.returncode != 0 or 'Pattern verification failed' in r.stdout + r.stderr:
        raise RuntimeError('%s does not hold the data after the job: %s' % (img, (r.stdout + r.stderr)[-300:]))


class TimedRecorder(q.TimedRecorder):
    def wait_arrival(self, member, path=None, interface=None, timeout=10.0):
        """(the first matching signal, when it arrived): the main context
        blocks in its poll until the bus connection's thread hands a
        message over (q.spin() looks every 10 ms, which put up to 10 ms on
        a measured time: half of that on average)."""
        ctx = q.GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        wake = q.GLib.timeout_add(100, lambda: True)  # to look at the deadline
        try:
            while True:
                while ctx.iteration(False):
                    pass
                for s, t in zip(self.records, self.times):
                    if s.member == member and (path is None or s.path == path) \
                            and (interface is None or s.interface == interface):
                        return s, t
                if time.monotonic() >= deadline:
                    raise AssertionError('no %s signal within %.1f s' % (member, timeout))
                ctx.iteration(True)
        finally:
            q.GLib.source_remove(wake)

    def first_state(self, path, state):
        for s, t in zip(self.records, self.times):
            if s.path == path and s.member == 'PropertiesChanged' and s.args[1].get('State') == state:
                return t
        return None


def timed(argv):
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - t0


class Bench:
    def __init__(self, h, size):
        self.h = h
        self.size = size
        self.n = 0

    def path(self, name):
        self.n += 1
        return self.h.image_path('%02d-%s' % (self.n, name))

    def rate(self, seconds):
        return self.size / MiB / seconds

    def dd(self, direct):
        src = self.path('src.raw')
        dst = self.path('dst.raw')
        q.qemu_img_create(src, self.size, fmt='raw')
        write_data(src, self.size, 'raw')
        drop_caches()
        flags = ['iflag=direct', 'oflag=direct'] if direct else ['conv=fdatasync']
        t = timed(['dd', 'if=' + src, 'of=' + dst, 'bs=1M'] + flags)
        os.unlink(src)
        os.unlink(dst)
        return {'time': t, 'rate': self.rate(t)}

    def job(self, kind):
        h = self.h
        if kind == 'commit':
            base = q.qemu_img_create(self.path('base.qcow2'), '2G')
            top = q.qemu_img_create(self.path('top.qcow2'), '2G', backing=base)
            write_data(top, self.size)
            disk, result, files = top, base, [base, top]
        elif kind == 'pull':
            base = q.qemu_img_create(self.path('base.qcow2'), '2G')
            top = q.qemu_img_create(self.path('top.qcow2'), '2G', backing=base)
            write_data(base, self.size)
            disk, result, files = top, top, [base, top]
        else:
            src = q.qemu_img_create(self.path('src.qcow2'), '2G')
            write_data(src, self.size)
            dest = self.path('dest.qcow2')
            disk, result, files = src, dest, [src, dest]
        name = 'bench%d' % self.n
        dom = h.define_domain(name, [q.Disk('vda', disk)])
        h.call(dom, D, 'Start', (0,), 't')
        rec = TimedRecorder(h.client)
        pid = h.daemon_pid()
        with open(os.path.join(h.runtime_dir, h.get_property(dom, D, 'UUID') + '.pid')) as f:
            qemu_pid = int(f.read().strip())
        drop_caches()
        c0 = cpu(pid)
        qc0 = cpu(qemu_pid)
        t0 = time.monotonic()
        if kind == 'commit':
            job = h.call(dom, D, 'BlockCommit', ('vda', '', '', 0, 4), 'ssstt', timeout=300)
        elif kind == 'pull':
            job = h.call(dom, D, 'BlockPull', ('vda', 0, 0), 'stt', timeout=300)
        else:
            xml = "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>" % dest
            job = h.call(dom, D, 'BlockCopy', ('vda', xml, 0, 0), 'sstt', timeout=300)
        t_ready = None
        if kind != 'pull':
            rec.wait_for_signal('Ready', path=job, interface=J, timeout=300)
            t_ready = time.monotonic()
            h.call(job, J, 'Pivot', timeout=300)
        end = rec.wait_for_signal('Completed', path=job, interface=J, timeout=300)
        t1 = time.monotonic()
        c1 = cpu(pid)
        qc1 = cpu(qemu_pid)
        if end.args[0] != 'completed':
            raise RuntimeError('%s ended %r' % (kind, end.args))
        t_pending = rec.first_state(job, 'pending')
        t_sync = timed(['sync'])
        rec.close()
        h.call(dom, D, 'Stop', (0,), 't', timeout=120)
        check_data(result, self.size)
        for f in files:
            os.unlink(f)
        wall = t1 - t0
        return {'time': wall, 'rate': self.rate(wall), 'ready': (t_ready - t0) if t_ready else None,
                'pending': (t_pending - t0) if t_pending else None,
                'sync': t_sync, 'rate_sync': self.rate(wall + t_sync),
                'cpu_stat': c1[0] - c0[0], 'cpu_sched': c1[1] - c0[1],
                'cpu_pct': 100.0 * (c1[1] - c0[1]) / wall, 'cpu_stat_pct': 100.0 * (c1[0] - c0[0]) / wall,
                'qemu_cpu_pct': 100.0 * (qc1[0] - qc0[0]) / wall}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--size-mib', type=int, default=1024)
    ap.add_argument('--build', default=os.path.join(here, '..', 'build-bench'))
    ap.add_argument('--ops', default='commit,pull,copy')
    ap.add_argument('--out', default=None)
    args = ap.parse_args()

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    lines = []

    def out(s):
        lines.append(s)
        print(s, flush=True)

    try:
        ops = args.ops.split(',')
        if 'copy' in ops and 'name="BlockCopy"' not in h.introspect(h.call(
                q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                (q.domain_xml('probe', []), 0), 'st')):
            out('(no BlockCopy in this qsnapd: copy skipped)')
            ops.remove('copy')
        b = Bench(h, args.size_mib * MiB)
        out('block jobs: %d MiB of data (pattern 0x%02x), %d runs, qsnapd %s, %s, kvm: %s'
            % (args.size_mib, PATTERN, args.runs, os.environ['QSNAPD_BINARY'],
               subprocess.run([q.QEMU_SYSTEM, '--version'], capture_output=True, text=True).stdout.split('\n')[0],
               q.kvm_works()))
        ratios = {op: [] for op in ops}
        ratios_sync = {op: [] for op in ops}
        cpus = {op: [] for op in ops}
        rates = {op: [] for op in ops}
        dd_rates = []
        for run in range(args.runs):
            res = {'load': load()}
            res['dd-direct'] = b.dd(True)
            res['dd-buffered'] = b.dd(False)
            for op in ops:
                res[op] = b.job(op)
            # dd direct once before and once after the jobs: the baseline of
            # this run is their mean time (the load moves within a run too).
            res['dd-direct-after'] = b.dd(True)
            dd_time = (res['dd-direct']['time'] + res['dd-direct-after']['time']) / 2
            dd = b.rate(dd_time)
            out('run %d (load %s): dd direct %.0f MiB/s (%.2f s; %.0f before, %.0f after the jobs), '
                'dd buffered+fdatasync %.0f MiB/s (%.2f s)'
                % (run + 1, res['load'], dd, dd_time, res['dd-direct']['rate'], res['dd-direct-after']['rate'],
                   res['dd-buffered']['rate'], res['dd-buffered']['time']))
            dd_rates.append(dd)
            for op in ops:
                r = res[op]
                ratios[op].append(r['rate'] / dd)
                rates[op].append(r['rate'])
                ratios_sync[op].append(r['rate_sync'] / dd)
                cpus[op].append(r['cpu_pct'])
                out('  %-6s %6.0f MiB/s (%.2f s%s%s) = %.2f x dd direct; +sync %.2f s -> %.0f MiB/s = %.2f x; '
                    'qsnapd CPU %.1f ms = %.2f %% (stat: %.0f ms = %.1f %%); QEMU CPU %.0f %%'
                    % (op, r['rate'], r['time'], (', READY at %.2f s' % r['ready']) if r['ready'] else '',
                       (', pending at %.2f s' % r['pending']) if r['pending'] else '',
                       r['rate'] / dd, r['sync'], r['rate_sync'], r['rate_sync'] / dd,
                       r['cpu_sched'] * 1000, r['cpu_pct'], r['cpu_stat'] * 1000, r['cpu_stat_pct'],
                       r['qemu_cpu_pct']))
        out('load at the end: %s' % load())
        out('median of the runs: dd direct %.0f MiB/s; %s' % (
            statistics.median(dd_rates), ', '.join('%s %.0f MiB/s' % (op, statistics.median(rates[op])) for op in ops)))
        for op in ops:
            out('%-6s same-run ratio to dd direct: median %.2f (min %.2f, max %.2f); with sync: median %.2f; '
                'qsnapd CPU median %.2f %% (max %.2f %%)'
                % (op, statistics.median(ratios[op]), min(ratios[op]), max(ratios[op]),
                   statistics.median(ratios_sync[op]), statistics.median(cpus[op]), max(cpus[op])))
    finally:
        h.stop()
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
