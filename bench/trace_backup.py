#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: where an incremental push backup's time goes, from the call
to the arrival of Completed (docs/performance.md, "the incremental's fixed
cost").

Per run, bench/bench_backup.py's flow: a running one-disk domain on a
2 GiB qcow2 holding SIZE of data (<driver cache='none' io='native'/>
unless --cache default), QEMU idle, a full push making checkpoint c1,
`sync` and a read of the target, the guest rewrites 1 % of the disk (20
pieces), the page cache is dropped, BackupBegin pushes the incremental
since c1. qsnapd runs with --log-level=debug and QSNAPD_LOG_MONOTONIC=1,
which stamps each log line with CLOCK_MONOTONIC, the clock this script
reads too. From the log: qsnapd's QMP commands and QEMU's answers and
job events, the operation journal's writes (debug lines around each) and
the lines logged just before the reply ("… backup … runs.") and just
before Completed ("… backup … completed."). Printed: the first --show
runs' timelines in full, every run's segments, their medians.

    sudo bench/trace_backup.py [--runs 5] [--show 1] [--size-mib 1024] [--cache none|default] [--build build-bench]

build-bench: meson setup build-bench --buildtype=debugoptimized (no sanitizers).
"""

import argparse
import os
import re
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
sys.path.insert(0, here)
import qsnaptest as q  # noqa: E402
from bench_backup import BackupBench  # noqa: E402
from bench_blockjobs import TimedRecorder, check_data, drop_caches, load, timed, write_data  # noqa: E402

D, J = q.DOMAIN_IFACE, q.JOB_IFACE
MiB = 1 << 20
VIRTUAL = 2048 * MiB
STAMP = re.compile(r'^(?:<\d>|qsnapd: )\[(\d+\.\d+)\] (.*)$')


def events(log, since):
    """(seconds, text) of every stamped log line at or after since."""
    res = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if m and float(m.group(1)) >= since - 0.001:
            res.append((float(m.group(1)), m.group(2)))
    return res


def segments(ev, t0, t1, t2):
    """The timeline cut into the steps docs/performance.md names (ms)."""
    def first(pattern, after=0.0):
        for t, x in ev:
            if t >= after and re.search(pattern, x):
                return t
        raise RuntimeError('no log line matches %r after %.6f' % (pattern, after))

    writes, begun = [], None
    for t, x in ev:
        if re.search(r'writing the journal of backup\.', x):
            begun = t
        elif re.search(r'the journal of backup is written\.', x) and begun is not None:
            writes.append((begun, t))
            begun = None
    reply = first(r'push backup backup-[0-9a-f]+ of \d+ disk\(s\) runs\.')
    completed = first(r': backup backup-[0-9a-f]+ completed\.')
    query = first(r'"execute":"query-named-block-nodes"')
    query_answer = first(r'← \{"return": \[', query)
    add = first(r'"execute":"blockdev-add"')
    add_answer = first(r'← \{"return": \{\}, "id"', add + 1e-7)
    tr = first(r'"execute":"transaction"')
    tr_answer = first(r'← \{"return": \{\}, "id"', tr + 1e-7)
    running = first(r'"status": "running"', tr)
    waiting = first(r'"status": "waiting"', tr)

    def ms(a, b):
        return (b - a) * 1000

    return {
        'call -> first QMP command (bus, plan, polkit)': ms(t0, query),
        'query-named-block-nodes (QEMU)': ms(query, query_answer),
        'its answer -> blockdev-add sent (target, journal)': ms(query_answer, add),
        'blockdev-add (QEMU)': ms(add, add_answer),
        'transaction (QEMU)': ms(tr, tr_answer),
        'its answer -> reply logged': ms(tr_answer, reply),
        'journal writes before the reply': sum(ms(a, b) for a, b in writes if b <= reply),
        'journal writes before the reply (count)': len([1 for a, b in writes if b <= reply]),
        'journal writes after the reply': sum(ms(a, b) for a, b in writes if a >= reply),
        'reply at the client': ms(t0, t1),
        'the copy (QEMU: running -> waiting)': ms(running, waiting),
        'job end -> Completed logged (finalize, dismiss, blockdev-del, unlink)': ms(waiting, completed),
        'Completed at the client': ms(t0, t2),
    }


def run(h, size, cache, show):
    img = q.qemu_img_create(h.image_path('disk.qcow2'), '2G')
    write_data(img, size)
    xml = q.domain_xml('trace', [q.Disk('vda', img)])
    if cache == 'none':
        plain = '<driver name=\'qemu\' type="qcow2"/>'
        if plain not in xml:
            raise RuntimeError('no <driver> to set cache= on in %s' % xml)
        xml = xml.replace(plain, "<driver name='qemu' type='qcow2' cache='none' io='native'/>")
    dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')
    h.call(dom, D, 'Start', (0,), 't')
    BackupBench.settle(h.qemu_pid(dom))
    rec = TimedRecorder(h.client)
    full = h.image_path('full.qcow2')
    job = h.call(dom, D, 'BackupBegin', ("<domainbackup><disks><disk name='vda' type='file'><target file='%s'/>"
                                         "</disk></disks></domainbackup>" % full,
                                         '<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'sst')
    rec.wait_arrival('Completed', path=job, interface=J, timeout=600)
    timed(['sync'])
    check_data(full, size)
    piece = VIRTUAL // 2000
    for k in range(20):
        h.hmp(dom, 'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0xcd %d %d"' % (k * (size // 20), piece))
    h.flush_live(dom, 'vda')
    inc = h.image_path('inc.qcow2')
    with open(h.daemon_log) as f:
        f.seek(0, 2)
        offset = f.tell()
    ld = load()
    drop_caches()
    t0 = time.monotonic()
    job = h.call(dom, D, 'BackupBegin', ("<domainbackup><incremental>c1</incremental><disks><disk name='vda' "
                                         "type='file'><target file='%s'/></disk></disks></domainbackup>" % inc, '', 0),
                 'sst')
    t1 = time.monotonic()
    end, t2 = rec.wait_arrival('Completed', path=job, interface=J, timeout=600)
    rec.close()
    if end.args[0] != 'completed':
        raise RuntimeError('the incremental ended %r' % (end.args,))
    copied = h.get_property(job, J, 'End')
    with open(h.daemon_log) as f:
        f.seek(offset)
        ev = events(f.read(), t0)
    if show:
        print('  %8.2f ms  the call' % 0.0)
        for t, x in ev:
            if t > t2:
                break
            print('  %8.2f ms  %s' % ((t - t0) * 1000, re.sub(r' \(\.\./.*$', '', x)[:200]))
        print('  %8.2f ms  the client has the reply\n  %8.2f ms  the client has Completed' % ((t1 - t0) * 1000,
                                                                                        (t2 - t0) * 1000))
    h.call(dom, D, 'Stop', (0,), 't', timeout=120)
    h.call(dom, D, 'Undefine', (2,), 't')
    for f in (img, full, inc):
        os.unlink(f)
    return ld, copied, segments(ev, t0, t1, t2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--show', type=int, default=1, help='how many runs\' timelines to print in full')
    ap.add_argument('--size-mib', type=int, default=1024)
    ap.add_argument('--cache', default='none', choices=('none', 'default'))
    ap.add_argument('--build', default=os.path.join(here, '..', 'build-bench'))
    args = ap.parse_args()
    os.environ.setdefault('QSNAPD_BINARY', os.path.join(os.path.abspath(args.build), 'daemon', 'qsnapd'))
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    os.environ['QSNAPD_LOG_MONOTONIC'] = '1'
    h = q.Harness(log_level='debug')
    h.start()
    all_segments = []
    try:
        print('incremental push timeline: %d MiB of data in a 2 GiB qcow2, cache=%s, %d runs, qsnapd %s'
              % (args.size_mib, args.cache, args.runs, os.environ['QSNAPD_BINARY']), flush=True)
        for i in range(args.runs):
            ld, copied, seg = run(h, args.size_mib * MiB, args.cache, i < args.show)
            all_segments.append(seg)
            print('run %d (load %s, %d bytes copied): %s' % (i + 1, ld, copied,
                                                            '; '.join('%s %.1f' % kv for kv in seg.items())), flush=True)
        print('medians (ms):')
        for k in all_segments[0]:
            values = [s[k] for s in all_segments]
            print('  %-72s %7.1f   (%s)' % (k, statistics.median(values), ' '.join('%.1f' % v for v in values)))
        print('load at the end %s' % load())
    finally:
        h.stop()


if __name__ == '__main__':
    main()
