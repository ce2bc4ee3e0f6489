#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: N external disk-only snapshots of a running one-disk domain,
through the bus, one after another, each on top of the last.

Where each snapshot's time goes, measured, not inferred:
- latency: the client's own clock around the call (Gio, call_sync);
- qsnapd's time: from the moment dbus-daemon routed the call to qsnapd to
  the moment it routed qsnapd's reply, as a bus monitor (a second
  connection that called BecomeMonitor, stamping each copy it receives)
  sees them. Everything qsnapd does for the call is in there, the signals
  it sends before its reply included (their number and bytes are counted
  from the same monitor);
- of it, waiting for QEMU: qsnapd's own figure (its log line "taken in …,
  … of it waiting for QEMU": from each QMP command sent to its reply);
- of it, qsnapd's own work: the rest;
- outside qsnapd: latency minus qsnapd's time (the client library and
  dbus-daemon, both ways);
- qsnapd's CPU time per snapshot (/proc/<pid>/schedstat around each
  call), which a loaded machine disturbs much less than wall-clock times.
With --follow, the same number of snapshots is then taken of a second
domain while the client follows every signal of qsnapd (what a GUI does:
a match for the whole tree): the difference is what delivering the
signals to a listening client costs, in the same run.

Also: the metadata bytes on disk per snapshot, qsnapd's RSS, the load.

    sudo bench/bench_snapshots.py [--count 1000] [--follow] [--build build] [--out FILE]

Runs the real qsnapd on a private bus (tests/lib/qsnaptest.py), as the tests do.
"""

import argparse
import os
import re
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
import qsnaptest as q  # noqa: E402
from gi.repository import Gio, GLib  # noqa: E402


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def cpu_ns(pid):
    with open('/proc/%d/schedstat' % pid) as f:
        return int(f.read().split()[0])


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def load():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


class BusMonitor:
    """A monitor connection (org.freedesktop.DBus.Monitoring.BecomeMonitor):
    every message the bus routes, stamped with time.monotonic() when its
    copy arrives (in GDBus's worker thread)."""

    def __init__(self, address):
        self.messages = []    # (t, type, sender, destination, serial, reply_serial, member, size)
        self._lock = threading.Lock()
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        self.conn.set_exit_on_close(False)
        self.conn.add_filter(self._filter)
        self.conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.Monitoring',
                            'BecomeMonitor', GLib.Variant('(asu)', ([], 0)), None, Gio.DBusCallFlags.NONE, 10000,
                            None)

    def _filter(self, conn, msg, incoming):
        if not incoming or msg.get_destination() == conn.get_unique_name():
            return msg    # our own traffic: the reply to BecomeMonitor
        if True:
            t = time.monotonic()
            kind = msg.get_message_type()
            try:
                size = len(msg.to_blob(Gio.DBusCapabilityFlags.NONE))
            except GLib.Error:
                size = 0
            with self._lock:
                self.messages.append((t, kind, msg.get_sender(), msg.get_destination(), msg.get_serial(),
                                      msg.get_reply_serial(), msg.get_member(), size))
        return None    # nothing for GDBus to handle: a monitor never answers

    def snapshot(self):
        with self._lock:
            return list(self.messages)

    def close(self):
        self.conn.close_sync(None)


def take(h, client, path, prefix, count):
    """count snapshots of path by client: [(t0, t1, name, qsnapd's CPU ms)]."""
    pid = h.daemon_pid()
    calls = []
    for i in range(count):
        name = '%s%05d' % (prefix, i)
        xml = '<domainsnapshot><name>%s</name></domainsnapshot>' % name
        c0 = cpu_ns(pid)
        t0 = time.monotonic()
        client.call(path, q.DOMAIN_IFACE, 'CreateSnapshot', (xml, 16), 'st', timeout=120)
        t1 = time.monotonic()
        calls.append((t0, t1, name, (cpu_ns(pid) - c0) / 1e6))
    return calls


