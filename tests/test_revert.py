#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot.Revert and CheckRevert end to end (DESIGN.md sections 2, 3, 7,
8): the real qsnapd, polkitd and QEMU on small qcow2 images.

Each layer gets its own data pattern, written live into the guest's disk at
its own offset; after every revert the live disk (HMP qemu-io in the guest's
QEMU) or, for a shut-off domain, the active file (qemu-io on the host) reads
the snapshot's patterns and zeros where later layers wrote, and qemu-img
check is clean on every file.

- external disk-only, a branched tree: create s1, s2, revert to s1 (shut
  off), create s3 on the new branch, revert to s2 (running: refused without
  FORCE, CheckRevert says why; with FORCE), to s3 with RUNNING, to s1 again
  (a second overlay): every old branch stays revertible, no file of another
  chain changes, <revertDisks> names the new overlays, IsCurrent /
  CurrentSnapshot / State / Disks follow with PropertiesChanged.
- internal: live snapshot-load (running; PAUSED), offline qemu-img snapshot
  -a, refusals (a running domain to a shut-off snapshot without FORCE; a
  snapshot whose file is now another chain's backing file).
- external with memory: QEMU restarted with incoming migration from the
  memory file; the recorded state (running / paused) or RUNNING / PAUSED;
  a changed configuration needs FORCE.
- bad flags, uid 65534 denied (nothing changes), a block job makes it Busy.
- kill -9 of qsnapd at each step of a revert (QSNAPD_TEST_CRASH_AT): the
  restarted qsnapd finishes or rolls back; definition, files and metadata
  agree, no orphan overlays, the data is the snapshot's.
"""

import os
import xml.etree.ElementTree as ET

import qsnaptest as q
from test_snapshots import D, DISK_ONLY, E, LEN, S, SnapshotTestCase, snap_xml

MiB = 1 << 20
RUNNING, PAUSED, FORCE = 1, 2, 4


class RevertTestCase(SnapshotTestCase):
    def revert(self, snap, flags=0, timeout=90):
        return self.h.call(snap, S, 'Revert', (flags,), 't', timeout=timeout)

    def check(self, snap, flags=0):
        return tuple(self.h.call(snap, S, 'CheckRevert', (flags,), 't'))

    def snap(self, dom, name, flags=DISK_ONLY, xml=None):
        return self.create(dom, xml or snap_xml(name), flags)

    def refused_revert(self, dom, snap, flags, error, message_has=None):
        ok, reason = self.check(snap, flags)
        self.assertFalse(ok, 'CheckRevert(%d) allowed what Revert must refuse' % flags)
        with self.unchanged(dom):
            with self.assertDBusError(error) as cm:
                self.revert(snap, flags)
        self.assertEqual(cm.exception.message, reason, 'Revert and CheckRevert disagree')
        if message_has:
            self.assertIn(message_has, reason)
        return reason

    def live_reads(self, dom, present, absent, what=''):
        for pattern, offset in present:
            self.assertTrue(self.h.verify_pattern_live(dom, 'vda', pattern, offset, LEN),
                            '%s: live disk lacks 0x%02x at %d' % (what, pattern, offset))
        for offset in absent:
            self.assertTrue(self.h.verify_pattern_live(dom, 'vda', 0, offset, LEN),
                            '%s: live disk has data at %d, where a later layer wrote' % (what, offset))

    def revert_overlays(self):
        return sorted(f for f in os.listdir(self.h.images_dir) if '-revert' in f)

    def assert_all_clean(self):
        for f in os.listdir(self.h.images_dir):
            p = os.path.join(self.h.images_dir, f)
            if f.endswith('.mem'):
                continue
            ok, out = q.qemu_img_check(p, force_share=True)
            self.assertTrue(ok, 'qemu-img check %s: %s' % (p, out))

    def revert_disks(self, snap):
        root = ET.fromstring(self.h.call(snap, S, 'GetXMLDesc', (0,), 't'))
        rd = root.find('revertDisks')
        return {} if rd is None else {d.get('name'): d.find('source').get('file') for d in rd}


class ExternalTest(RevertTestCase):
    def _tree(self):
        """base <- a.s1 <- a.s2 (active): s1 froze 0xa1, s2 froze 0xa1+0xa2."""
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('ext', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xa1, 0)
        s1 = self.snap(dom, 's1')
        self.write(dom, 'vda', 0xa2, MiB)
        s2 = self.snap(dom, 's2')
        self.write(dom, 'vda', 0xa3, 2 * MiB)
        return a, dom, s1, s2

    def test_branched_tree(self):
        h = self.h
        a, dom, s1, s2 = self._tree()
        self.stop(dom)
        a_s1, a_s2 = h.image_path('a.s1'), h.image_path('a.s2')

        # s1, shut off: a new overlay on a.qcow2, the old branch intact.
        self.assertEqual(self.check(s1), (True, ''))
        rec = h.record_signals()
        self.revert(s1)
        ov1 = h.image_path('a.s1-revert1')
        self.assertEqual(self.active(dom), {'vda': ov1})
        self.assertEqual(self.chain_files(ov1), [ov1, a])
        self.assertEqual(os.stat(ov1).st_mode & 0o777, 0o600)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s1)
        self.assertTrue(self.props(s1)['IsCurrent'])
        self.assertFalse(self.props(s2)['IsCurrent'])
        self.assertEqual(self.revert_disks(s1), {'vda': ov1})
        self.assertEqual(self.revert_disks(s2), {})
        rec.wait_for_property(dom, 'CurrentSnapshot', s1, interface=D)
        rec.wait_for_property(dom, 'Disks', interface=D)
        rec.wait_for_property(s1, 'IsCurrent', True, interface=S)
        rec.wait_for_property(s2, 'IsCurrent', False, interface=S)
        rec.close()
        self.assert_layer(ov1, [(0xa1, 0)], [MiB, 2 * MiB], 'revert to s1')
        self.assert_layer(a_s2, [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], [], 'old branch')
        self.assert_disks_agree(dom, 'after revert to s1')

        # The new branch runs, gets data and a snapshot of its own.
        self.start(dom)
        self.live_reads(dom, [(0xa1, 0)], [MiB, 2 * MiB], 'running on the s1 branch')
        self.write(dom, 'vda', 0xb1, 3 * MiB)
        s3 = self.snap(dom, 's3')
        self.assertEqual(self.props(s3)['Parent'], s1)
        self.write(dom, 'vda', 0xb2, 4 * MiB)

        # s2 while running: FORCE needed, CheckRevert says so.
        reason = self.refused_revert(dom, s2, 0, E + 'OperationInvalid', 'FORCE')
        self.assertIn('running', reason)
        self.assertEqual(self.check(s2, FORCE), (True, ''))
        self.revert(s2, FORCE)
        ov2 = h.image_path('a.s2-revert1')
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertEqual(self.active(dom), {'vda': ov2})
        self.assertEqual(self.chain_files(ov2), [ov2, a_s1, a])
        self.assert_layer(ov2, [(0xa1, 0), (0xa2, MiB)], [2 * MiB, 3 * MiB, 4 * MiB], 'revert to s2')

        # s3 (on the branch made by the first revert), RUNNING.
        self.revert(s3, RUNNING)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.live_reads(dom, [(0xa1, 0), (0xb1, 3 * MiB)], [MiB, 2 * MiB, 4 * MiB], 'revert to s3')
        self.assert_disks_agree(dom, 'after revert to s3')
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s3)

        # s1 again with PAUSED and FORCE: a second overlay, the first one intact.
        self.revert(s1, FORCE | PAUSED)
        ov3 = h.image_path('a.s1-revert2')
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(self.active(dom), {'vda': ov3})
        self.assertEqual(self.revert_disks(s1), {'vda': ov3})
        h.call(dom, D, 'Resume')
        self.live_reads(dom, [(0xa1, 0)], [MiB, 2 * MiB, 3 * MiB, 4 * MiB], 'second revert to s1')
        self.stop(dom)
        # Every branch still holds its data.
        self.assert_layer(a_s2, [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], [3 * MiB], 'branch of s2')
        self.assert_layer(ov1, [(0xa1, 0), (0xb1, 3 * MiB)], [MiB], 'branch of s1 (first revert)')
        self.assert_layer(h.image_path('a.s3'), [(0xa1, 0), (0xb1, 3 * MiB), (0xb2, 4 * MiB)], [MiB], 'branch of s3')
        self.assertEqual(self.revert_overlays(), ['a.s1-revert1', 'a.s1-revert2', 'a.s2-revert1', 'a.s3-revert1'])
        self.assert_all_clean()
        self.assertEqual(self.stray_state_files(dom), [])

        # After a restart of qsnapd everything is as it was.
        before = (self.active(dom), self.dprop(dom, 'CurrentSnapshot'), self.revert_disks(s1))
        h.restart_daemon(kill=False)
        self.assertEqual((self.active(dom), self.dprop(dom, 'CurrentSnapshot'), self.revert_disks(s1)), before)


if __name__ == '__main__':
    q.main()
