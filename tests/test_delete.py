#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot.Delete and Snapshot.CheckDelete end to end (DESIGN.md sections
2, 3, 8): real qsnapd, polkitd, QEMU and qemu-img on 64 MiB images.

Each layer gets its own pattern (0xA0+k at offset k MiB) before snapshot k;
after every delete every remaining snapshot's frozen file (read from its
GetXMLDesc <domain>) still reads exactly the patterns of its time and zeros
after, the active file reads all of them, `qemu-img check` is clean on
every file, Domain.Disks agrees with `qemu-img info --backing-chain`, and
the metadata names existing files only.

- external, shut off: delete the middle (forward: qemu-img commit), the
  current leaf with <on_delete merge='backward'/> (qemu-img rebase), the
  root; each returns a snapshot-delete BlockJob1 that completes with
  progress; children move to the parent, current moves to the parent;
  InterfacesRemoved and PropertiesChanged (Parent, Children, Snapshots,
  CurrentSnapshot) follow.
- external, running: every position of a chain (backward stream into an
  intermediate layer, active commit + pivot, non-active commit), the guest
  data checked live too; a second branch on the frozen file (stream for the
  running chain, qemu-img rebase beside it); a memory file goes with its
  snapshot.
- several overlays on one frozen file (a revert's branch): forward is
  impossible, backward is used for every branch; the branch keeps its data.
- internal: offline (qemu-img snapshot -d) and live (snapshot-delete job):
  the tag is gone from the image, the other tags and their data stay.
- flags: METADATA_ONLY keeps every file; CHILDREN deletes the subtree;
  CHILDREN_ONLY keeps the snapshot; unknown bits and CHILDREN|CHILDREN_ONLY
  are InvalidArgument.
- refusals change nothing and CheckDelete says the same reason: a frozen
  file that is gone (OperationInvalid), too little free space (NoSpace);
  uid 65534 is denied.
- crashes: qsnapd killed with -9 at each step (QSNAPD_TEST_CRASH_AT),
  offline and live, forward and backward, active commit before and after
  READY: after a restart the delete is finished (or the snapshot stays and
  is deleted again), the journal is gone, all data are in place. QEMU
  killed during a merge: the snapshot stays and is deleted afterwards.
"""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import qsnaptest as q
from test_snapshots import (D, DISK_ONLY, E, LEN, S, SnapshotTestCase, mounted_tmpfs, qemu_img_snapshot_tags,
                            snap_xml)

MiB = 1 << 20
J = q.JOB_IFACE
CHILDREN, METADATA_ONLY, CHILDREN_ONLY = 1, 2, 4


def on_delete_xml(name, target, merge):
    return ("<domainsnapshot><name>%s</name><disks><disk name='%s' snapshot='external'>"
            "<on_delete merge='%s'/></disk></disks></domainsnapshot>" % (name, target, merge))


class DeleteTestCase(SnapshotTestCase):
    def delete(self, snap, flags=0, timeout=120):
        """Delete; when it answers a job, waits for its end (must complete)."""
        path = self.h.call(snap, S, 'Delete', (flags,), 't', timeout=timeout)
        if path != '/':
            self.assertIn('/job/snapshot_2edelete_2d', path)
            self.assertEqual(self.h.get_property(path, J, 'Type'), 'snapshot-delete')
            q.wait_until(lambda: self.h.get_property(path, J, 'State') in ('completed', 'failed', 'canceled'), timeout,
                         'the delete job %s ends' % path)
            self.assertEqual(self.h.get_property(path, J, 'State'), 'completed',
                             self.h.get_property(path, J, 'Error'))
            self.assertEqual(self.h.get_property(path, J, 'Cur'), self.h.get_property(path, J, 'End'))
        return path

    def check_delete(self, snap, flags=0):
        return self.h.call(snap, S, 'CheckDelete', (flags,), 't')

    def names(self, dom):
        # the object path encodes the name; no second call that could race a delete
        prefix = dom + '/snapshot/'
        return sorted(self._decode(p[len(prefix):]) for p in self.dprop(dom, 'Snapshots'))

    @staticmethod
    def _decode(element):
        """sd_bus_path_decode() of one element."""
        out, i = b'', 0
        while i < len(element):
            if element[i] == '_' and i + 2 < len(element):
                out += bytes([int(element[i + 1:i + 3], 16)])
                i += 3
            else:
                out += element[i].encode()
                i += 1
        return out.decode()

    def frozen(self, snap, target='vda'):
        root = ET.fromstring(self.h.call(snap, S, 'GetXMLDesc', (0,), 't'))
        for disk in root.findall('./domain/devices/disk'):
            if disk.find('target').get('dev') == target:
                return disk.find('source').get('file')
        return None

    def assert_metadata_files_exist(self, dom):
        for p in self.dprop(dom, 'Snapshots'):
            root = ET.fromstring(self.h.call(p, S, 'GetXMLDesc', (0,), 't'))
            for src in root.iter('source'):
                f = src.get('file')
                if f:
                    self.assertTrue(os.path.exists(f), '%s names %s, which is gone' %
                                    (self.h.get_property(p, S, 'Name'), f))

    @staticmethod
    def layers(k, bulk=None):
        """What a file holding layers 0..k-1 reads: pattern 0xA0+i at i MiB
        (LEN bytes), plus bulk (byte, offset, length, first layer it belongs
        to) when k is past that layer."""
        patterns = [(0xA0 + i, i * MiB, LEN) for i in range(k)]
        if bulk and k > bulk[3]:
            patterns.append(bulk[:3])
        return patterns

    def assert_all(self, dom, expected, n_layers, msg='', bulk=None):
        """expected: {snapshot name: k} — its frozen file holds patterns
        0..k-1. The active file holds 0..n_layers-1. Each is compared
        whole against a reference of exactly those patterns."""
        for name, k in expected.items():
            snap = self.snap_path(dom, name)
            f = self.frozen(snap)
            self.assertTrue(os.path.exists(f), '%s: %s froze %s, which is gone' % (msg, name, f))
            self.assert_layer(f, [(0xA0 + i, i * MiB) for i in range(k)], [i * MiB for i in range(k, n_layers)],
                              '%s %s' % (msg, name))
            self.assert_disk_is(f, self.layers(k, bulk), '%s %s' % (msg, name))
        active = self.active(dom)['vda']
        self.assert_layer(active, [(0xA0 + i, i * MiB) for i in range(n_layers)], [], msg + ' active')
        self.assert_disk_is(active, self.layers(n_layers, bulk), msg + ' active')
        self.assert_check_clean(*self.chain_files(active))
        self.assert_disks_agree(dom, msg)
        self.assert_metadata_files_exist(dom)

    def offline_chain(self, name, n, xml=None):
        """A shut-off domain with snapshots s1..sn (external), pattern k
        written before s(k+1); returns (dom, base)."""
        h = self.h
        base = h.create_image(name + '.qcow2')
        dom = h.define_domain(name, [q.Disk('vda', base)])
        for k in range(n):
            q.qemu_io_write_pattern(self.active(dom)['vda'], 0xA0 + k, k * MiB, LEN)
            self.create(dom, (xml or {}).get(k + 1) or snap_xml('s%d' % (k + 1)), DISK_ONLY)
        q.qemu_io_write_pattern(self.active(dom)['vda'], 0xA0 + n, n * MiB, LEN)
        return dom, base


class ExternalOfflineTest(DeleteTestCase):
    def test_linear_middle_leaf_root(self):
        h = self.h
        dom, base = self.offline_chain('lin', 3, {3: on_delete_xml('s3', 'vda', 'backward')})
        expected = {'s1': 1, 's2': 2, 's3': 3}
        self.assert_all(dom, expected, 4, 'before')
        s1, s2, s3 = (self.snap_path(dom, n) for n in ('s1', 's2', 's3'))
        o2 = h.image_path('lin.s1')  # s1's overlay, frozen by s2
        self.assertEqual(self.frozen(s2), o2)

        ok, reason, needed = self.check_delete(s2)
        self.assertTrue(ok, reason)
        self.assertGreater(needed, 0)

        # middle, forward: s2's overlay goes into s2's frozen file
        rec = h.record_signals()
        self.delete(s2)
        del expected['s2']
        self.assertEqual(self.names(dom), ['s1', 's3'])
        self.assertEqual(h.get_property(s3, S, 'Parent'), s1)
        self.assertEqual(h.get_property(s1, S, 'Children'), [s3])
        self.assertEqual(self.frozen(s3), o2, 's3 now freezes the file s2 froze')
        self.assertFalse(os.path.exists(h.image_path('lin.s2')))
        rec.wait_for(lambda s: s.member == 'InterfacesRemoved' and s.args[0] == s2)
        rec.wait_for_property(s3, 'Parent', s1, interface=S)
        rec.wait_for_property(s1, 'Children', [s3], interface=S)
        rec.wait_for_property(dom, 'Snapshots', [s1, s3], interface=D)
        self.assert_all(dom, expected, 4, 'after s2')

        # current leaf, backward (its XML says so)
        self.assertTrue(h.get_property(s3, S, 'IsCurrent'))
        f3 = self.frozen(s3)
        rec = h.record_signals()
        self.delete(s3)
        rec.wait_for_property(dom, 'CurrentSnapshot', s1, interface=D)
        rec.wait_for_property(s1, 'IsCurrent', True, interface=S)
        del expected['s3']
        self.assertEqual(self.names(dom), ['s1'])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s1)
        self.assertTrue(h.get_property(s1, S, 'IsCurrent'))
        self.assertFalse(os.path.exists(f3), 'backward: the frozen file goes')
        self.assert_all(dom, expected, 4, 'after s3')

        # root: the last one
        self.delete(s1)
        self.assertEqual(self.names(dom), [])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/')
        self.assertEqual(self.active(dom)['vda'], base)
        self.assert_all(dom, {}, 4, 'after s1')

        # the daemon agrees after a restart
        h.restart_daemon()
        self.assertEqual(self.names(dom), [])

    def test_two_branches_backward(self):
        """Two overlays on one frozen file (a revert's branch): forward is
        impossible, backward streams into both."""
        h = self.h
        dom, base = self.offline_chain('br', 2)
        s1, s2 = self.snap_path(dom, 's1'), self.snap_path(dom, 's2')
        f2 = self.frozen(s2)
        # The branch a revert to s2 makes: R on s2's frozen file, and a
        # snapshot 'side' taken there (frozen R, overlay R2).
        r = h.image_path('branch.qcow2')
        r2 = h.image_path('branch2.qcow2')
        q.qemu_img_create(r, backing=f2)
        q.qemu_io_write_pattern(r, 0xEE, 5 * MiB, LEN)
        q.qemu_img_create(r2, backing=r)
        xml = snap_xml('side', disks=[('vda', 'external', r2)], parent='s2', state='shutoff')
        xml = xml.replace('</domainsnapshot>', "<domain type='kvm'><name>br</name><memory>131072</memory>"
                          "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                          "<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
                          "</domainsnapshot>" % r)
        h.call(dom, D, 'CreateSnapshot', (xml, 1), 'st')
        side = self.snap_path(dom, 'side')
        ok, reason, needed = self.check_delete(s2)
        self.assertTrue(ok, reason)
        self.delete(s2)
        self.assertFalse(os.path.exists(f2), 'nothing needs the frozen file any more')
        self.assertEqual(h.get_property(side, S, 'Parent'), s1)
        self.assert_all(dom, {'s1': 1}, 3, 'after s2')
        # the branch kept its own data and everything below it
        self.assertEqual(self.frozen(side), r)
        self.assert_layer(r, [(0xA0, 0), (0xA1, MiB), (0xEE, 5 * MiB)], [2 * MiB], 'branch')
        self.assertEqual(self.chain_files(r)[1:], [base])
        self.assert_check_clean(r, r2)
        # s1's overlay (it was s2's frozen file) is now the file that replaced it
        root = ET.fromstring(h.call(s1, S, 'GetXMLDesc', (0,), 't'))
        self.assertEqual(root.find('./disks/disk/source').get('file'), h.image_path('br.s2'))
        # s1 forward is impossible now (two files on its frozen file): backward
        self.delete(s1)
        self.assert_layer(r, [(0xA0, 0), (0xA1, MiB), (0xEE, 5 * MiB)], [2 * MiB], 'branch after s1')
        self.assert_all(dom, {}, 3, 'after s1')
        self.assertEqual(self.names(dom), ['side'])


class ExternalLiveTest(DeleteTestCase):
    def live_chain(self, name, n, xml=None):
        h = self.h
        base = h.create_image(name + '.qcow2')
        dom = h.define_domain(name, [q.Disk('vda', base)])
        self.start(dom)
        for k in range(n):
            self.write(dom, 'vda', 0xA0 + k, k * MiB)
            self.create(dom, (xml or {}).get(k + 1) or snap_xml('s%d' % (k + 1)), DISK_ONLY)
        self.write(dom, 'vda', 0xA0 + n, n * MiB)
        return dom, base

    def assert_live(self, dom, n_layers):
        for k in range(n_layers):
            self.h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)

    def test_live_every_position(self):
        h = self.h
        dom, base = self.live_chain('lv', 4, {2: on_delete_xml('s2', 'vda', 'backward')})
        expected = {'s1': 1, 's2': 2, 's3': 3, 's4': 4}
        self.assert_all(dom, expected, 5, 'before')
        s1, s2, s3, s4 = (self.snap_path(dom, n) for n in ('s1', 's2', 's3', 's4'))

        # middle, backward: s2's frozen file streamed into the file above
        # it, which QEMU runs as an intermediate layer
        f2 = self.frozen(s2)
        self.delete(s2)
        del expected['s2']
        self.assertFalse(os.path.exists(f2))
        self.assertEqual(h.get_property(s3, S, 'Parent'), s1)
        self.assert_all(dom, expected, 5, 'after s2')
        self.assert_live(dom, 5)

        # current leaf, forward: active commit + pivot
        active = self.active(dom)['vda']
        f4 = self.frozen(s4)
        self.delete(s4)
        del expected['s4']
        self.assertEqual(self.active(dom)['vda'], f4)
        self.assertFalse(os.path.exists(active))
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s3)
        self.assert_all(dom, expected, 5, 'after s4')
        self.assert_live(dom, 5)
        # the guest writes on into the new active file
        self.write(dom, 'vda', 0xA5, 5 * MiB)

        # root, forward: non-active commit into the base
        self.delete(s1)
        del expected['s1']
        self.assertEqual(h.get_property(s3, S, 'Parent'), '/')
        self.assertEqual(self.frozen(s3), h.image_path('lv.s1') if os.path.exists(h.image_path('lv.s1')) else base)
        self.assert_all(dom, expected, 6, 'after s1')
        self.assert_live(dom, 6)

        self.delete(s3)
        self.assertEqual(self.names(dom), [])
        self.assertEqual(self.active(dom)['vda'], base)
        self.assert_all(dom, {}, 6, 'after s3')
        self.assert_live(dom, 6)
        self.stop(dom)
        self.assert_all(dom, {}, 6, 'stopped')


# What the qsnapd started after a crash in Delete does with the journal
# (daemon/snapshot-delete.c, recovery_step()): its log line, %s = the victim.
STAYS = None    # no journal yet: nothing to recover, the snapshot stays
AGAIN = "finishing the interrupted delete of snapshot '%s' by merging again"
MERGED = "finished the interrupted delete of snapshot '%s' (the merge had completed)"
STORED = "finished the interrupted delete of snapshot '%s' (its metadata were stored)"
ROLLED_BACK = "rolled back the interrupted delete of snapshot '%s'"


class CrashTest(DeleteTestCase):
    """kill -9 of qsnapd at each step (QSNAPD_TEST_CRASH_AT), restart: each
    point has its one outcome, written beside it (the recovery's log line;
    with AGAIN, MERGED, STORED the snapshot ends deleted, with STAYS it is
    still there and is deleted afterwards); then the data (whole disks),
    chains, metadata and files are checked, and no journal is left."""

    # point                     the recovery
    OFFLINE_FORWARD = (
        ('delete:start',    STAYS),    # before the journal: nothing was touched
        ('delete:intent',   AGAIN),    # journal written, nothing merged: the delete runs again
        ('delete:commit',   AGAIN),    # before qemu-img commit
        ('delete:merged',   MERGED),   # every merge done, metadata not stored: recorded from the journal
        ('delete:metadata', STORED),   # metadata stored: only the files are left to remove
    )
    OFFLINE_BACKWARD = (
        ('delete:intent',   AGAIN),
        ('delete:rebase',   AGAIN),    # before qemu-img rebase of the overlay onto F's backing
        # between the data-copying rebase (the header names its -b json: spec of
        # /proc/self/fd/N files) and the header-only one: the recovery writes the
        # real name from the journal, then finds the merge complete
        ('delete:rebase-name', MERGED),
        ('delete:merged',   MERGED),
        ('delete:metadata', STORED),
    )
    LIVE = (
        # (point, merge), the recovery: s2, a middle snapshot
        (('delete:intent',   'forward'),  AGAIN),
        (('delete:commit',   'forward'),  AGAIN),    # before QEMU's block-commit
        (('delete:pending',  'forward'),  MERGED),   # QEMU's commit waits to be finalized: adopted, finalized
        (('delete:merged',   'forward'),  MERGED),
        (('delete:metadata', 'forward'),  STORED),
        (('delete:stream',   'backward'), AGAIN),    # before QEMU's block-stream
        (('delete:pending',  'backward'), MERGED),
    )
    LIVE_CURRENT = (
        # s3, the current leaf: an active commit
        ('delete:active-commit', AGAIN),
        ('delete:ready',    MERGED),   # READY, not pivoted: the recovery pivots it
        ('delete:pending',  MERGED),   # pivoted, not finalized
    )
    INTERNAL = (
        # (live, point), the recovery: internal snapshot i1 of i0, i1, i2
        ((False, 'delete:intent'),          AGAIN),
        ((False, 'delete:snapshot'),        AGAIN),    # before qemu-img snapshot -d
        ((False, 'delete:metadata'),        STORED),
        ((True,  'delete:intent'),          AGAIN),
        ((True,  'delete:snapshot-delete'), AGAIN),    # before QEMU's snapshot-delete job
        ((True,  'delete:metadata'),        STORED),
    )

    def journal(self, dom):
        return os.path.join(self.h.state_dir, 'ops', self.uuid(dom) + '.snapshot-delete')

    def crash_and_recover(self, dom, snap, vname, point, recovery, after_crash=None):
        """Crashes qsnapd at point in Delete of snap, starts a new one and
        waits for its recovery: the log line, and with AGAIN the delete
        that runs again to its end. after_crash() runs while no qsnapd
        does."""
        h = self.h
        mark, _ = h.crash_at(point, snap, S, 'Delete', (0,), 't', start_again=after_crash is None)
        if after_crash:
            after_crash()
            h.start_daemon()
        if recovery is STAYS:
            self.assertNotIn('a snapshot delete was interrupted', h.daemon_log_since(mark), point)
            self.assertFalse(os.path.exists(self.journal(dom)), point)
            return
        h.wait_for_log(r"a snapshot delete was interrupted; checking how far it got", mark)
        h.wait_for_log(re.escape(recovery % vname), mark, timeout=60)
        if recovery == AGAIN:
            h.wait_for_log(r"snapshot '%s' deleted\." % re.escape(vname), mark, timeout=60)
        log = h.daemon_log_since(mark)
        for other in (AGAIN, MERGED, STORED, ROLLED_BACK):
            if other != recovery:
                self.assertNotIn(other % vname, log, '%s: a second verdict' % point)
        # every job the recovery ran (a merge again, an adopted one) completed
        for j in self.dprop(dom, 'Jobs'):
            q.wait_until(lambda: h.get_property(j, J, 'State') in ('completed', 'failed', 'canceled'), 60,
                         '%s: job %s ends' % (point, j))
            self.assertEqual(h.get_property(j, J, 'State'), 'completed', '%s: %s' % (point, j))
        self.assertFalse(os.path.exists(self.journal(dom)), '%s: journal left behind' % point)

    def assert_no_orphans(self, dom, what):
        """Every image in the folder is in a chain the domain or one of its
        snapshots still reads: a delete leaves no file behind."""
        used = set(self.chain_files(self.active(dom)['vda']))
        for p in self.dprop(dom, 'Snapshots'):
            used.update(self.chain_files(self.frozen(p)))
        prefix = self.h.get_property(dom, D, 'Name')
        left = sorted(f for f in os.listdir(self.h.images_dir)
                      if f.startswith(prefix + '.') and self.h.image_path(f) not in used)
        self.assertEqual(left, [], '%s: files nothing reads any more' % what)

    def header_names(self, name):
        """{file: the backing name its header holds} of domain name's
        images, each read alone (qemu-img info follows no backing name; no
        bus call: it would start qsnapd)."""
        prefix = name + '.'
        names = {}
        for f in sorted(os.listdir(self.h.images_dir)):
            if f.startswith(prefix):
                names[f] = q.qemu_img_info(self.h.image_path(f)).get('backing-filename')
        return names

    def run_crash(self, point, recovery, live, merge='forward', victim=2):
        h = self.h
        name = ('c%s%s%s' % (point.split(':')[1], 'l' if live else 'o', merge[0])).replace('-', '')
        name += str(victim)
        vname = 's%d' % victim
        xml = {victim: on_delete_xml(vname, 'vda', merge)}
        if live:
            dom, base = ExternalLiveTest.live_chain(self, name, 3, xml)
        else:
            dom, base = self.offline_chain(name, 3, xml)
        victim_path = self.snap_path(dom, vname)
        after_crash = None
        if point == 'delete:rebase-name':
            def after_crash():
                # the window is real: the overlay's header names qemu-img's descriptors
                spec = [n for n in self.header_names(name).values() if n and n.startswith('json:')]
                self.assertEqual(len(spec), 1, '%s: %s' % (point, self.header_names(name)))
                self.assertIn('/proc/self/fd/', spec[0], point)
        mark = self.h.daemon_log_mark()
        self.crash_and_recover(dom, victim_path, vname, point, recovery, after_crash)
        if after_crash:
            self.assertRegex(self.h.daemon_log_since(mark), r"wrote the backing name \S+ into \S+ \(the rebase", point)
        # whatever the point, every header names a real file: a plain name
        for f, n in self.header_names(name).items():
            if n:
                self.assertTrue(n.startswith('/') and os.path.exists(n), '%s: %s names %r' % (point, f, n))
        expected = {k: v for k, v in {'s1': 1, 's2': 2, 's3': 3}.items() if k != vname}
        if recovery is STAYS:
            self.assertEqual(self.names(dom), ['s1', 's2', 's3'], point)
            self.assert_all(dom, {'s1': 1, 's2': 2, 's3': 3}, 4, 'crash at %s, before deleting again' % point)
            self.delete(victim_path)
        self.assertEqual(self.names(dom), sorted(expected), point)
        self.assert_all(dom, expected, 4, 'crash at %s' % point)
        self.assert_no_orphans(dom, 'crash at %s' % point)
        # the tree: s1 <- s3, or s1 <- s2 with s2 current
        s1 = self.snap_path(dom, 's1')
        survivor = self.snap_path(dom, 's3' if victim == 2 else 's2')
        self.assertEqual(h.get_property(survivor, S, 'Parent'), s1, point)
        self.assertEqual(h.get_property(s1, S, 'Children'), [survivor], point)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), survivor, point)
        root = ET.fromstring(h.call(survivor, S, 'GetXMLDesc', (0,), 't'))
        self.assertEqual(root.findtext('parent/name'), 's1', point)
        self.assertEqual(self.stray_state_files(dom), [], point)
        if live:
            for k in range(4):
                h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN, 'crash at %s' % point)

    def test_offline_forward(self):
        for point, recovery in self.OFFLINE_FORWARD:
            with self.subTest(point=point):
                self.run_crash(point, recovery, False, 'forward')

    def test_offline_backward(self):
        for point, recovery in self.OFFLINE_BACKWARD:
            with self.subTest(point=point):
                self.run_crash(point, recovery, False, 'backward')

    def test_offline_backward_two_branches(self):
        """Backward into two overlays of F (a revert's branch beside the
        chain), qsnapd killed after the first data-copying rebase, before
        its header-only one: the recovery writes that overlay's real name,
        F is still read by the other one, so the delete runs again (the
        rebased overlay is no overlay of F any more) and ends."""
        h = self.h
        point = 'delete:rebase-name'
        dom, base = self.offline_chain('cbranch', 2)
        s1, s2 = self.snap_path(dom, 's1'), self.snap_path(dom, 's2')
        f2 = self.frozen(s2)
        r = h.image_path('cbranch.r.qcow2')
        r2 = h.image_path('cbranch.r2.qcow2')
        q.qemu_img_create(r, backing=f2)
        q.qemu_io_write_pattern(r, 0xEE, 5 * MiB, LEN)
        q.qemu_img_create(r2, backing=r)
        xml = snap_xml('side', disks=[('vda', 'external', r2)], parent='s2', state='shutoff')
        xml = xml.replace('</domainsnapshot>', "<domain type='kvm'><name>cbranch</name><memory>131072</memory>"
                          "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                          "<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
                          "</domainsnapshot>" % r)
        h.call(dom, D, 'CreateSnapshot', (xml, 1), 'st')
        side = self.snap_path(dom, 'side')

        def after_crash():
            names = self.header_names('cbranch')
            spec = [f for f, n in names.items() if n and n.startswith('json:')]
            self.assertEqual(len(spec), 1, names)
            # the other overlay of F still names F
            self.assertEqual(sorted(n for n in names.values() if n == f2), [f2], names)
        mark = h.daemon_log_mark()
        self.crash_and_recover(dom, s2, 's2', point, AGAIN, after_crash)
        self.assertRegex(h.daemon_log_since(mark), r"wrote the backing name \S+ into \S+ \(the rebase")
        for f, n in self.header_names('cbranch').items():
            if n:
                self.assertTrue(n.startswith('/') and os.path.exists(n), '%s names %r' % (f, n))
        self.assertFalse(os.path.exists(f2), 'nothing needs the frozen file any more')
        self.assertEqual(self.names(dom), ['s1', 'side'])
        self.assertEqual(h.get_property(side, S, 'Parent'), s1)
        self.assert_all(dom, {'s1': 1}, 3, 'after s2')
        self.assertEqual(self.frozen(side), r)
        self.assert_layer(r, [(0xA0, 0), (0xA1, MiB), (0xEE, 5 * MiB)], [2 * MiB], 'branch')
        self.assert_disk_is(r, [(0xA0, 0, LEN), (0xA1, MiB, LEN), (0xEE, 5 * MiB, LEN)], 'branch')
        self.assertEqual(self.chain_files(r)[1:], [base])
        self.assert_check_clean(r, r2)

    def test_live(self):
        for (point, merge), recovery in self.LIVE:
            with self.subTest(point=point, merge=merge):
                self.run_crash(point, recovery, True, merge)
        for point, recovery in self.LIVE_CURRENT:
            with self.subTest(point=point, victim=3):
                self.run_crash(point, recovery, True, 'forward', victim=3)

    def test_internal(self):
        h = self.h
        for (live, point), recovery in self.INTERNAL:
            with self.subTest(point=point, live=live):
                tag = ('l' if live else 'o') + point.split(':')[1].replace('-', '')
                a = h.create_image('ci%s.qcow2' % tag)
                dom = h.define_domain('ci' + tag, [q.Disk('vda', a)])
                if live:
                    self.start(dom)
                for k in range(3):
                    if live:
                        self.write(dom, 'vda', 0xA0 + k, k * MiB)
                    else:
                        q.qemu_io_write_pattern(a, 0xA0 + k, k * MiB, LEN)
                    self.create(dom, snap_xml('i%d' % k))
                self.crash_and_recover(dom, self.snap_path(dom, 'i1'), 'i1', point, recovery)
                self.assertEqual(self.names(dom), ['i0', 'i2'], point)
                self.assertEqual(qemu_img_snapshot_tags(a), ['i0', 'i2'], point)
                i0, i2 = self.snap_path(dom, 'i0'), self.snap_path(dom, 'i2')
                self.assertEqual(h.get_property(i2, S, 'Parent'), i0, point)
                self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i2, point)
                self.assertEqual(self.stray_state_files(dom), [], point)
                self.assert_internal_is(a, 'i0', self.layers(1), point)
                self.assert_internal_is(a, 'i2', self.layers(3), point)
                self.assert_disks_agree(dom, point)
                if live:
                    self.assertEqual(self.dprop(dom, 'State'), 'running', point)
                    for k in range(3):
                        h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN, point)
                    self.stop(dom)
                self.assert_check_clean(a)
                self.assert_disk_is(a, self.layers(3), point)

    def test_killed_during_qemu_img_commit(self):
        """qsnapd killed (not at a crash point) while a throttled qemu-img
        commit runs: qemu-img dies with it, the restarted qsnapd merges
        again and finishes."""
        h = self.h
        dom, base = self.offline_chain('kq', 3)
        q.qemu_io_write_pattern(self.frozen(self.snap_path(dom, 's3')), 0x77, 8 * MiB, 8 * MiB)
        s2 = self.snap_path(dom, 's2')
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_DELETE_SPEED': str(2 * MiB)})
        job = h.call(s2, S, 'Delete', (0,), 't')
        self.assertTrue(q.spin(lambda: 0 < h.get_property(job, J, 'Cur') < 100, 10), 'the commit did not move')
        pids = [p for p in q._pids_mentioning(h.image_path('kq.s2')) if 'qemu-img' in (q._proc_cmdline(p) or '')]
        self.assertTrue(pids, 'no qemu-img commit seen')
        h.kill_daemon()
        q.wait_until(lambda: not any(q._alive(p) for p in pids), 10, 'qemu-img ends with the qsnapd that ran it')
        h.start_daemon()
        self.assertTrue(q.spin(lambda: not os.path.exists(self.journal(dom)) and 's2' not in self.names(dom), 60))
        q.wait_until(lambda: all(h.get_property(j, J, 'State') != 'running' for j in self.dprop(dom, 'Jobs')), 60,
                     'every job of the domain ended')
        self.assertEqual(self.names(dom), ['s1', 's3'])
        self.assert_all(dom, {'s1': 1, 's3': 3}, 4, 'after the restart', bulk=(0x77, 8 * MiB, 8 * MiB, 2))
        self.assert_layer(self.frozen(self.snap_path(dom, 's3')), [(0x77, 8 * MiB)], [], 'the bulk')
        with open(h.daemon_log, errors='replace') as f:
            log = f.read()
        self.assertIn("finishing the interrupted delete of snapshot 's2' by merging again", log)
        self.assertIn('commit -p -r %d' % (2 * MiB), log)

    def test_sigterm_during_merge(self):
        """SIGTERM (systemctl stop) while a merge runs: qsnapd exits cleanly,
        QEMU runs on, and the next qsnapd finishes the delete."""
        h = self.h
        dom, base = ExternalLiveTest.live_chain(self, 'st', 3, {})
        self.write(dom, 'vda', 0x77, 8 * MiB, 8 * MiB)
        s3 = self.snap_path(dom, 's3')
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_DELETE_SPEED': str(MiB)})
        job = h.call(s3, S, 'Delete', (0,), 't')
        q.wait_until(lambda: h.get_property(job, J, 'Cur') > 0, 10, 'the throttled merge moved (Cur > 0)')
        h.restart_daemon(kill=False)
        self.assertEqual(h.daemon_exit_problems(), [])
        self.assertTrue(q.spin(lambda: 's3' not in self.names(dom) and not os.path.exists(self.journal(dom)), 60))
        q.wait_until(lambda: all(h.get_property(j, J, 'State') not in ('running', 'ready')
                                 for j in self.dprop(dom, 'Jobs')), 60, 'every job of the domain ended')
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_all(dom, {'s1': 1, 's2': 2}, 4, 'after SIGTERM', bulk=(0x77, 8 * MiB, 8 * MiB, 3))
        for k in range(4):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)
        h.verify_pattern_live(dom, 'vda', 0x77, 8 * MiB, 8 * MiB)

    def test_abort_and_qemu_killed_during_merge(self):
        """A slow active commit (s3, the current leaf): Abort ends the job
        canceled and the snapshot stays, deletable again; then QEMU is
        killed during a second attempt: the job fails, the snapshot stays,
        and is deleted once the domain runs again."""
        h = self.h
        dom, base = ExternalLiveTest.live_chain(self, 'ab', 3, {})
        # 24 MiB: more than QEMU's mirror copies in one burst (16 MiB), so
        # its throttle sleeps ~16 s before the rest, and the job cannot be
        # READY (and pivoting by itself) when Abort comes.
        bulk = (0x77, 8 * MiB, 24 * MiB, 3)
        self.write(dom, 'vda', *bulk[:3])
        s3 = self.snap_path(dom, 's3')
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_DELETE_SPEED': str(MiB)})

        job = h.call(s3, S, 'Delete', (0,), 't')
        self.assertNotEqual(job, '/')
        q.wait_until(lambda: h.get_property(job, J, 'Cur') > 0, 10, 'the throttled merge moved (Cur > 0)')
        self.assertEqual(h.get_property(job, J, 'State'), 'running')
        h.call(job, J, 'Abort', (0,), 't')
        # without ASYNC, Abort returns when the job is over (libvirt)
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        self.assertIn('s3', self.names(dom))
        self.assertFalse(os.path.exists(os.path.join(h.state_dir, 'ops', self.uuid(dom) + '.snapshot-delete')))
        ok, reason, _ = self.check_delete(s3)
        self.assertTrue(ok, reason)
        # (s3's own frozen file took part of the commit: decisions.md)
        self.assert_all(dom, {'s1': 1, 's2': 2}, 4, 'after abort', bulk=bulk)
        for k in range(4):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)

        # again, and QEMU dies in the middle
        pid = h.qemu_pid(dom)
        job = h.call(s3, S, 'Delete', (0,), 't')
        q.wait_until(lambda: h.get_property(job, J, 'Cur') > 0, 10, 'the throttled merge moved (Cur > 0)')
        os.kill(pid, 9)
        q.wait_until(lambda: h.get_property(job, J, 'State') not in ('running', 'ready'), 30, 'the merge job ends')
        self.assertEqual(h.get_property(job, J, 'State'), 'failed')
        q.wait_until(lambda: self.dprop(dom, 'State') == 'crashed', 30, 'the domain whose QEMU was killed is crashed')
        self.assertIn('s3', self.names(dom))
        self.assertFalse(os.path.exists(os.path.join(h.state_dir, 'ops', self.uuid(dom) + '.snapshot-delete')))
        self.assert_all(dom, {'s1': 1, 's2': 2}, 4, 'after QEMU died', bulk=bulk)

        # deletable again, shut off (qemu-img) and the data is all there
        h.restart_daemon(kill=False)
        self.delete(s3)
        self.assertEqual(self.names(dom), ['s1', 's2'])
        self.assert_all(dom, {'s1': 1, 's2': 2}, 4, 'deleted after all', bulk=bulk)
        self.assert_layer(self.active(dom)['vda'], [(0x77, 8 * MiB)], [], 'the bulk')

class LiveTreeTest(DeleteTestCase):
    def test_branch_and_memory(self):
        """Running: s2's frozen file has a second branch (not the one QEMU
        runs): backward streams into the running chain and rebases the
        branch with qemu-img; a memory file goes with its snapshot."""
        h = self.h
        dom, base = ExternalLiveTest.live_chain(self, 'lt', 2)
        s1, s2 = self.snap_path(dom, 's1'), self.snap_path(dom, 's2')
        f2 = self.frozen(s2)
        r = h.image_path('ltbranch.qcow2')
        r2 = h.image_path('ltbranch2.qcow2')
        q.qemu_img_create(r, backing=f2)
        q.qemu_io_write_pattern(r, 0xEE, 5 * MiB, LEN)
        q.qemu_img_create(r2, backing=r)
        xml = snap_xml('side', disks=[('vda', 'external', r2)], parent='s2', state='shutoff')
        xml = xml.replace('</domainsnapshot>', "<domain type='kvm'><name>lt</name><memory>131072</memory>"
                          "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                          "<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
                          "</domainsnapshot>" % r)
        h.call(dom, D, 'CreateSnapshot', (xml, 1), 'st')
        side = self.snap_path(dom, 'side')
        # a full-system snapshot on top: memory file + overlay
        mem = h.image_path('lt.mem')
        h.call(dom, D, 'CreateSnapshot', (snap_xml('m3', memory='external', memory_file=mem), 0), 'st')
        m3 = self.snap_path(dom, 'm3')
        self.assertTrue(os.path.exists(mem))

        self.delete(s2)
        self.assertFalse(os.path.exists(f2))
        self.assertEqual(h.get_property(side, S, 'Parent'), s1)
        self.assert_layer(r, [(0xA0, 0), (0xA1, MiB), (0xEE, 5 * MiB)], [2 * MiB], 'branch')
        self.assertEqual(self.chain_files(r)[1:], self.chain_files(self.frozen(s1)))
        self.assert_check_clean(r, r2)
        for k in range(3):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)
        self.assert_disks_agree(dom)
        self.assert_metadata_files_exist(dom)

        # the memory file goes with its snapshot
        self.delete(m3)
        self.assertFalse(os.path.exists(mem))
        for k in range(3):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)
        self.assert_disks_agree(dom)
        self.stop(dom)
        self.assert_all(dom, {'s1': 1}, 3, 'stopped')


class NoSpaceTest(DeleteTestCase):
    def test_no_space(self):
        h = self.h
        mnt = os.path.join(h.images_dir, 'small')
        with mounted_tmpfs(mnt, '12M'):
            base = os.path.join(mnt, 'ns.qcow2')
            q.qemu_img_create(base)
            dom = h.define_domain('ns', [q.Disk('vda', base)])
            q.qemu_io_write_pattern(base, 0xA0, 0, LEN)
            self.create(dom, snap_xml('s1'), DISK_ONLY)
            o1 = self.active(dom)['vda']
            q.qemu_io_write_pattern(o1, 0xA1, MiB, 4 * MiB)
            self.create(dom, snap_xml('s2'), DISK_ONLY)
            s1 = self.snap_path(dom, 's1')
            ok, reason, needed = self.check_delete(s1)
            self.assertTrue(ok, reason)
            self.assertGreaterEqual(needed, 4 * MiB)
            # forward: what s1's overlay holds on its own, as qemu-img measure says
            spec = json.dumps({'driver': 'qcow2', 'file': {'driver': 'file', 'filename': o1}, 'backing': None})
            measured = json.loads(subprocess.run(['qemu-img', 'measure', '-U', '--output=json', '-O', 'qcow2',
                                                  'json:' + spec], check=True, capture_output=True,
                                                 text=True).stdout)['required']
            self.assertEqual(needed, measured, 'bytes_needed is not what qemu-img measure says')
            filler = os.path.join(mnt, 'filler')
            st = os.statvfs(mnt)
            with open(filler, 'wb') as f:
                f.write(b'x' * (st.f_bavail * st.f_frsize - 2 * MiB))
            ok, reason, needed2 = self.check_delete(s1)
            self.assertFalse(ok)
            self.assertIn('free', reason)
            self.assertEqual(needed2, needed)
            with self.unchanged(dom, extra_dirs=(mnt,)):
                with self.assertDBusError(E + 'NoSpace') as cm:
                    h.call(s1, S, 'Delete', (0,), 't')
            self.assertEqual(cm.exception.message, reason)
            os.unlink(filler)
            self.delete(s1)
            self.assertEqual(self.names(dom), ['s2'])
            active = self.active(dom)['vda']
            self.assert_layer(active, [(0xA0, 0), (0xA1, MiB)], [], 'active')
            self.assert_check_clean(*self.chain_files(active))
            h.call(dom, D, 'Undefine', (1,), 't')


class ForeignOverlayTest(DeleteTestCase):
    def test_unrecorded_overlay_keeps_its_backing(self):
        """A qcow2 beside the domain's files that no metadata names (an old
        revert branch, another domain on a shared base) and that is based on
        the frozen file: forward is impossible, the backward merge leaves
        that file alone and keeps what it reads."""
        h = self.h
        dom, base = self.offline_chain('fo', 2)
        s1, s2 = self.snap_path(dom, 's1'), self.snap_path(dom, 's2')
        f2 = self.frozen(s2)
        stray = h.image_path('stray.qcow2')
        q.qemu_img_create(stray, backing=f2)
        q.qemu_io_write_pattern(stray, 0xEE, 6 * MiB, LEN)
        before = os.stat(stray)
        self.delete(s2)
        self.assertTrue(os.path.exists(f2), 'the stray overlay still reads it')
        self.assertEqual(os.stat(stray).st_mtime_ns, before.st_mtime_ns, 'a file nobody named was touched')
        self.assert_layer(stray, [(0xA0, 0), (0xA1, MiB), (0xEE, 6 * MiB)], [2 * MiB], 'stray')
        self.assert_all(dom, {'s1': 1}, 3, 'after s2')
        # s1: its frozen file is the base of f2 too: it stays as well
        self.delete(s1)
        self.assertTrue(os.path.exists(base))
        self.assert_layer(stray, [(0xA0, 0), (0xA1, MiB), (0xEE, 6 * MiB)], [2 * MiB], 'stray after s1')
        self.assert_all(dom, {}, 3, 'after s1')


class RevertTreeTest(DeleteTestCase):
    """A tree with branches made by Revert; after each delete every
    remaining snapshot still reverts to its own data."""

    def revert_reads(self, dom, name, present, absent):
        snap = self.snap_path(dom, name)
        self.h.call(snap, S, 'Revert', (4,), 't', timeout=90)
        active = self.active(dom)['vda']
        self.assert_layer(active, present, absent, 'revert to %s' % name)
        self.assert_check_clean(*self.chain_files(active))
        self.assert_disks_agree(dom, 'revert to %s' % name)

    def test_branched_tree(self):
        h = self.h
        a = h.create_image('rt.qcow2')
        dom = h.define_domain('rt', [q.Disk('vda', a)])
        w = lambda p, off: q.qemu_io_write_pattern(self.active(dom)['vda'], p, off, LEN)
        w(0xA0, 0)
        self.create(dom, snap_xml('s1'), DISK_ONLY)
        w(0xA1, MiB)
        self.create(dom, snap_xml('s2'), DISK_ONLY)
        w(0xA2, 2 * MiB)
        h.call(self.snap_path(dom, 's1'), S, 'Revert', (0,), 't')
        w(0xB1, 3 * MiB)
        self.create(dom, snap_xml('s3'), DISK_ONLY)
        w(0xB2, 4 * MiB)
        self.create(dom, snap_xml('s4'), DISK_ONLY)
        w(0xB3, 5 * MiB)
        s1 = self.snap_path(dom, 's1')
        self.assertEqual(sorted(h.get_property(s1, S, 'Children')),
                         sorted([self.snap_path(dom, 's2'), self.snap_path(dom, 's3')]))
        want = {
            's1': ([(0xA0, 0)], [MiB, 3 * MiB]),
            's2': ([(0xA0, 0), (0xA1, MiB)], [2 * MiB, 3 * MiB]),
            's3': ([(0xA0, 0), (0xB1, 3 * MiB)], [MiB, 4 * MiB]),
            's4': ([(0xA0, 0), (0xB1, 3 * MiB), (0xB2, 4 * MiB)], [MiB, 5 * MiB]),
        }

        # a node with two children (s2's branch and s3's): backward into both
        ok, reason, _ = self.check_delete(s1)
        self.assertTrue(ok, reason)
        self.delete(s1)
        del want['s1']
        self.assertEqual(self.names(dom), ['s2', 's3', 's4'])
        self.assertEqual(h.get_property(self.snap_path(dom, 's2'), S, 'Parent'), '/')
        self.assert_metadata_files_exist(dom)
        for name, (present, absent) in want.items():
            self.revert_reads(dom, name, present, absent)

        # s3: the root of its branch now, not current (the last revert made s4 current)
        self.delete(self.snap_path(dom, 's3'))
        del want['s3']
        self.assert_metadata_files_exist(dom)
        self.assertEqual(h.get_property(self.snap_path(dom, 's4'), S, 'Parent'), '/')
        for name, (present, absent) in want.items():
            self.revert_reads(dom, name, present, absent)

        # the current one, then the last
        self.assertTrue(h.get_property(self.snap_path(dom, 's4'), S, 'IsCurrent'))
        self.delete(self.snap_path(dom, 's4'))
        self.revert_reads(dom, 's2', *want['s2'])
        self.delete(self.snap_path(dom, 's2'))
        self.assertEqual(self.names(dom), [])
        active = self.active(dom)['vda']
        self.assert_layer(active, [(0xA0, 0), (0xA1, MiB)], [2 * MiB], 'last')
        self.assert_check_clean(*self.chain_files(active))
        self.assert_disks_agree(dom)


class TwoDiskTest(DeleteTestCase):
    def test_two_disks_live_mixed_directions(self):
        """vda merges forward, vdb backward (its <on_delete>), in one job
        whose Cur/End add up both steps; both disks keep every layer."""
        h = self.h
        a = h.create_image('td-a.qcow2')
        b = h.create_image('td-b.qcow2')
        dom = h.define_domain('td', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        for k in range(3):
            self.write(dom, 'vda', 0xA0 + k, k * MiB)
            self.write(dom, 'vdb', 0xB0 + k, k * MiB)
            xml = ("<domainsnapshot><name>t%d</name><disks><disk name='vda' snapshot='external'/>"
                   "<disk name='vdb' snapshot='external'><on_delete merge='backward'/></disk></disks>"
                   "</domainsnapshot>" % (k + 1))
            self.create(dom, xml, DISK_ONLY)
        self.write(dom, 'vda', 0xA3, 3 * MiB)
        self.write(dom, 'vdb', 0xB3, 3 * MiB)
        t2 = self.snap_path(dom, 't2')
        rec = h.record_signals()
        job = self.delete(t2)
        self.assertEqual(h.get_property(job, J, 'End'), 200)
        # Completed comes after the last Progress: once it is recorded, so is that one
        # (the State read above can return before queued signals were dispatched)
        rec.wait_for(lambda s: s.member == 'Completed' and s.path == job)
        progress = [s.args for s in rec.records if s.member == 'Progress' and s.path == job]
        self.assertTrue(progress, 'no Progress signal')
        self.assertEqual(list(progress[-1]), [200, 200])
        self.assertEqual(self.names(dom), ['t1', 't3'])
        for target, p in (('vda', 0xA0), ('vdb', 0xB0)):
            for k in range(4):
                h.verify_pattern_live(dom, target, p + k, k * MiB, LEN)
            t3 = self.snap_path(dom, 't3')
            f = self.frozen(t3, target)
            self.assert_layer(f, [(p + i, i * MiB) for i in range(3)], [3 * MiB], target)
            self.assert_check_clean(*self.chain_files(self.active(dom)[target]))
        self.assert_disks_agree(dom)
        self.assert_metadata_files_exist(dom)
        self.stop(dom)
        self.assert_disks_agree(dom)


class MixedTreeTest(DeleteTestCase):
    def test_internal_and_external(self):
        """Internal snapshots below and above an external one."""
        h = self.h
        a = h.create_image('mx.qcow2')
        dom = h.define_domain('mx', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xA0, 0)
        self.create(dom, snap_xml('i1'))                 # internal, tag in mx.qcow2
        self.write(dom, 'vda', 0xA1, MiB)
        self.create(dom, snap_xml('e1'), DISK_ONLY)      # mx.qcow2 becomes a backing file
        self.write(dom, 'vda', 0xA2, 2 * MiB)
        self.create(dom, snap_xml('i2'))                 # tag in the overlay mx.e1
        self.write(dom, 'vda', 0xA3, 3 * MiB)
        i1, e1, i2 = (self.snap_path(dom, n) for n in ('i1', 'e1', 'i2'))

        # i1's tag lives in a file QEMU holds read-only now
        ok, reason, _ = self.check_delete(i1)
        self.assertFalse(ok)
        with self.unchanged(dom):
            with self.assertDBusError(E + 'Unsupported') as cm:
                h.call(i1, S, 'Delete', (0,), 't')
        self.assertEqual(cm.exception.message, reason)
        # e1: its overlay holds i2's tag (forward would drop it) and so does
        # the only overlay of the frozen file (backward would spoil it)
        ok, reason, _ = self.check_delete(e1)
        self.assertFalse(ok)
        self.assertIn('internal snapshots', reason)
        with self.unchanged(dom):
            with self.assertDBusError(E + 'OperationInvalid') as cm:
                h.call(e1, S, 'Delete', (0,), 't')
        self.assertEqual(cm.exception.message, reason)

        # i2 live (its tag is in the active file), then e1 can go
        self.assertEqual(self.delete(i2), '/')
        self.assertEqual(qemu_img_snapshot_tags(h.image_path('mx.e1')), [])
        self.delete(e1)
        self.assertEqual(self.active(dom)['vda'], a)
        for k in range(4):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)
        # i1 is in the active file again: live delete works now
        self.assertEqual(qemu_img_snapshot_tags(a), ['i1'])
        self.assertEqual(self.delete(i1), '/')
        self.assertEqual(qemu_img_snapshot_tags(a), [])
        self.assertEqual(self.names(dom), [])
        self.stop(dom)
        self.assert_check_clean(a)
        self.assert_layer(a, [(0xA0 + k, k * MiB) for k in range(4)], [], 'all layers')


class InternalTest(DeleteTestCase):
    def test_internal_offline(self):
        h = self.h
        a = h.create_image('int.qcow2')
        dom = h.define_domain('int', [q.Disk('vda', a)])
        for k in range(3):
            q.qemu_io_write_pattern(a, 0xA0 + k, k * MiB, LEN)
            self.create(dom, snap_xml('i%d' % k))
        self.assertEqual(qemu_img_snapshot_tags(a), ['i0', 'i1', 'i2'])
        i1 = self.snap_path(dom, 'i1')
        path = self.delete(i1)
        self.assertEqual(path, '/')
        self.assertEqual(qemu_img_snapshot_tags(a), ['i0', 'i2'])
        self.assertEqual(h.get_property(self.snap_path(dom, 'i2'), S, 'Parent'), self.snap_path(dom, 'i0'))
        self.assert_check_clean(a)
        # the other tags keep their data, whole, and so does the disk
        self.assert_internal_is(a, 'i0', self.layers(1), 'i0 after deleting i1')
        self.assert_internal_is(a, 'i2', self.layers(3), 'i2 after deleting i1')
        self.assert_disk_is(a, self.layers(3), 'the disk after deleting i1')
        r = q.run([q.QEMU_IMG, 'snapshot', '-a', 'i0', a])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_layer(a, [(0xA0, 0)], [MiB, 2 * MiB], 'i0 applied')
        self.assert_disk_is(a, self.layers(1), 'i0 applied')

    def test_internal_live(self):
        h = self.h
        a = h.create_image('live.qcow2')
        dom = h.define_domain('live', [q.Disk('vda', a)])
        self.start(dom)
        for k in range(3):
            self.write(dom, 'vda', 0xA0 + k, k * MiB)
            self.create(dom, snap_xml('l%d' % k))
        self.write(dom, 'vda', 0xA3, 3 * MiB)
        self.assertEqual(qemu_img_snapshot_tags(a), ['l0', 'l1', 'l2'])
        self.assertEqual(self.delete(self.snap_path(dom, 'l1')), '/')
        self.assertEqual(qemu_img_snapshot_tags(a), ['l0', 'l2'])
        self.assertEqual(self.names(dom), ['l0', 'l2'])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), self.snap_path(dom, 'l2'))
        self.assertEqual(h.get_property(self.snap_path(dom, 'l2'), S, 'Parent'), self.snap_path(dom, 'l0'))
        # the guest reads every layer, the tags left keep theirs, whole
        for k in range(4):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN, 'after the live delete of l1')
        self.assert_internal_is(a, 'l0', self.layers(1), 'l0 after deleting l1')
        self.assert_internal_is(a, 'l2', self.layers(3), 'l2 after deleting l1')
        self.stop(dom)
        self.assert_check_clean(a)
        self.assert_disk_is(a, self.layers(4), 'the disk after the live delete')


class FlagsTest(DeleteTestCase):
    def test_flags(self):
        h = self.h
        dom, base = self.offline_chain('fl', 3)
        s1, s2, s3 = (self.snap_path(dom, n) for n in ('s1', 's2', 's3'))
        for bad in (8, 1 << 40, CHILDREN | CHILDREN_ONLY):
            with self.unchanged(dom):
                with self.assertDBusError(E + 'InvalidArgument'):
                    h.call(s2, S, 'Delete', (bad,), 't')
        with self.assertDBusError(E + 'InvalidArgument'):
            self.check_delete(s2, 8)
        files = sorted(os.listdir(h.images_dir))
        # METADATA_ONLY + CHILDREN_ONLY: s3's metadata goes, its files stay
        self.assertEqual(self.delete(s2, METADATA_ONLY | CHILDREN_ONLY), '/')
        self.assertEqual(self.names(dom), ['s1', 's2'])
        self.assertTrue(h.get_property(s2, S, 'IsCurrent'))
        self.assertEqual(sorted(os.listdir(h.images_dir)), files)
        # CHILDREN: s1 and s2 with their data merged away
        self.delete(s1, CHILDREN)
        self.assertEqual(self.names(dom), [])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/')
        active = self.active(dom)['vda']
        self.assert_layer(active, [(0xA0 + i, i * MiB) for i in range(4)], [], 'active')
        self.assert_check_clean(*self.chain_files(active))
        self.assert_disks_agree(dom)


class LiveFlagsTest(DeleteTestCase):
    def test_children_and_children_only_live(self):
        h = self.h
        dom, base = ExternalLiveTest.live_chain(self, 'lc', 4)
        s1, s2 = self.snap_path(dom, 's1'), self.snap_path(dom, 's2')
        # CHILDREN_ONLY on s2: s3 and s4 go (an active commit among them), s2 stays and becomes current
        self.delete(s2, CHILDREN_ONLY)
        self.assertEqual(self.names(dom), ['s1', 's2'])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s2)
        self.assert_all(dom, {'s1': 1, 's2': 2}, 5, 'CHILDREN_ONLY')
        for k in range(5):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)
        # CHILDREN on s1: everything
        self.delete(s1, CHILDREN)
        self.assertEqual(self.names(dom), [])
        self.assertEqual(self.active(dom)['vda'], base)
        self.assert_all(dom, {}, 5, 'CHILDREN')
        for k in range(5):
            h.verify_pattern_live(dom, 'vda', 0xA0 + k, k * MiB, LEN)


class RefusalTest(DeleteTestCase):
    def test_denied(self):
        h = self.h
        a = h.create_image('run.qcow2')
        dom = h.define_domain('run', [q.Disk('vda', a)])
        self.start(dom)
        self.create(dom, snap_xml('e1'), DISK_ONLY)
        e1 = self.snap_path(dom, 'e1')
        ok, reason, needed = self.check_delete(e1)
        self.assertTrue(ok, reason)
        for flags in (0, METADATA_ONLY):
            with self.unchanged(dom):
                rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, e1, S, 'Delete', 't', str(flags))
                self.assertNotEqual(rc, 0)
                self.assertIn('Access denied', err + out)
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, e1, S, 'CheckDelete', 't', str(METADATA_ONLY))
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.delete(e1, METADATA_ONLY), '/')
        self.assertEqual(self.names(dom), [])

    def test_busy_with_a_block_job(self):
        h = self.h
        dom, base = ExternalLiveTest.live_chain(self, 'bz', 2)
        s1 = self.snap_path(dom, 's1')
        job = h.call(dom, D, 'BlockPull', ('vda', 1024, 0), 'stt')
        try:
            ok, reason, _ = self.check_delete(s1, METADATA_ONLY)
            self.assertFalse(ok)
            self.assertIn('job', reason)
            with self.assertDBusError(E + 'Busy') as cm:
                h.call(s1, S, 'Delete', (0,), 't')
            self.assertEqual(cm.exception.message, reason)
            self.assertEqual(self.names(dom), ['s1', 's2'])
        finally:
            h.call(job, J, 'Abort', (0,), 't')
        q.wait_until(lambda: self.check_delete(s1)[0], 30, 'CheckDelete allows s1 once the aborted job is gone')
        self.delete(s1)
        self.assertEqual(self.names(dom), ['s2'])
        self.assert_all(dom, {'s2': 2}, 3, 'after the job')

    def test_job_on_another_disk(self):
        """Locks are per disk (DESIGN 8): a pull on vdb holds no delete of a
        snapshot of vda only; one that covers vdb is Busy (found by
        bench/load.py: every such delete was Busy)."""
        h = self.h
        a = h.create_image('jd-a.qcow2')
        b_base = h.create_image('jd-b-base.qcow2')
        q.qemu_io_write_pattern(b_base, 0xB0, 0, 16 * MiB)
        b = h.create_image('jd-b.qcow2', None, backing=b_base)
        dom = h.define_domain('jd', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.write(dom, 'vda', 0xA0, 0)
        self.create(dom, "<domainsnapshot><name>only-a</name><disks><disk name='vda' snapshot='external'/>"
                         "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>", DISK_ONLY)
        self.create(dom, snap_xml('both'), DISK_ONLY)
        self.write(dom, 'vda', 0xA1, MiB)
        only_a, both = self.snap_path(dom, 'only-a'), self.snap_path(dom, 'both')
        job = h.call(dom, D, 'BlockPull', ('vdb', 64 * 1024, 0), 'stt')
        try:
            ok, reason, _ = self.check_delete(both)
            self.assertFalse(ok)
            self.assertIn('vdb', reason)
            with self.assertDBusError(E + 'Busy') as cm:
                h.call(both, S, 'Delete', (0,), 't')
            self.assertEqual(cm.exception.message, reason)
            self.assertEqual(self.names(dom), ['both', 'only-a'])
            ok, reason, _ = self.check_delete(only_a)
            self.assertTrue(ok, reason)
            self.delete(only_a)
            self.assertEqual(self.names(dom), ['both'])
            self.assertEqual(h.get_property(job, J, 'State'), 'running')
        finally:
            h.call(job, J, 'Abort', (0,), 't')
        for k in range(2):
            h.verify_pattern_live(dom, "vda", 0xA0 + k, k * MiB, LEN)
        h.verify_pattern_live(dom, 'vdb', 0xB0, 0, LEN)
        self.assert_disks_agree(dom)
        self.assert_metadata_files_exist(dom)

    def test_gone_file_refused(self):
        h = self.h
        dom, base = self.offline_chain('gone', 2)
        s2 = self.snap_path(dom, 's2')
        f2 = self.frozen(s2)
        # s2's overlay is s3's... take s1's overlay away from under s2: rename it
        os.rename(f2, f2 + '.moved')
        try:
            ok, reason, _ = self.check_delete(s2)
            self.assertFalse(ok)
            self.assertIn(f2, reason)
            with self.unchanged(dom):
                with self.assertDBusError(E + 'OperationInvalid') as cm:
                    h.call(s2, S, 'Delete', (0,), 't')
            self.assertEqual(cm.exception.message, reason)
        finally:
            os.rename(f2 + '.moved', f2)


if __name__ == '__main__':
    q.main()
