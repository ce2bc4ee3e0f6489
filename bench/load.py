#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Load test: many clients at once against one qsnapd while block jobs run.

The real qsnapd, polkitd and QEMU on a private bus (tests/lib/qsnaptest.py).
Four running domains: load0 and load1 with two disks each, a throttled
BlockPull on vdb of each (so both jobs run the whole time; checked at the
end) and external disk-only snapshots of vda (vdb snapshot='no'); load2 and
load3 with one disk and internal snapshots (with memory). Then --clients
threads, each with its own bus connection, call for a warm-up and then for
--seconds: property reads (GetAll, Disks, State), ListDomains,
ListSnapshots, GetXMLDesc (domain and snapshot), and now and then a
snapshot create or delete on their domain (client i works on load<i % 4>;
each deletes only what it created, all of it at the end of each phase, and
waits for a delete's merge job).

Printed and asserted (exit status 1 when one fails):
- no failed call, except Busy, which DESIGN.md documents for a disk a job
  or an operation holds (counted and printed);
- p50 and p99 latency of the reads (printed; client side: bus round trip
  through dbus-daemon included);
- qsnapd's RSS after the warm-up and at the end: within 10 %;
- qsnapd's open file descriptors (/proc/PID/fd) after the warm-up and at
  the end: no growth. Both are measured once no job object but the pulls
  is left (a finished job's object stays 60 s), so the states compare;
- both throttled pulls still running at the end.

    sudo bench/load.py [--build build] [--clients 50] [--seconds 60] [--warmup 15]

Bounded: every call and merge has a timeout, each client stops at the
deadline and then deletes at most its two snapshots; a client still busy 8
minutes after its deadline fails the run.
"""

import argparse
import collections
import datetime
import os
import platform
import random
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402

D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE
J = q.JOB_IFACE
BUSY = q.ERROR_PREFIX + 'Busy'
DISK_ONLY = 16
MiB = 1024 * 1024
PULL_BANDWIDTH = 64 * 1024        # 2 GiB at 64 KiB/s: hours (but see the drains below)
CALL_TIMEOUT = 60.0
JOB_TIMEOUT = 120.0

# (operation, weight): what a client does next.
OPERATIONS = [('GetAll', 20), ('Disks', 15), ('State', 15), ('ListDomains', 10), ('ListSnapshots', 12),
              ('GetXMLDesc', 8), ('SnapshotGetXMLDesc', 8), ('write', 6)]
READS = {'GetAll', 'Disks', 'State', 'ListDomains', 'ListSnapshots', 'GetXMLDesc', 'SnapshotGetXMLDesc'}


def proc_rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS for pid %d' % pid)


def proc_fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def percentile(values, p):
    if not values:
        return float('nan')
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.busy = collections.Counter()
        self.failures = []
        self.read_ms = []
        self.write_ms = collections.defaultdict(list)

    def merge(self, other):
        with self.lock:
            self.calls.update(other.calls)
            self.busy.update(other.busy)
            self.failures += other.failures
            self.read_ms += other.read_ms
            for k, v in other.write_ms.items():
                self.write_ms[k] += v


class LoadClient(threading.Thread):
    """One client: its own bus connection, a random mix of operations
    until the deadline."""

    def __init__(self, index, phase, address, domains, kinds, deadline, stats, seed):
        super().__init__(name='client-%d' % index, daemon=True)
        self.index = index
        self.phase = phase
        self.address = address
        self.domains = domains
        self.domain = domains[index % len(domains)]
        self.kind = kinds[self.domain]
        self.deadline = deadline
        self.stats = stats
        self.local = Stats()
        self.rng = random.Random(seed)
        self.mine = []          # snapshot object paths this client created, oldest first
        self.serial = 0
        self.error = None

    def run(self):
        try:
            self.client = q.Client(self.address)
            try:
                while time.monotonic() < self.deadline:
                    self.step()
                # Leave the tree as it was, so that the phases compare.
                for attempt in range(100):
                    if not self.mine:
                        break
                    self.delete(self.mine[0])
                    if self.mine:
                        time.sleep(0.05)   # Busy: another client's operation holds the disk
                if self.mine:
                    self.local.failures.append('%s could not delete its snapshots: %s' % (self.name, self.mine))
            finally:
                self.client.close()
        except Exception as e:      # a bug of the load script itself: reported, never hidden
            self.error = '%s: %r' % (self.name, e)
        self.stats.merge(self.local)

    def call(self, op, path, iface, method, args=None, sig=None):
        t0 = time.monotonic()
        try:
            r = self.client.call(path, iface, method, args, sig, timeout=CALL_TIMEOUT)
        except q.DBusCallError as e:
            self.local.calls[op] += 1
            if e.name == BUSY:
                self.local.busy[op] += 1
            else:
                self.local.failures.append('%s %s: %s' % (op, path, e))
            return None, False
        ms = (time.monotonic() - t0) * 1000.0
        self.local.calls[op] += 1
        if op in READS:
            self.local.read_ms.append(ms)
        else:
            self.local.write_ms[op].append(ms)
        return r, True

    def step(self):
        op = self.rng.choices([o for o, _ in OPERATIONS], [w for _, w in OPERATIONS])[0]
        dom = self.rng.choice(self.domains)
        if op == 'GetAll':
            self.call(op, dom, q.PROPERTIES_IFACE, 'GetAll', (D,), 's')
        elif op == 'Disks':
            self.call(op, dom, q.PROPERTIES_IFACE, 'Get', (D, 'Disks'), 'ss')
        elif op == 'State':
            self.call(op, dom, q.PROPERTIES_IFACE, 'Get', (D, 'State'), 'ss')
        elif op == 'ListDomains':
            self.call(op, q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
        elif op == 'ListSnapshots':
            self.call(op, dom, D, 'ListSnapshots', (0,), 't')
        elif op == 'GetXMLDesc':
            self.call(op, dom, D, 'GetXMLDesc', (0,), 't')
        elif op == 'SnapshotGetXMLDesc':
            snaps, ok = self.call('ListSnapshots', dom, D, 'ListSnapshots', (0,), 't')
            if ok and snaps:
                snap = self.rng.choice(snaps)
                try:
                    self.client.call(snap, S, 'GetXMLDesc', (0,), 't', timeout=CALL_TIMEOUT)
                    self.local.calls[op] += 1
                except q.DBusCallError as e:
                    # Another client may have deleted it since the list: that is no failure.
                    if e.name not in ('org.freedesktop.DBus.Error.UnknownObject',
                                      'org.freedesktop.DBus.Error.UnknownMethod',
                                      q.ERROR_PREFIX + 'NoSuchSnapshot'):
                        self.local.failures.append('%s %s: %s' % (op, snap, e))
                    self.local.calls[op] += 1
        else:
            if len(self.mine) < 2:
                self.create()
            else:
                self.delete(self.mine[0])

    def create(self):
        self.serial += 1
        name = '%s-c%02d-%d' % (self.phase, self.index, self.serial)
        if self.kind == 'external':
            xml = ("<domainsnapshot><name>%s</name><disks><disk name='vda' snapshot='external'/>"
                   "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>" % name)
            path, ok = self.call('CreateSnapshot(external)', self.domain, D, 'CreateSnapshot', (xml, DISK_ONLY), 'st')
        else:
            xml = '<domainsnapshot><name>%s</name></domainsnapshot>' % name
            path, ok = self.call('CreateSnapshot(internal)', self.domain, D, 'CreateSnapshot', (xml, 0), 'st')
        if ok:
            self.mine.append(path)

    def delete(self, snap):
        job, ok = self.call('Delete(%s)' % self.kind, snap, S, 'Delete', (0,), 't')
        if not ok:
            return
        self.mine.remove(snap)
        if job and job != '/':
            self.wait_job(job)

    def wait_job(self, job):
        end = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < end:
            try:
                state = self.client.call(job, q.PROPERTIES_IFACE, 'Get', (J, 'State'), 'ss', timeout=CALL_TIMEOUT)
            except q.DBusCallError as e:
                if e.name == 'org.freedesktop.DBus.Error.UnknownObject':
                    return      # ended and already gone
                self.local.failures.append('job %s: %s' % (job, e))
                return
            if state == 'completed':
                return
            if state in ('failed', 'canceled'):
                error = self.client.call(job, q.PROPERTIES_IFACE, 'Get', (J, 'Error'), 'ss')
                self.local.failures.append('merge job %s ended %s: %s' % (job, state, error))
                return
            time.sleep(0.05)
        self.local.failures.append('merge job %s still running after %.0f s' % (job, JOB_TIMEOUT))


def run_phase(h, phase, domains, kinds, n_clients, seconds, seed):
    stats = Stats()
    deadline = time.monotonic() + seconds
    clients = [LoadClient(i, phase, h.address, domains, kinds, deadline, stats, seed * 1000 + i)
               for i in range(n_clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=seconds + 2 * (CALL_TIMEOUT + JOB_TIMEOUT) + 30)
        if c.is_alive():
            raise RuntimeError('%s did not stop' % c.name)
    errors = [c.error for c in clients if c.error]
    if errors:
        raise RuntimeError('load clients broke: ' + '; '.join(errors))
    return stats


def wait_only_pulls(h, domains, pulls, timeout=JOB_TIMEOUT):
    """Until the two pulls are the only job objects left: every merge job
    ended, and its object (kept 60 s after the end, DESIGN 2) is gone, so
    that what qsnapd holds compares between the two measurements."""
    def quiet():
        return all(set(h.get_property(dom, D, 'Jobs')) <= set(pulls) for dom in domains)
    if not q.spin(quiet, timeout):
        raise RuntimeError('job objects other than the pulls still there %.0f s after the load' % timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--clients', type=int, default=50)
    ap.add_argument('--seconds', type=int, default=60)
    ap.add_argument('--warmup', type=int, default=15)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--log-level', default='info', help="qsnapd's (debug logs every QMP line)")
    args = ap.parse_args()

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    # A load is no time for per-call debug lines; RSS and fds are qsnapd's own.
    h = q.Harness(log_level=args.log_level)
    h.start()
    ok = True
    try:
        domains, kinds = [], {}
        for i in range(4):
            vda = h.create_image('load%d-vda.qcow2' % i, '64M')
            disks = [q.Disk('vda', vda)]
            if i < 2:
                # QEMU 7.2 lets a throttled stream copy one 512 KiB chunk at
                # once whenever the node is drained (every snapshot of the
                # domain drains it): 4096 chunks of zeros (cheap to store)
                # make the pull outlast the run all the same.
                base = h.create_image('load%d-vdb-base.qcow2' % i, '2G')
                q.qemu_io_write_pattern(base, 0x40 + i, 0, 1 * MiB)
                r = q.qemu_io(base, 'write -z %d %d' % (MiB, 2047 * MiB), read_only=False, force_share=False)
                if r.returncode != 0:
                    raise RuntimeError('qemu-io write -z on %s: %s' % (base, r.stderr))
                top = h.create_image('load%d-vdb.qcow2' % i, None, backing=base)
                disks.append(q.Disk('vdb', top))
            path = h.define_domain('load%d' % i, disks)
            h.call(path, D, 'Start', (0,), 't', timeout=60)
            domains.append(path)
            kinds[path] = 'external' if i < 2 else 'internal'
        pulls = [h.call(domains[i], D, 'BlockPull', ('vdb', PULL_BANDWIDTH, 0), 'stt') for i in range(2)]
        pid = h.daemon_pid()

        t_warm = time.monotonic()
        warm = run_phase(h, 'warm', domains, kinds, args.clients, args.warmup, args.seed)
        wait_only_pulls(h, domains, pulls)
        rss0, fds0 = proc_rss_kib(pid), proc_fds(pid)

        t0 = time.monotonic()
        stats = run_phase(h, 'run', domains, kinds, args.clients, args.seconds, args.seed + 1)
        elapsed = time.monotonic() - t0
        wait_only_pulls(h, domains, pulls)
        rss1, fds1 = proc_rss_kib(pid), proc_fds(pid)
        pull_states, pull_cur, pull_end = [], [], []
        for j in pulls:
            try:
                pull_states.append(h.get_property(j, J, 'State'))
                pull_cur.append(h.get_property(j, J, 'Cur'))
                pull_end.append(h.get_property(j, J, 'End'))
            except q.DBusCallError as e:
                pull_states.append('gone (%s)' % e.name)
        if h.daemon_pid() != pid:
            raise RuntimeError('qsnapd was restarted during the run (pid %d, now %s)' % (pid, h.daemon_pid()))
        n_snapshots = sum(len(h.call(d, D, 'ListSnapshots', (0,), 't')) for d in domains)

        total = sum(stats.calls.values())
        busy = sum(stats.busy.values())
        rss_change = (rss1 - rss0) * 100.0 / rss0
        p50, p99 = percentile(stats.read_ms, 50), percentile(stats.read_ms, 99)
        print('qsnapd load test, %s, %s (%s, %d CPUs), QEMU with %s'
              % (datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), platform.node(), platform.machine(),
                 os.cpu_count(), 'KVM' if q.kvm_works() else 'TCG'))
        print('%d clients, %d s (after a %d s warm-up with %d calls), 4 domains running, 2 throttled pulls'
              % (args.clients, round(elapsed), round(t0 - t_warm), sum(warm.calls.values())))
        print('calls: %d (%.0f/s); Busy (documented): %d; failed: %d'
              % (total, total / elapsed, busy, len(stats.failures)))
        for op in sorted(stats.calls):
            ms = stats.write_ms.get(op)
            extra = ' (p50 %.1f ms, max %.1f ms)' % (percentile(ms, 50), max(ms)) if ms else ''
            print('  %-26s %7d  Busy %5d%s' % (op, stats.calls[op], stats.busy[op], extra))
        print('read latency: p50 %.1f ms, p99 %.1f ms (%d reads)' % (p50, p99, len(stats.read_ms)))
        print('qsnapd RSS: %d KiB after warm-up, %d KiB at the end (%+.1f %%)' % (rss0, rss1, rss_change))
        print('qsnapd fds: %d after warm-up, %d at the end' % (fds0, fds1))
        print('pulls at the end: %s (%s of %s bytes)'
              % (', '.join(pull_states), ', '.join(map(str, pull_cur)), ', '.join(map(str, pull_end))))
        print('snapshots left: %d (every client deleted its own)' % n_snapshots)

        checks = [
            ('no failed call except Busy', not stats.failures),
            ('calls made', total > 0 and len(stats.read_ms) > 0),
            ('snapshots created and deleted', any(k.startswith('CreateSnapshot') and stats.calls[k] - stats.busy[k] > 0
                                                  for k in stats.calls)
             and any(k.startswith('Delete') and stats.calls[k] - stats.busy[k] > 0 for k in stats.calls)),
            ('RSS stable within 10 %', abs(rss_change) <= 10.0),
            ('no fd growth', fds1 <= fds0),
            ('both pulls ran the whole time', pull_states == ['running', 'running']),
            ('no snapshot left behind', n_snapshots == 0),
            ('qsnapd exited nowhere', not h.daemon_exit_problems()),
        ]
        for what, passed in checks:
            print('%-32s %s' % (what, 'ok' if passed else 'FAILED'))
            ok = ok and passed
        for f in stats.failures[:20]:
            print('  failure: %s' % f)
        for job, state in zip(pulls, pull_states):
            if state == 'running':
                h.call(job, J, 'Abort', (0,), 't')
    finally:
        h.stop()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
