#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: the latency of an incremental push backup (issue #12's
"incremental <= 0.05 x the full push"), two qsnapd builds against each
other on the same domain, in alternating order.

Set-up as bench/bench_backup.py's: a running one-disk domain on a 2 GiB
qcow2 holding SIZE of data (<driver cache='none' io='native'/> unless
--cache default), a full push making checkpoint c1. Then PAIRS times, for
each build in turn (the order alternating from pair to pair): qsnapd is
restarted from that build (SIGTERM; the new one attaches to the same
QEMU), the guest rewrites the same 1 % of the disk (20 pieces spread over
the data, HMP qemu-io, flushed), the page cache is dropped, and
BackupBegin pushes the incremental since c1 into a new file; timed from
the call to the arrival of its reply and of its Completed signal (the
wait blocks in the main loop's poll). Every incremental copies the same
bytes (printed). Printed per build: the medians and every run; per pair
the difference, and the median difference (b - a), which the load moves
less than either build's own times since both of a pair run within
seconds of each other on the same QEMU.

    sudo bench/bench_backup_latency.py --a build-old/daemon/qsnapd --b build-bench/daemon/qsnapd
                                       [--pairs 20] [--size-mib 1024] [--cache none|default]

Builds: meson setup build-bench --buildtype=debugoptimized (no sanitizers).
"""

import argparse
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'lib'))
sys.path.insert(0, here)
import qsnaptest as q  # noqa: E402
from bench_blockjobs import TimedRecorder, drop_caches, load, write_data  # noqa: E402

D, J = q.DOMAIN_IFACE, q.JOB_IFACE
MiB = 1 << 20
VIRTUAL = 2048 * MiB


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--a', required=True, help='the first qsnapd binary (e.g. the old build)')
    ap.add_argument('--b', required=True, help='the second qsnapd binary (e.g. the new build)')
    ap.add_argument('--pairs', type=int, default=20)
    ap.add_argument('--size-mib', type=int, default=1024)
    ap.add_argument('--cache', default='none', choices=('none', 'default'))
    args = ap.parse_args()
    binaries = {'a': os.path.abspath(args.a), 'b': os.path.abspath(args.b)}
    os.environ['QSNAPD_BINARY'] = binaries['a']
    os.environ.setdefault('QSNAPD_SOURCE_ROOT', os.path.join(here, '..'))
    h = q.Harness(log_level='info')
    h.start()
    times = {k: {'reply': [], 'completed': []} for k in binaries}
    try:
        size = args.size_mib * MiB
        img = q.qemu_img_create(h.image_path('disk.qcow2'), '2G')
        write_data(img, size)
        xml = q.domain_xml('lat', [q.Disk('vda', img)])
        if args.cache == 'none':
            plain = '<driver name=\'qemu\' type="qcow2"/>'
            if plain not in xml:
                raise RuntimeError('no <driver> to set cache= on in %s' % xml)
            xml = xml.replace(plain, "<driver name='qemu' type='qcow2' cache='none' io='native'/>")
        dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')
        h.call(dom, D, 'Start', (0,), 't')
        rec = TimedRecorder(h.client)
        full = h.image_path('full.qcow2')
        job = h.call(dom, D, 'BackupBegin', ("<domainbackup><disks><disk name='vda' type='file'><target file='%s'/>"
                                             "</disk></disks></domainbackup>" % full,
                                             '<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'sst')
        end, _ = rec.wait_arrival('Completed', path=job, interface=J, timeout=600)
        if end.args[0] != 'completed':
            raise RuntimeError('the full push ended %r' % (end.args,))
        rec.close()
        print('incremental push latency: %d MiB of data in a 2 GiB qcow2, cache=%s, %d pairs; a = %s, b = %s; '
              'load %s' % (args.size_mib, args.cache, args.pairs, binaries['a'], binaries['b'], load()), flush=True)
        inc = h.image_path('inc.qcow2')
        piece = VIRTUAL // 2000
        for pair in range(args.pairs):
            for k in ('a', 'b') if pair % 2 == 0 else ('b', 'a'):
                h.restart_daemon(kill=False, env={'QSNAPD_BINARY': binaries[k]})
                if not q.spin(lambda: h.get_property(dom, D, 'State') == 'running', 30):
                    raise RuntimeError('the domain is not running after the restart')
                for i in range(20):
                    h.hmp(dom, 'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0xcd %d %d"'
                          % (i * (size // 20), piece))
                h.flush_live(dom, 'vda')
                if os.path.exists(inc):
                    os.unlink(inc)
                rec = TimedRecorder(h.client)
                drop_caches()
                t0 = time.monotonic()
                job = h.call(dom, D, 'BackupBegin', ("<domainbackup><incremental>c1</incremental><disks><disk "
                                                     "name='vda' type='file'><target file='%s'/></disk></disks>"
                                                     "</domainbackup>" % inc, '', 0), 'sst')
                t1 = time.monotonic()
                end, t2 = rec.wait_arrival('Completed', path=job, interface=J, timeout=600)
                rec.close()
                if end.args[0] != 'completed':
                    raise RuntimeError('the incremental ended %r' % (end.args,))
                copied = h.get_property(job, J, 'End')
                times[k]['reply'].append((t1 - t0) * 1000)
                times[k]['completed'].append((t2 - t0) * 1000)
                print('pair %d %s: reply %.1f ms, Completed %.1f ms, %d bytes copied (load %s)'
                      % (pair + 1, k, (t1 - t0) * 1000, (t2 - t0) * 1000, copied, load()), flush=True)
        for what in ('reply', 'completed'):
            for k in binaries:
                v = times[k][what]
                print('%s, %s: median %.1f ms (%s)' % (what, k, statistics.median(v), ' '.join('%.1f' % x for x in v)))
            diffs = [b - a for a, b in zip(times['a'][what], times['b'][what])]
            print('%s, b - a per pair: median %+.1f ms (%s)' % (what, statistics.median(diffs),
                                                                ' '.join('%+.1f' % x for x in diffs)))
        print('load at the end %s' % load())
    finally:
        h.stop()


if __name__ == '__main__':
    main()