def split(calls, monitor, client_name, daemon_name, log_text):
    """Per snapshot: latency, qsnapd's time (bus routed call → bus routed
    reply), QEMU's part, signals before the reply (count, bytes) and
    after it; all in ms. The i-th CreateSnapshot the client sent is the
    i-th call."""
    call_type = Gio.DBusMessageType.METHOD_CALL
    # The monitor's copies may still be on their way: wait for the last reply.
    deadline = time.monotonic() + 10
    while True:
        msgs = monitor.snapshot()
        sent = [m for m in msgs if m[1] == call_type and m[2] == client_name and m[6] == 'CreateSnapshot'
                and m[0] >= calls[0][0]]
        answered = {m[5] for m in msgs if m[2] == daemon_name and m[3] == client_name}
        if (len(sent) >= len(calls) and sent[-1][4] in answered) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    reply_type = Gio.DBusMessageType.METHOD_RETURN
    signal_type = Gio.DBusMessageType.SIGNAL
    replies = {m[5]: m for m in msgs if m[1] == reply_type and m[2] == daemon_name and m[3] == client_name}
    signals = [m for m in msgs if m[1] == signal_type and m[2] == daemon_name]
    qemu = {m.group(1): float(m.group(3)) for m in
            re.finditer(r"snapshot '([^']+)' taken in ([0-9.]+) ms, ([0-9.]+) ms of it waiting for QEMU", log_text)}
    if len(sent) != len(calls):
        raise RuntimeError('the monitor saw %d CreateSnapshot calls, the client made %d' % (len(sent), len(calls)))
    rows = []
    for i, ((t0, t1, name, cpu), call) in enumerate(zip(calls, sent)):
        reply = replies.get(call[4])
        if reply is None:
            raise RuntimeError('the monitor saw no reply to CreateSnapshot %s' % name)
        until = sent[i + 1][0] if i + 1 < len(sent) else float('inf')
        before = [s for s in signals if call[0] <= s[0] <= reply[0]]
        after = [s for s in signals if reply[0] < s[0] < until]
        inside = (reply[0] - call[0]) * 1000.0
        rows.append({'latency': (t1 - t0) * 1000.0, 'qsnapd': inside, 'qemu': qemu.get(name, float('nan')), 'cpu': cpu,
                     'signals': len(before), 'signal_bytes': sum(s[7] for s in before), 'after': len(after)})
    return rows


def med(rows, key, part):
    return statistics.median(r[key] for r in part(rows))


def report(out, what, rows):
    first = lambda r: r[:10]    # noqa: E731
    last = lambda r: r[-10:]    # noqa: E731
    for label, part in (('first 10', first), ('last 10', last)):
        lat, ins, qemu = med(rows, 'latency', part), med(rows, 'qsnapd', part), med(rows, 'qemu', part)
        out('%s, %s (medians, ms): latency %.2f = qsnapd %.2f [QEMU %.2f + qsnapd own %.2f] + outside qsnapd %.2f; '
            'qsnapd CPU %.2f; signals before the reply %.0f (%.0f bytes), after it %.0f'
            % (what, label, lat, ins, qemu, ins - qemu, lat - ins, med(rows, 'cpu', part), med(rows, 'signals', part),
               med(rows, 'signal_bytes', part), med(rows, 'after', part)))
    lat = [r['latency'] for r in rows]
    out('%s: latency ms: overall median %.2f, max %.2f; at every 100th: %s'
        % (what, statistics.median(lat), max(lat), ', '.join('%d:%.1f' % (i, lat[i]) for i in range(0, len(lat), 100))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=1000)
    ap.add_argument('--follow', action='store_true',
                    help='then as many snapshots of a second domain with the client following every signal')
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    if args.count < 10:
        ap.error('--count must be at least 10')

    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    lines = []

    def out(s):
        lines.append(s)
        print(s, flush=True)

    try:
        out('snapshots: %d external disk-only per series, running one-disk domain, through the bus; kvm: %s'
            % (args.count, q.kvm_works()))
        out('load at the start: %s (%d CPUs)' % (load(), os.cpu_count()))
        pid = h.daemon_pid()
        daemon_name = h.client.bus('GetNameOwner', (q.BUS_NAME,), 's')
        monitor = BusMonitor(h.address)
        client = h.new_client()
        rss_start = rss_kib(pid)
        series = [('plain', None)] + ([('following signals', 'follow')] if args.follow else [])
        for n, (what, mode) in enumerate(series):
            img = h.create_image('bench%d.qcow2' % n, '256M')
            path = h.define_domain('bench%d' % n, [q.Disk('vda', img)])
            h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
            recorder = client.record_signals() if mode == 'follow' else None
            mark = h.daemon_log_mark()
            t_all = time.monotonic()
            calls = take(h, client, path, 's%d-' % n, args.count)
            wall = time.monotonic() - t_all
            rows = split(calls, monitor, client.unique_name, daemon_name, h.daemon_log_since(mark))
            report(out, what, rows)
            out('%s: whole series %.1f s; load %s' % (what, wall, load()))
            if recorder is not None:
                q.spin(lambda: True, 0)
                out('%s: the client received %d signals' % (what, len(recorder.records)))
                recorder.close()
            h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't', timeout=120)
        meta = dir_bytes(os.path.join(h.state_dir, 'snapshots'))
        total = args.count * len(series)
        out('metadata bytes: %d total for %d snapshots, %.0f per snapshot' % (meta, total, meta / total))
        out('qsnapd RSS KiB: %d at the start, %d after %d snapshots' % (rss_start, rss_kib(pid), total))
        monitor.close()
        client.close()
    finally:
        h.stop()
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
