#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Disks in I/O threads end to end (libvirt's <iothreads>, docs/decisions.md
"Domain XML"): a running domain with two disks, vda in iothread 1 (its
virtio-blk device in that thread's AioContext, so every node of its chain
is there too) and vdb in QEMU's main loop, with the real qsnapd, polkitd
and QEMU. Each step writes its own pattern into the guest's disks (HMP
qemu-io) and checks the data live and from the host afterwards:

- the launch: query-iothreads lists iothread1, vda's device is linked to
  it, vdb's to none; GetXMLDesc writes <iothreads> and iothread='1' back.
- snapshots: external disk-only s1 and s2 of both disks (the overlays are
  added while vda's nodes live in the iothread), the delete of the current
  leaf s2 (active commit + pivot), a revert to s1 with FORCE|RUNNING (a new
  QEMU, vda again in iothread1), the delete of s1 (merge): each view holds
  exactly its patterns, qemu-img check is clean.
- snapshots with memory: internal (snapshot-save), a live revert
  (snapshot-load into the same QEMU), its delete; external with memory and
  its revert (a new QEMU loading the memory file, vda in iothread1 again).
- block jobs on vda: BlockCommit ACTIVE with a guest write while READY and
  Pivot, BlockPull, BlockCopy with Pivot; vdb untouched and readable;
  after kill -9 of qsnapd the next one re-attaches (same QEMU) and copies.
- backups of vda: a full push creating checkpoint c1, an incremental push
  since c1 (full + incremental == the disk at its start), CreateCheckpoint
  and Delete; shut off, an offline pull of vda (a paused QEMU without I/O
  threads) reads back equal. A live pull over NBD of vda is refused
  (Unsupported, nothing changed, the guest runs on) before QEMU 9.0: QEMU
  7.2 aborts when a client of an export in an I/O thread disconnects
  (measured; with 9.0 the pull runs and is checked like vdb's). vdb, in the
  main loop of the same QEMU, is pulled over NBD: qemu-img convert == the
  disk at backup start, a guest write afterwards not in it.
- a real Linux guest writing through vda's iothread (RealGuestTest): a
  disk-only snapshot, a push backup, the snapshot's delete and a copy with
  pivot while it writes; each image a clean ext4 whose files verify.
"""

import os
import xml.etree.ElementTree as ET

import qsnapguest as g
import qsnaptest as q
from test_backup import BackupTestCase, pull_xml, push_xml
from test_blockjobs import D, J, MiB
from test_blockcopy import dest_xml

S = q.SNAPSHOT_IFACE
C = q.CHECKPOINT_IFACE
DISK_ONLY = 16
ACTIVE = 4
FORCE, RUNNING = 4, 1
SIZE = '32M'


class IothreadTest(BackupTestCase):
    # ---- set-up
    def make(self, vda_backing=None):
        """Domain 'io': vda (a.qcow2, on vda_backing if given) in iothread 1,
        vdb (b.qcow2) in the main loop; started. Returns (dom, a, b)."""
        h = self.h
        a = h.create_image('a.qcow2', size=SIZE, backing=vda_backing)
        b = h.create_image('b.qcow2', size=SIZE)
        xml = q.domain_xml('io', [q.Disk('vda', a), q.Disk('vdb', b)], extra='  <iothreads>1</iothreads>')
        xml = xml.replace('<driver name=\'qemu\' type="qcow2"/>', '<driver name=\'qemu\' type="qcow2" iothread=\'1\'/>', 1)
        self.assertEqual(xml.count("iothread='1'"), 1)
        dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')
        h.call(dom, D, 'Start', (0,), 't')
        self.img = a
        self.assert_in_iothread(dom, 'after Start')
        return dom, a, b

    def assert_in_iothread(self, dom, what):
        """vda's device runs in iothread1, vdb's in the main loop, and the
        definition says so."""
        h = self.h
        threads = [t['id'] for t in h.qmp(dom, 'query-iothreads')['return']]
        self.assertEqual(threads, ['iothread1'], '%s: query-iothreads' % what)
        r = h.qmp(dom, 'qom-get', {'path': '/machine/peripheral/vda/virtio-backend', 'property': 'iothread'})
        self.assertEqual(r.get('return'), '/objects/iothread1', '%s: vda iothread link: %s' % (what, r))
        r = h.qmp(dom, 'qom-get', {'path': '/machine/peripheral/vdb/virtio-backend', 'property': 'iothread'})
        self.assertEqual(r.get('return'), '', '%s: vdb iothread link: %s' % (what, r))
        root = ET.fromstring(h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        self.assertEqual(root.findtext('iothreads'), '1', what)
        drivers = {d.find('target').get('dev'): d.find('driver').get('iothread') for d in root.iter('disk')}
        self.assertEqual(drivers, {'vda': '1', 'vdb': None}, '%s: GetXMLDesc' % what)

    # ---- data
    def write(self, dom, target, pattern, offset):
        self.h.write_pattern_live(dom, target, pattern, offset, MiB)

    def live(self, dom, target, patterns, zeros, what):
        for p, off in patterns:
            self.h.verify_pattern_live(dom, target, p, off, MiB, what)
        for off in zeros:
            self.h.verify_pattern_live(dom, target, 0, off, MiB, what)

    def host(self, img, patterns, zeros, what):
        """img with its chain, read from the host (after a flush of both disks)."""
        for p, off in patterns:
            self.assertTrue(q.qemu_io_read_pattern(img, p, off, MiB), '%s: %s lacks 0x%02x at %d' % (what, img, p, off))
        for off in zeros:
            self.assertTrue(q.qemu_io_read_pattern(img, 0, off, MiB), '%s: %s not zero at %d' % (what, img, off))

    def flush_all(self, dom):
        self.h.flush_live(dom, 'vda')
        self.h.flush_live(dom, 'vdb')

    def active_files(self, dom):
        return {d[0]: d[2] for d in self.dprop(dom, 'Disks')}

    def snapshot(self, dom, name):
        xml = '<domainsnapshot><name>%s</name></domainsnapshot>' % name
        return self.h.call(dom, D, 'CreateSnapshot', (xml, DISK_ONLY), 'st', timeout=90)

    def delete_snapshot(self, snap):
        h = self.h
        path = h.call(snap, S, 'Delete', (0,), 't', timeout=120)
        if path != '/':
            q.wait_until(lambda: h.get_property(path, J, 'State') in ('completed', 'failed', 'canceled'), 120,
                         'the delete job %s ends' % path)
            self.assertEqual(h.get_property(path, J, 'State'), 'completed', h.get_property(path, J, 'Error'))

    # ------------------------------------------------------------------
    def test_snapshots(self):
        h = self.h
        dom, a, b = self.make()
        self.write(dom, 'vda', 0xa1, 0)
        self.write(dom, 'vdb', 0xb1, 0)
        s1 = self.snapshot(dom, 's1')
        a1, b1 = h.image_path('a.s1'), h.image_path('b.s1')
        self.assertEqual(self.active_files(dom), {'vda': a1, 'vdb': b1})
        self.write(dom, 'vda', 0xa2, MiB)
        self.write(dom, 'vdb', 0xb2, MiB)
        s2 = self.snapshot(dom, 's2')
        self.write(dom, 'vda', 0xa3, 2 * MiB)
        self.live(dom, 'vda', [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], [], 'vda after s2')
        self.live(dom, 'vdb', [(0xb1, 0), (0xb2, MiB)], [2 * MiB], 'vdb after s2')
        self.flush_all(dom)
        self.host(a, [(0xa1, 0)], [MiB, 2 * MiB], 'frozen by s1')
        self.host(a1, [(0xa1, 0), (0xa2, MiB)], [2 * MiB], 'frozen by s2')
        self.assertEqual(self.qemu_chain(dom), [h.image_path('a.s2'), a1, a])

        # The current leaf: an active commit of vda's overlay in the iothread, pivoted.
        self.delete_snapshot(s2)
        self.assertEqual(self.active_files(dom), {'vda': a1, 'vdb': b1})
        self.assertEqual(self.qemu_chain(dom), [a1, a])
        self.live(dom, 'vda', [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB)], [], 'vda after deleting s2')
        self.write(dom, 'vda', 0xa4, 3 * MiB)
        self.flush_all(dom)
        self.host(a1, [(0xa1, 0), (0xa2, MiB), (0xa3, 2 * MiB), (0xa4, 3 * MiB)], [], 'vda after deleting s2')

        # Revert to s1, running: a new QEMU, vda in the iothread again.
        h.call(s1, S, 'Revert', (FORCE | RUNNING,), 't', timeout=90)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_in_iothread(dom, 'after Revert')
        ra, rb = self.active_files(dom)['vda'], self.active_files(dom)['vdb']
        self.assertEqual(self.qemu_chain(dom), [ra, a])
        self.assertEqual(self.qemu_chain(dom, 'vdb'), [rb, b])
        self.live(dom, 'vda', [(0xa1, 0)], [MiB, 2 * MiB, 3 * MiB], 'vda after revert to s1')
        self.live(dom, 'vdb', [(0xb1, 0)], [MiB], 'vdb after revert to s1')
        self.write(dom, 'vda', 0xa5, 4 * MiB)

        # s1 (root and current): merged away, the data stays.
        self.delete_snapshot(s1)
        self.live(dom, 'vda', [(0xa1, 0), (0xa5, 4 * MiB)], [MiB], 'vda after deleting s1')
        self.live(dom, 'vdb', [(0xb1, 0)], [MiB], 'vdb after deleting s1')
        self.flush_all(dom)
        va = self.active_files(dom)['vda']
        self.host(va, [(0xa1, 0), (0xa5, 4 * MiB)], [MiB, 2 * MiB], 'vda after deleting s1')
        self.assert_in_iothread(dom, 'at the end')
        for f in sorted(os.listdir(h.images_dir)):
            if '.qcow2' in f or '.s' in f:
                q.qemu_img_check(h.image_path(f), force_share=True)

    # ------------------------------------------------------------------
    def test_snapshots_with_memory(self):
        h = self.h
        dom, a, b = self.make()
        self.write(dom, 'vda', 0xa1, 0)
        self.write(dom, 'vdb', 0xb1, 0)

        # Internal with memory (snapshot-save with vda's node in the
        # iothread), a live snapshot-load into the same QEMU, its delete.
        i1 = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>i1</name></domainsnapshot>', 0), 'st',
                    timeout=90)
        self.assertEqual(h.get_property(i1, S, 'Memory'), 'internal')
        self.write(dom, 'vda', 0xa2, 0)
        self.write(dom, 'vda', 0xa3, MiB)
        pid = h.qemu_pid(dom)
        h.call(i1, S, 'Revert', (0,), 't', timeout=90)
        self.assertEqual(h.qemu_pid(dom), pid, 'an internal revert loads into the same QEMU')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.live(dom, 'vda', [(0xa1, 0)], [MiB], 'vda after reverting to i1')
        self.live(dom, 'vdb', [(0xb1, 0)], [], 'vdb after reverting to i1')
        self.delete_snapshot(i1)
        for img in (a, b):
            r = q.run([q.QEMU_IMG, 'snapshot', '-U', '-l', img])
            self.assertNotIn('i1', r.stdout, 'the tag of i1 is left in %s' % img)

        # External with memory: the disks switched in postmigrate; its
        # revert starts a new QEMU from the memory file, vda in iothread1.
        mem = h.image_path('f1.mem')
        xml = "<domainsnapshot><name>f1</name><memory snapshot='external' file='%s'/></domainsnapshot>" % mem
        f1 = h.call(dom, D, 'CreateSnapshot', (xml, 0), 'st', timeout=90)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(self.active_files(dom), {'vda': h.image_path('a.f1'), 'vdb': h.image_path('b.f1')})
        self.write(dom, 'vda', 0xa4, 2 * MiB)
        self.write(dom, 'vdb', 0xb4, 2 * MiB)
        h.call(f1, S, 'Revert', (0,), 't', timeout=90)
        self.assertNotEqual(h.qemu_pid(dom), pid)
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.assertEqual(h.qmp(dom, 'query-migrate')['return'].get('status'), 'completed')
        self.assert_in_iothread(dom, 'after reverting to f1')
        self.live(dom, 'vda', [(0xa1, 0)], [MiB, 2 * MiB], 'vda after reverting to f1')
        self.live(dom, 'vdb', [(0xb1, 0)], [2 * MiB], 'vdb after reverting to f1')
        self.flush_all(dom)
        self.host(self.active_files(dom)['vda'], [(0xa1, 0)], [MiB, 2 * MiB], 'vda after reverting to f1')
        for f in (a, b, h.image_path('a.f1'), h.image_path('b.f1')):
            q.qemu_img_check(f, force_share=True)

    # ------------------------------------------------------------------
    def test_block_jobs(self):
        h = self.h
        base = h.create_image('base.qcow2', size=SIZE)
        mid = h.create_image('mid.qcow2', size=SIZE, backing=base)
        q.qemu_io_write_pattern(base, 0x11, 0, MiB)
        q.qemu_io_write_pattern(mid, 0x22, MiB, MiB)
        dom, a, b = self.make(vda_backing=mid)
        self.write(dom, 'vda', 0x33, 2 * MiB)
        self.write(dom, 'vdb', 0xb1, 0)
        self.assertEqual(self.qemu_chain(dom), [a, mid, base])

        # Active commit of a into mid, a guest write while READY, Pivot.
        rec = h.record_signals()
        job = self.commit(dom, mid, '', flags=ACTIVE)
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=60)
        self.write(dom, 'vda', 0x44, 3 * MiB)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, 60), ('completed', ''))
        self.assertEqual(self.qemu_chain(dom), [mid, base])
        self.live(dom, 'vda', [(0x11, 0), (0x22, MiB), (0x33, 2 * MiB), (0x44, 3 * MiB)], [4 * MiB], 'after commit')
        self.flush(dom)
        self.host(mid, [(0x22, MiB), (0x33, 2 * MiB), (0x44, 3 * MiB)], [], 'mid after commit')

        # Pull base into mid.
        job = self.pull(dom)
        self.assertEqual(self.wait_end(rec, job, 60), ('completed', ''))
        self.assertEqual(self.qemu_chain(dom), [mid])
        self.assertIsNone(self.backing_of(mid))
        self.write(dom, 'vda', 0x55, 4 * MiB)
        self.live(dom, 'vda', [(0x11, 0), (0x22, MiB), (0x33, 2 * MiB), (0x44, 3 * MiB), (0x55, 4 * MiB)], [],
                  'after pull')

        # Copy to a new file, a write while READY, Pivot.
        dest = h.image_path('copy.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', dest_xml(dest), 0, 0), 'sstt')
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=60)
        self.write(dom, 'vda', 0x66, 5 * MiB)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, 60), ('completed', ''))
        rec.close()
        self.assertEqual(self.qemu_chain(dom), [dest])
        self.assertEqual(self.active_files(dom)['vda'], dest)
        want = [(0x11, 0), (0x22, MiB), (0x33, 2 * MiB), (0x44, 3 * MiB), (0x55, 4 * MiB), (0x66, 5 * MiB)]
        self.live(dom, 'vda', want, [6 * MiB], 'after copy')
        self.flush_all(dom)
        self.host(dest, want, [6 * MiB], 'the copy')
        self.host(b, [(0xb1, 0)], [MiB], 'vdb')
        self.assert_in_iothread(dom, 'after the jobs')
        for img in (dest, mid, base, b):
            q.qemu_img_check(img, force_share=True)

        # kill -9 of qsnapd: the next one re-attaches to the same QEMU, and
        # jobs on vda work on.
        pid = h.qemu_pid(dom)
        h.restart_daemon(kill=True)
        self.assertEqual(h.qemu_pid(dom), pid)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_in_iothread(dom, 'after a restart of qsnapd')
        dest2 = h.image_path('copy2.qcow2')
        rec = h.record_signals()
        job = h.call(dom, D, 'BlockCopy', ('vda', dest_xml(dest2), 0, 0), 'sstt')
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=60)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, 60), ('completed', ''))
        rec.close()
        self.assertEqual(self.qemu_chain(dom), [dest2])
        self.live(dom, 'vda', want, [6 * MiB], 'after a copy by the restarted qsnapd')

    # ------------------------------------------------------------------
    def test_backups_and_checkpoints(self):
        h = self.h
        dom, a, b = self.make()
        self.dom = dom
        self.write(dom, 'vda', 0xa1, 0)
        self.write(dom, 'vda', 0xa2, 16 * MiB)
        rec = h.record_signals()

        # Full push creating c1.
        ref1 = self.reference(dom, 'ref1.raw')
        job = self.begin(dom, '<domainbackup/>', '<domaincheckpoint><name>c1</name></domaincheckpoint>')
        self.assertEqual(self.wait_end(rec, job, 120), ('completed', ''))
        full = a + '.c1'
        self.assert_equal_images(ref1, full, what='full push')

        # Incremental push since c1, creating c2.
        self.write(dom, 'vda', 0xc3, 4 * MiB)
        self.write(dom, 'vda', 0xc3, 24 * MiB)
        ref2 = self.reference(dom, 'ref2.raw')
        inc = h.image_path('inc.qcow2')
        xml = ("<domainbackup mode='push'><incremental>c1</incremental><disks><disk name='vda' type='file'>"
               "<target file='%s'/></disk></disks></domainbackup>" % inc)
        job = self.begin(dom, xml, '<domaincheckpoint><name>c2</name></domaincheckpoint>')
        self.assertEqual(self.wait_end(rec, job, 120), ('completed', ''))
        self.assertEqual(self.jprop(job, 'End'), 2 * MiB, 'an incremental copies the dirty bytes only')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', full, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_images(ref2, inc, what='full + incremental')

        # A pull of vda: QEMU 7.2 aborts when a client of an NBD export in an
        # iothread hangs up (docs/decisions.md), so it is refused, and
        # nothing changes; QEMU runs on.
        if not self.qemu_at_least(9, 0):
            before = (self.fingerprint(dom), self.node_bitmaps(dom), sorted(os.listdir(h.runtime_dir)))
            with self.assertDBusError(q.ERROR_PREFIX + 'Unsupported') as cm:
                self.begin(dom, pull_xml())
            self.assertIn('I/O thread 1', str(cm.exception))
            self.assertEqual((self.fingerprint(dom), self.node_bitmaps(dom), sorted(os.listdir(h.runtime_dir))), before)
            self.assertEqual(self.dprop(dom, 'State'), 'running')
            self.write(dom, 'vda', 0xd4, 0)
        else:
            self.pull_and_compare(dom, 'vda', a, 0xd4)
        # vdb, in the main loop of the same QEMU: pulled over NBD, equal to
        # the disk at backup start, a later guest write not in it.
        self.write(dom, 'vdb', 0xb1, 0)
        self.pull_and_compare(dom, 'vdb', b, 0xb2)
        self.live(dom, 'vda', [(0xd4, 0), (0xa2, 16 * MiB), (0xc3, 4 * MiB)], [], 'guest after the pull')

        # A checkpoint of its own, then deletes (bitmaps merged or dropped in the iothread).
        c3 = h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c3</name></domaincheckpoint>', 0), 'st')
        self.assertEqual(self.node_bitmaps(dom), ['c1', 'c2', 'c3'])
        h.call(c3, C, 'Delete', (0,), 't')
        c1 = h.call(dom, D, 'LookupCheckpoint', ('c1',), 's')
        h.call(c1, C, 'Delete', (0,), 't')
        self.assertEqual(self.node_bitmaps(dom), ['c2'])
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_in_iothread(dom, 'after the backups')
        self.flush_all(dom)
        q.qemu_img_check(a, force_share=True)
        rec.close()

        # Shut off, vda's pull runs in a paused QEMU without devices or I/O
        # threads: allowed, and its export equals the disk.
        h.call(dom, D, 'Stop', (0,), 't')
        ref4 = self.raw_copy(a, 'ref4.raw')
        job = self.begin(dom, "<domainbackup mode='pull'><disks><disk name='vda'/></disks></domainbackup>")
        socket = self.backup_xml(dom).find('server').get('socket')
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled-off.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref4, out])
        self.assertEqual(r.returncode, 0, 'the offline export against the disk: %s' % r.stdout)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_in_iothread(dom, 'started again')

    def qemu_at_least(self, major, minor):
        v = self.h.qmp(self.dom, 'query-version')['return']['qemu']
        return (v['major'], v['minor']) >= (major, minor)

    def pull_and_compare(self, dom, target, img, later):
        """A full pull of target: the export read over NBD equals the disk
        at backup start; the guest's write of pattern later afterwards is
        not in it; Abort ends it completed."""
        h = self.h
        h.flush_live(dom, target)
        ref = self.raw_copy(img, 'ref-%s.raw' % target)
        xml = "<domainbackup mode='pull'><disks><disk name='%s'/></disks></domainbackup>" % target
        job = self.begin(dom, xml)
        socket = self.backup_xml(dom).find('server').get('socket')
        self.write(dom, target, later, 0)
        out = self.nbd_convert(socket, target, h.image_path('pulled-%s.raw' % target))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the export of %s against the disk at backup start: %s' % (target, r.stdout))
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.live(dom, target, [(later, 0)], [], '%s after its pull' % target)

    def node_bitmaps(self, dom):
        nodes = self.h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        return sorted(bm.get('name', '') for n in nodes if self.h.qemu_file_name(dom, n.get('file'), fdsets) == self.img
                      for bm in n.get('dirty-bitmaps', []) if not bm.get('name', '').startswith('qsnap-size-'))


class RealGuestTest(BackupTestCase):
    """The real Linux guest (tests/lib/qsnapguest.py, TCG) on an ext4 vda in
    iothread 1, writing checksummed files all the time, so its I/O goes
    through virtio-blk's dataplane in that thread while qsnapd works: an
    external disk-only snapshot (the frozen file a clean fs), a full push
    backup (a clean fs of its time), the snapshot's delete (active commit +
    pivot) and a BlockCopy with Pivot; after Stop the copy is clean and
    every file verifies."""

    def assert_image_clean(self, image, what, counter_range=None):
        r = g.verify_image(image)
        self.assertEqual(r['fsck_rc'], 0, '%s: e2fsck -fn:\n%s' % (what, r['fsck_output']))
        self.assertTrue(r['files'], '%s: no data files' % what)
        self.assertEqual([n for n, ok in r['files'].items() if not ok], [], '%s: files whose checksum fails' % what)
        if counter_range:
            lo, hi = counter_range
            self.assertTrue(lo <= r['counter'] <= hi, '%s: counter %s not in [%d, %d]' % (what, r['counter'], lo, hi))

    def test_guest_writes_through_the_iothread(self):
        h = self.h
        gu = g.Guest(h, 'rg', extra='  <iothreads>1</iothreads>')
        self.addCleanup(gu.close)
        xml = gu.xml.replace("<driver name='qemu' type='qcow2'/>", "<driver name='qemu' type='qcow2' iothread='1'/>", 1)
        self.assertNotEqual(xml, gu.xml)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st'), gu.path)
        dom, base = gu.path, gu.disk
        v = gu.start()
        self.assertEqual(v.group(1), 'ok', v.group(0))
        r = h.qmp(dom, 'qom-get', {'path': '/machine/peripheral/vda/virtio-backend', 'property': 'iothread'})
        self.assertEqual(r.get('return'), '/objects/iothread1', r)

        lo = gu.wait_count((gu.count or 0) + 2)
        s1 = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st',
                    timeout=120)
        hi = gu.wait_count(lo + 1)
        self.assert_image_clean(base, 'frozen by s1', (lo, hi))

        rec = h.record_signals()
        lo = gu.wait_count(gu.count + 1)
        full = h.image_path('rg-full.qcow2')
        job = self.begin(dom, push_xml(full))
        self.assertEqual(self.wait_end(rec, job, 120), ('completed', ''))
        hi = gu.wait_count(gu.count + 1)
        self.assert_image_clean(full, 'the push backup', (lo, hi))

        path = h.call(s1, S, 'Delete', (0,), 't', timeout=120)
        if path != '/':
            self.assertEqual(self.wait_end(rec, path, 120), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'][0], base)
        gu.wait_count(gu.count + 2)

        dest = h.image_path('rg-copy.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', dest_xml(dest), 0, 0), 'sstt')
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=120)
        gu.wait_count(gu.count + 1)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, 120), ('completed', ''))
        rec.close()
        last = gu.wait_count(gu.count + 2)
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(self.disks(dom)['vda'][0], dest)
        self.assert_image_clean(dest, 'the copy after Stop', (last, last + 1000))
        q.qemu_img_check(dest)


if __name__ == '__main__':
    q.main()
