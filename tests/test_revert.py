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
  with PAUSED (a second overlay): every old branch stays revertible, no file
  of another chain changes, <revertDisks> names the new overlays, IsCurrent /
  CurrentSnapshot / State / Disks follow with PropertiesChanged, and all of
  it survives a restart of qsnapd. Two disks (one raw) and a left-out one: the
  recorded definition (memory, vCPUs, disk set) is applied. BlockCommit
  with DELETE of a snapshot's frozen file: the metadata names the base that
  holds its data now, and the snapshot still reverts to its data.
- internal: live snapshot-load (running; PAUSED; into a QEMU started for it
  when shut off), offline qemu-img snapshot -a; refusals (a running domain to
  a shut-off snapshot without FORCE; a snapshot whose file is now another
  chain's backing file); a failing snapshot-load (restore-vm) is recovered:
  QemuFailed with QEMU's text, QEMU stopped, definition and metadata as
  before.
- external with memory: QEMU restarted with incoming migration from the
  memory file (a new QEMU, query-migrate completed); the recorded state
  (running / paused) or RUNNING / PAUSED; a memory file QEMU cannot load
  (QemuFailed, nothing changed, no new overlay); a changed configuration
  needs FORCE and QEMU then runs with the recorded memory size.
- refusals, each also answered by CheckRevert with the same text: bad flags,
  uid 65534 denied (nothing changes; CheckRevert is allowed), a block job or
  a snapshot in progress (Busy), a mixed snapshot (Unsupported), a missing
  frozen file, no recorded domain without FORCE; an attached domain (QEMU
  not launched by qsnapd) reverts in place only.
- kill -9 of qsnapd at each step of a revert (QSNAPD_TEST_CRASH_AT), for
  external disk-only, internal offline, internal live and into a QEMU
  started for the load, and external with memory: the restarted qsnapd
  finishes or rolls back (its log says which); definition, files and
  metadata agree, no orphan overlays, no journal left, the data is the
  snapshot's, and the next revert works.
"""

import contextlib
import os
import re
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

    def refused_revert(self, dom, snap, flags, error, message_has=None, fingerprint=True):
        ok, reason = self.check(snap, flags)
        self.assertFalse(ok, 'CheckRevert(%d) allowed what Revert must refuse' % flags)
        before = (self.dprop(dom, 'Disks'), self.dprop(dom, 'CurrentSnapshot'), self.dprop(dom, 'State'))
        with self.unchanged(dom) if fingerprint else contextlib.nullcontext():
            with self.assertDBusError(error) as cm:
                self.revert(snap, flags)
        self.assertEqual((self.dprop(dom, 'Disks'), self.dprop(dom, 'CurrentSnapshot'), self.dprop(dom, 'State')),
                         before)
        self.assertEqual(cm.exception.message, reason, 'Revert and CheckRevert disagree')
        if message_has:
            self.assertIn(message_has, reason)
        return reason

    def live_reads(self, dom, present, absent, what=''):
        for pattern, offset in present:
            self.h.verify_pattern_live(dom, 'vda', pattern, offset, LEN, '%s: live disk' % what)
        for offset in absent:
            self.h.verify_pattern_live(dom, 'vda', 0, offset, LEN, '%s: live disk (zeros where a later layer wrote)' % what)

    def revert_overlays(self):
        return sorted(f for f in os.listdir(self.h.images_dir) if '-revert' in f)

    def assert_all_clean(self):
        for f in os.listdir(self.h.images_dir):
            p = os.path.join(self.h.images_dir, f)
            if f.endswith(('.mem', '.img')):    # memory states, raw images
                continue
            q.qemu_img_check(p, force_share=True)

    # ---- guest RAM the test can write from the host
    RAM_ADDR = 32 * MiB          # a guest-physical address nothing in the guest uses (no OS boots)

    def ram_domain(self, name, disks, memory_mib=64):
        """A domain whose guest RAM is a file on the host: its <emulator> is
        a wrapper adding -object memory-backend-file,share=on (QEMU's own
        option; qsnapd launches whatever <emulator> names), so the test
        writes a marker into the running guest's memory by writing the file.
        Returns (domain path, RAM file)."""
        h = self.h
        ram = os.path.join(h.root, name + '.ram')
        wrapper = os.path.join(h.root, name + '-qemu')
        with open(wrapper, 'w') as f:
            f.write('#!/bin/sh\nexec %s "$@" -object memory-backend-file,id=qsnaptest-ram,size=%dM,mem-path=%s,'
                    'share=on -machine memory-backend=qsnaptest-ram\n' % (q.QEMU_SYSTEM, memory_mib, ram))
        os.chmod(wrapper, 0o755)
        return h.define_domain(name, disks, memory_mib=memory_mib, emulator=wrapper), ram

    def poke_ram(self, ram, marker):
        with open(ram, 'r+b') as f:
            f.seek(self.RAM_ADDR)
            f.write(marker)

    def assert_guest_ram(self, dom, marker, what):
        """The guest's RAM at RAM_ADDR, as QEMU reads it (QMP pmemsave, and
        HMP xp for the first bytes), is marker."""
        h = self.h
        out = os.path.join(h.root, 'pmemsave.bin')
        reply = h.qmp(dom, 'pmemsave', {'val': self.RAM_ADDR, 'size': len(marker), 'filename': out})
        self.assertEqual(reply, {'return': {}}, what)
        with open(out, 'rb') as f:
            seen = f.read()
        os.unlink(out)
        self.assertTrue(seen == marker, '%s: guest RAM at 0x%x reads %r..., expected %r...'
                        % (what, self.RAM_ADDR, seen[:16], marker[:16]))
        xp = h.hmp(dom, 'xp /8xb 0x%x' % self.RAM_ADDR)
        self.assertEqual([int(v, 16) for v in xp.split(':')[1].split()], list(marker[:8]), '%s: xp says %r' % (what, xp))

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
        self.assert_disk_is(ov1, [(0xa1, 0)], 'revert to s1')
        self.assert_disk_is(a_s2, [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], 'old branch')
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
        rec = h.record_signals()
        self.revert(s2, FORCE)
        rec.wait_for_property(dom, 'State', 'shutoff', interface=D)
        rec.wait_for_property(dom, 'CurrentSnapshot', s2, interface=D)
        rec.wait_for_property(s3, 'IsCurrent', False, interface=S)
        rec.wait_for_property(s2, 'IsCurrent', True, interface=S)
        rec.close()
        ov2 = h.image_path('a.s2-revert1')
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertEqual(self.active(dom), {'vda': ov2})
        self.assertEqual(self.chain_files(ov2), [ov2, a_s1, a])
        self.assert_layer(ov2, [(0xa1, 0), (0xa2, MiB)], [2 * MiB, 3 * MiB, 4 * MiB], 'revert to s2')
        self.assert_disk_is(ov2, [(0xa1, 0), (0xa2, MiB)], 'revert to s2')

        # s3 (on the branch made by the first revert), RUNNING.
        self.revert(s3, RUNNING)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.live_reads(dom, [(0xa1, 0), (0xb1, 3 * MiB)], [MiB, 2 * MiB, 4 * MiB], 'revert to s3')
        self.assert_disk_is(self.active(dom)['vda'], [(0xa1, 0), (0xb1, 3 * MiB)], 'revert to s3')
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
        self.assert_disk_is(a_s2, [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], 'branch of s2')
        self.assert_disk_is(ov1, [(0xa1, 0), (0xb1, 3 * MiB)], 'branch of s1 (first revert)')
        self.assert_disk_is(h.image_path('a.s3'), [(0xa1, 0), (0xb1, 3 * MiB), (0xb2, 4 * MiB)], 'branch of s3')
        self.assert_disk_is(ov3, [(0xa1, 0)], 'second revert to s1')
        self.assertEqual(self.revert_overlays(), ['a.s1-revert1', 'a.s1-revert2', 'a.s2-revert1', 'a.s3-revert1'])
        self.assert_all_clean()
        self.assertEqual(self.stray_state_files(dom), [])

        # After a restart of qsnapd everything is as it was.
        before = (self.active(dom), self.dprop(dom, 'CurrentSnapshot'), self.revert_disks(s1))
        h.restart_daemon(kill=False)
        self.assertEqual((self.active(dom), self.dprop(dom, 'CurrentSnapshot'), self.revert_disks(s1)), before)


    def test_revert_loop_leaves_one_overlay(self):
        """Reverting again and again (a CI farm's loop) keeps one revert
        overlay per snapshot: the one an earlier revert made, that nothing
        names any more, goes; one a later snapshot froze stays."""
        h = self.h
        a, dom, s1, s2 = self._tree()
        self.stop(dom)
        for k in range(3):
            self.revert(s1, RUNNING | FORCE)
            self.write(dom, 'vda', 0xc0 + k, 3 * MiB)   # the state each loop throws away
            self.live_reads(dom, [(0xa1, 0)], [MiB, 2 * MiB], 'loop %d' % k)
            overlays = self.revert_overlays()
            self.assertEqual(len(overlays), 1, 'loop %d: %s' % (k, overlays))
            self.assertEqual(self.revert_disks(s1), {'vda': h.image_path(overlays[0])}, 'loop %d' % k)
        # a snapshot on the revert overlay keeps it, as what that snapshot froze
        s3 = self.snap(dom, 's3')
        self.revert(s2, RUNNING | FORCE)
        self.revert(s1, RUNNING | FORCE)
        self.assertIn(overlays[0], self.revert_overlays(), 'the file s3 froze went away')
        self.revert(s3, RUNNING | FORCE)
        self.live_reads(dom, [(0xa1, 0), (0xc2, 3 * MiB)], [MiB, 2 * MiB], 'back to s3')
        self.assert_all_clean()

    def test_block_commit_delete_renames_in_the_metadata(self):
        """BlockCommit(DELETE) of s1's overlay into the base: the file s2
        froze is gone, so the metadata names the base (which holds its data
        now) and s2 still reverts to its own data."""
        h = self.h
        a, dom, s1, s2 = self._tree()
        a_s1 = h.image_path('a.s1')
        job = h.call(dom, D, 'BlockCommit', ('vda', a, a_s1, 0, 2), 'ssstt')   # DELETE
        q.wait_until(lambda: h.get_property(job, q.JOB_IFACE, 'State') in ('completed', 'failed', 'canceled'), 60,
                     'the commit job ends')
        self.assertEqual(h.get_property(job, q.JOB_IFACE, 'State'), 'completed')
        self.assertFalse(os.path.exists(a_s1), 'DELETE left the committed file')
        for snap in (s1, s2):
            xml = h.call(snap, S, 'GetXMLDesc', (0,), 't')
            self.assertNotIn(a_s1, xml, 'the metadata still names the deleted file')
        dom_xml = ET.fromstring(h.call(s2, S, 'GetXMLDesc', (0,), 't')).find('domain')
        self.assertEqual(dom_xml.find('devices/disk/source').get('file'), a, 'what s2 froze is in the base now')
        self.stop(dom)
        self.revert(s2, RUNNING)
        self.live_reads(dom, [(0xa1, 0), (0xa2, MiB)], [2 * MiB], 'after reverting to s2')
        self.assert_all_clean()

    def test_two_disks_and_the_recorded_definition(self):
        # Two disks taken externally, a third left out (snapshot='no'); the
        # domain is redefined afterwards (more memory, 2 vCPUs, a disk
        # added): a shut-off revert applies the recorded definition.
        h = self.h
        # vdb is raw: its revert overlay is a qcow2 on a raw file.
        a, b, c = h.create_image('a.qcow2'), h.create_image('b.img', fmt='raw'), h.create_image('c.qcow2')
        dom = h.define_domain('two', [q.Disk('vda', a), q.Disk('vdb', b, 'raw'), q.Disk('vdc', c)])
        self.start(dom)
        self.write(dom, 'vda', 0x11, 0)
        h.write_pattern_live(dom, 'vdb', 0x21, 0, LEN)
        s1 = self.snap(dom, 's1', DISK_ONLY, snap_xml('s1', disks=[('vdc', 'no')]))
        self.write(dom, 'vda', 0x12, MiB)
        h.write_pattern_live(dom, 'vdb', 0x22, MiB, LEN)
        self.stop(dom)
        d_img = h.create_image('d.qcow2')
        h.define_domain('two', [q.Disk('vda', h.image_path('a.s1')), q.Disk('vdb', h.image_path('b.s1')),
                                q.Disk('vdc', c), q.Disk('vdd', d_img)], memory_mib=160, vcpus=2)
        self.revert(s1)
        active = self.active(dom)
        self.assertEqual(active, {'vda': h.image_path('a.s1-revert1'), 'vdb': h.image_path('b.s1-revert1'),
                                  'vdc': c})
        self.assertEqual(q.qemu_img_info(active['vdb'])['backing-filename-format'], 'raw')
        self.assertEqual(self.revert_disks(s1), {'vda': active['vda'], 'vdb': active['vdb']})
        root = ET.fromstring(h.call(dom, D, 'GetXMLDesc', (2,), 't'))
        self.assertEqual(root.find('memory').text, str(128 * 1024))
        self.assertEqual(root.find('vcpu').text, '1')
        self.assertEqual(root.find('name').text, 'two')
        self.assert_layer(active['vda'], [(0x11, 0)], [MiB])
        for pattern, offset in ((0x21, 0), (0, MiB)):
            self.assertTrue(q.qemu_io_read_pattern(active['vdb'], pattern, offset, LEN), 'vdb at %d' % offset)
        for pattern, offset in ((0x21, 0), (0x22, MiB)):
            self.assertTrue(q.qemu_io_read_pattern(h.image_path('b.s1'), pattern, offset, LEN), 'b.s1 at %d' % offset)
        self.start(dom)
        self.assert_disks_agree(dom, 'two disks after the revert')
        self.assert_all_clean()


class InternalTest(RevertTestCase):
    def test_live_and_offline(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('int', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xc1, 0)
        i1 = self.snap(dom, 'i1', 0)           # running, qcow2: internal with memory
        self.assertEqual(self.props(i1)['Memory'], 'internal')
        self.write(dom, 'vda', 0xc2, MiB)
        i2 = self.snap(dom, 'i2', 0)
        self.write(dom, 'vda', 0xc3, 2 * MiB)
        pid = self.dprop(dom, 'UUID') and h.qmp(dom, 'query-status')['return']['status']

        # Live snapshot-load into the same QEMU.
        self.assertEqual(self.check(i1), (True, ''))
        self.revert(i1)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i1)
        self.assertTrue(self.props(i1)['IsCurrent'])
        self.live_reads(dom, [(0xc1, 0)], [MiB, 2 * MiB], 'live revert to i1')
        self.assertEqual(self.active(dom), {'vda': a})
        h.flush_live(dom, 'vda')
        self.assert_disk_is(a, [(0xc1, 0)], 'live revert to i1')

        # PAUSED: the guest stays stopped afterwards.
        self.revert(i2, PAUSED)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'paused')
        h.call(dom, D, 'Resume')
        self.live_reads(dom, [(0xc1, 0), (0xc2, MiB)], [2 * MiB], 'live revert to i2')
        h.flush_live(dom, 'vda')
        self.assert_disk_is(a, [(0xc1, 0), (0xc2, MiB)], 'live revert to i2')

        # Shut off: QEMU is started for the load and ends in the recorded state.
        self.stop(dom)
        self.revert(i1)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.live_reads(dom, [(0xc1, 0)], [MiB, 2 * MiB], 'revert of a shut-off domain to i1')
        self.write(dom, 'vda', 0xc4, 3 * MiB)

        # A disk-only internal snapshot taken shut off: qemu-img snapshot -a.
        self.stop(dom)
        o1 = self.snap(dom, 'o1', 0)
        self.assertEqual(self.props(o1)['State'], 'shutoff')
        self.start(dom)
        self.write(dom, 'vda', 0xc5, 4 * MiB)
        reason = self.refused_revert(dom, o1, 0, E + 'OperationInvalid', 'FORCE')
        self.revert(o1, FORCE)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assert_layer(a, [(0xc1, 0), (0xc4, 3 * MiB)], [MiB, 2 * MiB, 4 * MiB], 'offline revert to o1')
        self.assert_disk_is(a, [(0xc1, 0), (0xc4, 3 * MiB)], 'offline revert to o1')
        # every internal snapshot keeps its own point in time
        for tag, patterns in (('i1', [(0xc1, 0)]), ('i2', [(0xc1, 0), (0xc2, MiB)]),
                              ('o1', [(0xc1, 0), (0xc4, 3 * MiB)])):
            self.assert_internal_is(a, tag, patterns, 'after the offline revert')
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), o1)
        # Shut off to a running snapshot, PAUSED.
        self.revert(i2, PAUSED)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        h.call(dom, D, 'Resume')
        self.live_reads(dom, [(0xc1, 0), (0xc2, MiB)], [2 * MiB, 3 * MiB, 4 * MiB], 'revert to i2 from shut off')
        self.assert_all_clean()
        self.assertEqual(self.stray_state_files(dom), [])
        del reason, pid

    def test_internal_below_an_external_overlay_is_refused(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('intx', [q.Disk('vda', a)])
        self.start(dom)
        i1 = self.snap(dom, 'i1', 0)
        self.snap(dom, 'e1')                   # a.qcow2 is now e1's frozen file
        self.refused_revert(dom, i1, FORCE, E + 'OperationInvalid', 'no longer the disk\'s active file')


    def test_failed_load_is_recovered(self):
        # A snapshot recorded (REDEFINE) as having memory whose tag in the
        # image is disk-only: QEMU's snapshot-load fails and leaves the VM in
        # restore-vm; qsnapd stops it and reports QEMU's text.
        h = self.h
        a = h.create_image('a.qcow2')
        q.run([q.QEMU_IMG, 'snapshot', '-c', 'fake', a], check=True)
        dom = h.define_domain('fail', [q.Disk('vda', a)])
        fake = h.call(dom, D, 'CreateSnapshot', (snap_xml('fake', memory='internal', state='running',
                                                          disks=[('vda', 'internal')]), 1), 'st')
        self.start(dom)
        self.write(dom, 'vda', 0xf3, 0)
        self.assertEqual(self.check(fake), (False, self.check(fake)[1]))   # no recorded domain
        self.assertEqual(self.check(fake, FORCE), (True, ''))
        with self.assertDBusError(E + 'QemuFailed') as cm:
            self.revert(fake, FORCE)
        self.assertIn('disk-only snapshot', cm.exception.message)
        self.assertIn('shut off', cm.exception.message)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/')
        self.assertEqual(self.active(dom), {'vda': a})
        self.assertEqual(self.stray_state_files(dom), [])
        self.assert_layer(a, [(0xf3, 0)], [])
        self.start(dom)
        self.live_reads(dom, [(0xf3, 0)], [], 'after the failed load')


class MemoryTest(RevertTestCase):
    def test_external_with_memory(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('mem', [q.Disk('vda', a)], memory_mib=64)
        self.start(dom)
        self.write(dom, 'vda', 0xd1, 0)
        m1 = self.snap(dom, 'm1', 0, snap_xml('m1', memory='external', memory_file=h.image_path('m1.mem')))
        self.assertEqual(self.props(m1)['State'], 'running')
        self.write(dom, 'vda', 0xd2, MiB)
        h.call(dom, D, 'Pause')
        m2 = self.snap(dom, 'm2', 0, snap_xml('m2', memory='external', memory_file=h.image_path('m2.mem')))
        self.assertEqual(self.props(m2)['State'], 'paused')
        h.call(dom, D, 'Resume')
        self.write(dom, 'vda', 0xd3, 2 * MiB)

        def qemu_pid():
            return h.qemu_pid(dom)

        pid = qemu_pid()
        # Running to the recorded state (running): a new QEMU loaded the memory.
        self.assertEqual(self.check(m1), (True, ''))
        self.revert(m1)
        self.assertNotEqual(qemu_pid(), pid)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.assertEqual(h.qmp(dom, 'query-migrate')['return'].get('status'), 'completed')
        ov = h.image_path('a.m1-revert1')
        self.assertEqual(self.active(dom), {'vda': ov})
        self.assertEqual(self.revert_disks(m1), {'vda': ov})
        self.live_reads(dom, [(0xd1, 0)], [MiB, 2 * MiB], 'revert to m1')
        self.assert_disk_is(ov, [(0xd1, 0)], 'revert to m1')
        self.assert_disks_agree(dom, 'after revert to m1')

        # The paused snapshot comes back paused; RUNNING overrides.
        self.revert(m2)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'paused')
        self.revert(m2, RUNNING)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.live_reads(dom, [(0xd1, 0), (0xd2, MiB)], [2 * MiB], 'revert to m2')
        self.assert_disk_is(self.active(dom)['vda'], [(0xd1, 0), (0xd2, MiB)], 'revert to m2')
        # Shut off, PAUSED.
        self.stop(dom)
        self.revert(m1, PAUSED)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(self.active(dom), {'vda': h.image_path('a.m1-revert2')})
        h.call(dom, D, 'Resume')
        self.live_reads(dom, [(0xd1, 0)], [MiB, 2 * MiB], 'second revert to m1')

        # A memory file QEMU cannot load: QemuFailed with QEMU's text, the
        # domain shut off on its old disks, no new overlay, metadata as it was.
        mem = h.image_path('m2.mem')
        os.rename(mem, mem + '.good')
        with open(mem, 'wb') as f:
            f.write(b'QEVM' + b'\xff' * 4096)
        overlays = self.revert_overlays()
        disks = self.dprop(dom, 'Disks')
        try:
            with self.assertDBusError(E + 'QemuFailed') as cm:
                self.revert(m2)
        finally:
            os.replace(mem + '.good', mem)
        self.assertIn('QEMU', cm.exception.message)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertEqual(self.dprop(dom, 'Disks'), disks)
        self.assertEqual(self.revert_overlays(), overlays)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), m1)
        self.assertEqual(self.revert_disks(m2), {'vda': h.image_path('a.m2-revert2')})
        self.assertEqual(self.stray_state_files(dom), [])
        self.start(dom)

        # A running configuration the memory state does not fit: FORCE.
        self.stop(dom)
        h.define_domain('mem', [q.Disk('vda', self.active(dom)['vda'])], memory_mib=96)
        self.start(dom)
        reason = self.refused_revert(dom, m1, 0, E + 'OperationInvalid', 'memory')
        self.assertIn('FORCE', reason)
        self.revert(m1, FORCE)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        size = h.qmp(dom, 'query-memory-size-summary')['return']['base-memory']
        self.assertEqual(size, 64 * MiB)
        self.live_reads(dom, [(0xd1, 0)], [MiB, 2 * MiB], 'forced revert to m1')
        self.assert_all_clean()
        self.assertEqual(self.stray_state_files(dom), [])


class GuestRamTest(RevertTestCase):
    def test_memory_revert_restores_guest_ram(self):
        """A marker in guest RAM before a snapshot with memory, other RAM
        contents afterwards: after the revert QEMU reads the marker again,
        for an internal snapshot (snapshot-load into the running QEMU) and
        an external one (a new QEMU loading the memory file)."""
        h = self.h
        a = h.create_image('a.qcow2')
        dom, ram = self.ram_domain('ram', [q.Disk('vda', a)])
        self.start(dom)
        markers = {k: os.urandom(4096) for k in ('internal', 'after internal', 'external', 'after external')}
        self.poke_ram(ram, markers['internal'])
        self.assert_guest_ram(dom, markers['internal'], 'written through the RAM file')
        i1 = self.snap(dom, 'i1', 0)
        self.assertEqual(self.props(i1)['Memory'], 'internal')
        self.poke_ram(ram, markers['after internal'])
        self.assert_guest_ram(dom, markers['after internal'], 'changed after i1')
        self.revert(i1)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_guest_ram(dom, markers['internal'], 'after the revert to i1')

        self.poke_ram(ram, markers['external'])
        m1 = self.snap(dom, 'm1', 0, snap_xml('m1', memory='external', memory_file=h.image_path('m1.mem')))
        self.poke_ram(ram, markers['after external'])
        self.assert_guest_ram(dom, markers['after external'], 'changed after m1')
        pid = h.qemu_pid(dom)
        self.revert(m1)
        self.assertNotEqual(h.qemu_pid(dom), pid, 'the external revert did not start a new QEMU')
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_guest_ram(dom, markers['external'], 'after the revert to m1')
        self.assert_disk_is(self.active(dom)['vda'], [], 'the disk after the revert to m1')


class RefusalTest(RevertTestCase):
    def test_flags_auth_and_busy(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('ref', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xf1, 0)
        s1 = self.snap(dom, 's1')
        self.write(dom, 'vda', 0xf2, MiB)
        s2 = self.snap(dom, 's2')
        for flags in (8, 1 << 40, RUNNING | PAUSED):
            with self.subTest(flags=flags):
                with self.unchanged(dom):
                    with self.assertDBusError(E + 'InvalidArgument'):
                        self.revert(s1, flags)
                    with self.assertDBusError(E + 'InvalidArgument'):
                        self.check(s1, flags)

        # uid 65534: CheckRevert is a read; Revert is denied and changes nothing.
        with self.unchanged(dom):
            rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, s1, S, 'Revert', 't', str(FORCE))
            self.assertNotEqual(rc, 0)
            self.assertIn('Access denied', err + out)
            rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, s1, S, 'CheckRevert', 't', str(FORCE))
            self.assertEqual(rc, 0, err)
            self.assertIn('true', out)

        # A block job on the disk: Busy, with the job named.
        job = h.call(dom, D, 'BlockPull', ('vda', 64 * 1024, 0), 'stt')
        try:
            # (the pull itself writes into the active file meanwhile)
            reason = self.refused_revert(dom, s1, FORCE, E + 'Busy', 'block job', fingerprint=False)
        finally:
            h.call(job, q.JOB_IFACE, 'Abort', (0,), 't')
        # A snapshot being taken (a memory save slowed down): Busy.
        h.qmp(dom, 'migrate-set-parameters', {'max-bandwidth': 256 * 1024})
        pending = h.client.call_async(dom, D, 'CreateSnapshot',
                                      (snap_xml('slow', memory='external', memory_file=h.image_path('slow.mem')), 0),
                                      'st', timeout=90)
        self.assertTrue(q.spin(lambda: h.qmp(dom, 'query-migrate')['return'].get('status') == 'active', 10))
        ok, why = self.check(s1, FORCE)
        self.assertFalse(ok)
        self.assertIn('busy', why)
        with self.assertDBusError(E + 'Busy'):
            self.revert(s1, FORCE)
        self.assertFalse(pending.done(), 'the slow snapshot ended early; the check above proved nothing')
        pending.wait()
        # A snapshot mixing internal and external parts (REDEFINE): Unsupported.
        mixed = h.call(dom, D, 'CreateSnapshot', (snap_xml('mixed', memory='internal', state='running',
                                                           disks=[('vda', 'external', h.image_path('nowhere'))]), 1),
                       'st')
        self.refused_revert(dom, mixed, FORCE, E + 'Unsupported', 'mixes')
        # A missing frozen file: OperationInvalid, nothing touched.
        self.stop(dom)
        os.rename(a, a + '.away')
        try:
            self.refused_revert(dom, s1, 0, E + 'OperationInvalid', 'missing')
        finally:
            os.rename(a + '.away', a)
        self.revert(s2)
        self.assert_layer(self.active(dom)['vda'], [(0xf1, 0), (0xf2, MiB)], [])
        del reason


    def test_attached_domain(self):
        # A QEMU qsnapd did not launch: in place (internal, memory) only.
        h = self.h
        img = h.create_image('x.qcow2')
        sock = os.path.join(h.images_dir, 'ext.qmp')
        qemu = h.start_foreign_qemu(img, sock)
        self.addCleanup(lambda: (qemu.kill(), qemu.wait()))
        # DefineDomain answers once qsnapd has attached (it used to answer
        # at once: State turned running while the attach still held the
        # domain, and a snapshot right then was Busy).
        dom = h.define_domain('att', [q.Disk('vda', img)], monitor=sock)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        i1 = self.snap(dom, 'i1', 0)
        # (QEMU's output is not in our log: write, flush, read from the host)
        h.hmp(dom, 'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0x31 0 %d"' % LEN)
        h.flush_live(dom, 'vda')
        self.assertTrue(q.qemu_io_read_pattern(img, 0x31, 0, LEN))
        self.revert(i1)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        h.flush_live(dom, 'vda')
        self.assertTrue(q.qemu_io_read_pattern(img, 0, 0, LEN), 'attached, in place: the write is still there')
        # Anything that needs QEMU stopped or restarted: Unsupported.
        e1 = self.snap(dom, 'e1')
        self.refused_revert(dom, e1, FORCE, E + 'Unsupported', 'started elsewhere')


# What the qsnapd started after a crash in Revert logs (daemon/snapshot-revert.c,
# domain_recover_revert()).
EXT_ROLLED_BACK = 'rolled back a revert interrupted before the definition was switched'
EXT_FINISHED = 'finished a revert interrupted after the definition was switched'
OFF_ROLLED_BACK = 'rolled back a revert interrupted before QEMU was stopped (nothing changed)'
OFF_FINISHED = "finished an interrupted revert to internal snapshot 'o1' (shut off)"
LOAD_ROLLED_BACK = 'rolled back an interrupted revert that had not loaded anything yet'
LOAD_FINISHED = 'finished an interrupted revert (the snapshot was loaded already)'
LOAD_STOPPED = 'the QEMU started for the interrupted revert had not loaded the snapshot'
MEM_LOADED = 'the interrupted revert had loaded the memory state; the guest stays as it is'
MEM_LOADED_RUNS = 'the interrupted revert had loaded the memory state; the guest runs again'
MEM_LOADING = 'loading the memory state the interrupted revert had not asked for yet'
REVERT_VERDICTS = (MEM_LOADED, MEM_LOADED_RUNS, MEM_LOADING, EXT_ROLLED_BACK, EXT_FINISHED, OFF_ROLLED_BACK, 'finished an interrupted revert to internal',
                   LOAD_ROLLED_BACK, LOAD_FINISHED, LOAD_STOPPED, 'rolled back an interrupted revert (no QEMU')


class CrashTest(RevertTestCase):
    """kill -9 of qsnapd at each step of a revert (crash_point()): the
    restarted qsnapd finishes (definition switched) or rolls back, as
    written beside each step; its log line says which, and the state
    after is checked: data (live, and whole disks), chain, metadata."""

    def crash_revert(self, snap, flags, point, verdicts):
        """qsnapd killed at point; the next one's recovery logs every line
        of verdicts and no other verdict."""
        h = self.h
        mark, outcome = h.crash_at(point, snap, S, 'Revert', (flags,), 't')
        self.assertIsInstance(outcome, q.DBusCallError, 'Revert answered though qsnapd died at ' + point)
        h.wait_for_log(r'a revert to snapshot .* was interrupted; checking how far it got', mark)
        for line in verdicts:
            h.wait_for_log(re.escape(line), mark)
        log = h.daemon_log_since(mark)
        for other in REVERT_VERDICTS:
            if not any(other in line for line in verdicts):
                self.assertNotIn(other, log, '%s: a second verdict' % point)

    def assert_consistent(self, dom, msg, orphans=True):
        """Definition, files and metadata agree; no orphan overlay of dom
        (its image's name starts every overlay name); no journal."""
        h = self.h
        active = self.active(dom)['vda']
        prefix = os.path.basename(self.chain_files(active)[-1]).split('.')[0] + '.'
        for f in self.revert_overlays() if orphans else ():
            if not f.startswith(prefix):
                continue
            self.assertEqual(h.image_path(f), active, '%s: orphan overlay %s' % (msg, f))
        self.assertEqual(self.stray_state_files(dom), [], msg)
        self.assert_disks_agree(dom, msg)
        self.assert_all_clean()
        return active

    def test_external(self):
        # step -> (finished, state afterwards)
        steps = {'revert:intent': (False, 'running'),     # journal written, QEMU still runs the old chain
                 'revert:stopped': (False, 'shutoff'),    # QEMU stopped (FORCE), no overlay yet
                 'revert:overlays': (False, 'shutoff'),   # overlay made, definition not switched: it goes
                 'revert:switched': (True, 'shutoff'),    # definition names the new overlay: recorded
                 'revert:started': (True, 'running'),     # QEMU runs on it (RUNNING)
                 'revert:metadata': (True, 'running')}    # all but removing the journal
        h = self.h
        for step, (finished, state) in steps.items():
            with self.subTest(step=step):
                tag = step.split(':')[1]
                img = h.create_image('x%s.qcow2' % tag)
                dom = h.define_domain('x' + tag, [q.Disk('vda', img)])
                self.start(dom)
                self.write(dom, 'vda', 0xe1, 0)
                s1 = self.snap(dom, 's1')
                self.write(dom, 'vda', 0xe2, MiB)
                s2 = self.snap(dom, 's2')
                before = self.active(dom)['vda']
                self.crash_revert(s1, FORCE | RUNNING, step, [EXT_FINISHED if finished else EXT_ROLLED_BACK])
                self.assertEqual(self.dprop(dom, 'State'), state)
                active = self.assert_consistent(dom, step)
                ov = h.image_path('x%s.s1-revert1' % tag)
                if finished:
                    self.assertEqual(active, ov)
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s1)
                    self.assertTrue(self.props(s1)['IsCurrent'])
                    self.assertEqual(self.revert_disks(s1), {'vda': ov})
                else:
                    self.assertEqual(active, before)
                    self.assertFalse(os.path.exists(ov))
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s2)
                    self.assertEqual(self.revert_disks(s1), {})
                want = [(0xe1, 0)] + ([] if finished else [(0xe2, MiB)])
                if state == 'running':
                    self.live_reads(dom, want, [MiB] if finished else [], step)
                else:
                    self.assert_layer(active, want, [MiB] if finished else [], step)
                self.assert_disk_is(active, want, step)
                self.assert_disk_is(h.image_path('x%s.s1' % tag), [(0xe1, 0), (0xe2, MiB)], step + ": s2's file")
                # and it reverts for real now
                self.revert(s1, FORCE)
                self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s1)
                self.assert_layer(self.active(dom)['vda'], [(0xe1, 0)], [MiB], step + ', then reverted')
                self.assert_disk_is(self.active(dom)['vda'], [(0xe1, 0)], step + ', then reverted')
                self.assert_consistent(dom, step + ', then reverted', orphans=False)
                self.assertEqual(self.revert_disks(s2), {})

    def test_internal(self):
        h = self.h
        # offline (qemu-img snapshot -a) from a running domain with FORCE:
        # step -> (finished, state afterwards)
        steps = {'revert:intent': (False, 'running'),    # QEMU still runs: nothing was touched
                 'revert:stopped': (True, 'shutoff'),    # QEMU gone: snapshot -a (again) finishes it
                 'revert:applied': (True, 'shutoff'),
                 'revert:switched': (True, 'shutoff'),
                 'revert:metadata': (True, 'shutoff')}
        for step, (finished, state) in steps.items():
            with self.subTest(step=step):
                tag = step.split(':')[1]
                img = h.create_image('i%s.qcow2' % tag)
                dom = h.define_domain('i' + tag, [q.Disk('vda', img)])
                o1 = self.snap(dom, 'o1', 0)                 # shut off: internal, disk-only
                self.start(dom)
                self.write(dom, 'vda', 0xe3, 0)
                o2 = self.snap(dom, 'o2', 0)                 # running: internal with memory, current
                self.write(dom, 'vda', 0xe4, MiB)
                self.crash_revert(o1, FORCE, step, [OFF_FINISHED if finished else OFF_ROLLED_BACK])
                self.assertEqual(self.dprop(dom, 'State'), state)
                self.assertEqual(self.stray_state_files(dom), [])
                self.assert_disks_agree(dom, step)
                if finished:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), o1)
                    self.assert_layer(img, [], [0, MiB], step)
                    self.assert_disk_is(img, [], step)
                else:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), o2)
                    self.live_reads(dom, [(0xe3, 0), (0xe4, MiB)], [], step)
                    self.assert_disk_is(img, [(0xe3, 0), (0xe4, MiB)], step)
                self.assert_internal_is(img, 'o1', [], step)
                self.assert_internal_is(img, 'o2', [(0xe3, 0)], step)
                self.assert_all_clean()
        # live snapshot-load into the running QEMU:
        for step, finished in (('revert:load', False),     # journal says nothing loaded, the old QEMU runs on
                               ('revert:loaded', True)):   # journaled as loaded: recorded
            with self.subTest(step=step):
                tag = step.split(':')[1]
                img = h.create_image('l%s.qcow2' % tag)
                dom = h.define_domain('l' + tag, [q.Disk('vda', img)])
                self.start(dom)
                self.write(dom, 'vda', 0xe4, 0)
                i1 = self.snap(dom, 'i1', 0)
                self.write(dom, 'vda', 0xe5, MiB)
                i2 = self.snap(dom, 'i2', 0)         # the current one, until the revert finishes
                self.write(dom, 'vda', 0xe6, 2 * MiB)
                self.crash_revert(i1, 0, step, [LOAD_FINISHED if finished else LOAD_ROLLED_BACK])
                q.wait_until(lambda: self.dprop(dom, 'State') == 'running', 10, step + ': running')
                self.assertEqual(self.stray_state_files(dom), [])
                if finished:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i1)
                    want = [(0xe4, 0)]
                    self.live_reads(dom, want, [MiB, 2 * MiB], step)
                else:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i2)
                    want = [(0xe4, 0), (0xe5, MiB), (0xe6, 2 * MiB)]
                    self.live_reads(dom, want, [], step)
                h.flush_live(dom, 'vda')
                self.assert_disk_is(img, want, step)
                self.revert(i1)
                self.live_reads(dom, [(0xe4, 0)], [MiB, 2 * MiB], step + ', then reverted')
                self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i1)
        # snapshot-load into a QEMU started for it (the domain was shut off)
        for step, finished in (('revert:load', False),     # the QEMU started for the load is of no use: stopped
                               ('revert:loaded', True)):   # the guest runs the snapshot
            with self.subTest(step=step, shut_off=True):
                tag = step.split(':')[1]
                img = h.create_image('s%s.qcow2' % tag)
                dom = h.define_domain('s' + tag, [q.Disk('vda', img)])
                self.start(dom)
                self.write(dom, 'vda', 0xe7, 0)
                i1 = self.snap(dom, 'i1', 0)
                self.write(dom, 'vda', 0xe8, MiB)
                i2 = self.snap(dom, 'i2', 0)
                self.stop(dom)
                self.crash_revert(i1, 0, step, [LOAD_FINISHED if finished else LOAD_STOPPED])
                want = 'running' if finished else 'shutoff'
                q.wait_until(lambda: self.dprop(dom, 'State') == want, 15,
                             'after a crash at %s the domain is %s' % (step, want))
                self.assertEqual(self.stray_state_files(dom), [])
                if finished:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i1)
                    self.live_reads(dom, [(0xe7, 0)], [MiB], step)
                    h.flush_live(dom, 'vda')
                    self.assert_disk_is(img, [(0xe7, 0)], step)
                else:
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), i2)
                    self.assert_disk_is(img, [(0xe7, 0), (0xe8, MiB)], step)
                self.revert(i1)
                self.assertEqual(self.dprop(dom, 'State'), 'running')
                self.live_reads(dom, [(0xe7, 0)], [MiB], step + ', then reverted')

    def test_memory(self):
        h = self.h
        # step -> (finished, state afterwards, what the recovery logs)
        steps = (('revert:overlays', False, 'shutoff', [EXT_ROLLED_BACK]),   # QEMU stopped, overlay made: it goes
                 ('revert:switched', True, 'shutoff', [EXT_FINISHED]),       # switched, no QEMU started yet
                 # killed with migrate-incoming queued, not yet sent: the new
                 # qsnapd sends it, waits for the load and resumes the guest
                 ('revert:incoming', True, 'running', [EXT_FINISHED, MEM_LOADING, MEM_LOADED_RUNS]),
                 ('revert:started', True, 'running', [EXT_FINISHED, MEM_LOADED]))   # loaded and running
        for step, finished, state, verdicts in steps:
            with self.subTest(step=step):
                tag = step.split(':')[1]
                img = h.create_image('m%s.qcow2' % tag)
                dom = h.define_domain('m' + tag, [q.Disk('vda', img)], memory_mib=64)
                self.start(dom)
                self.write(dom, 'vda', 0xe5, 0)
                m1 = self.snap(dom, 'm1', 0, snap_xml('m1', memory='external',
                                                      memory_file=h.image_path('m%s.mem' % tag)))
                self.write(dom, 'vda', 0xe6, MiB)
                self.crash_revert(m1, 0, step, verdicts)
                q.wait_until(lambda: self.dprop(dom, 'State') == state, 10,
                             'after a crash at %s the domain is %s' % (step, state))
                if state == 'running':
                    self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
                    self.assertEqual(h.qmp(dom, 'query-migrate')['return'].get('status'), 'completed')
                active = self.assert_consistent(dom, step)
                if finished:
                    self.assertEqual(active, h.image_path('m%s.m1-revert1' % tag))
                    self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), m1)
                    want = [(0xe5, 0)]
                else:
                    self.assertEqual(active, h.image_path('m%s.m1' % tag))
                    self.assertFalse(os.path.exists(h.image_path('m%s.m1-revert1' % tag)))
                    want = [(0xe5, 0), (0xe6, MiB)]
                if state == 'running':
                    self.live_reads(dom, want, [MiB] if finished else [], step)
                self.assert_disk_is(active, want, step)
                self.revert(m1)
                self.assertEqual(self.dprop(dom, 'State'), 'running')
                self.live_reads(dom, [(0xe5, 0)], [MiB], step + ', then reverted')
                self.assert_consistent(dom, step + ', then reverted', orphans=False)


if __name__ == '__main__':
    q.main()
