#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Checkpoints end to end (DESIGN.md §2 Checkpoint, CreateCheckpoint;
docs/checkpoints.md): the real qsnapd, the real polkitd and real QEMU on
small qcow2 images.

What each bitmap holds is read from the images and from QEMU: `qemu-img
info` lists the persistent bitmaps of every image (shut off, or after
QEMU quit), `query-named-block-nodes` their dirty counts while running.
"Changes since C" is the dirty count of C's bitmaps, merged over the
chain: Size must equal the bytes the guest wrote since C, at 64 KiB
granularity.

- create, running domain with two disks (one transaction) and shut off
  (qemu-img bitmap): every disk's active image holds a persistent,
  enabled bitmap named as the checkpoint; Parent, IsCurrent, Disks,
  CreationTime, Problems, Domain.Checkpoints with InterfacesAdded and
  PropertiesChanged; the metadata survives a restart of qsnapd.
- Size and GetXMLDesc(SIZE): exactly the bytes written since, per disk.
- ListCheckpoints / ListChildren with every flag, LookupCheckpoint,
  GetXMLDesc SECURE / NO_DOMAIN / SIZE.
- Delete: the bitmap is merged into the parent's (the parent's dirty count
  is the union afterwards) and gone from every image, children move up;
  CHILDREN, CHILDREN_ONLY, METADATA_ONLY (bitmaps stay); live and offline.
- a bitmap removed by hand (qemu-img bitmap --remove), or left
  inconsistent ("in-use") by a QEMU killed with the image open: the
  checkpoint shows the problem and Delete clears it; REDEFINE adopts an
  existing bitmap, REDEFINE_VALIDATE refuses a missing one.
- bitmaps follow the chain: external snapshot (live, offline), revert
  (external, internal live and offline), active commit, middle commit,
  pull, copy with pivot, Snapshot.Delete forward, backward and offline:
  afterwards Size is exactly the bytes written since the checkpoint, and
  (shut off) an incremental push since it copies exactly those bytes and,
  restored onto the disk at the checkpoint, equals the disk (also after
  the delete of a middle checkpoint).
- a copy that does not pivot leaves a plain copy: after Abort, after
  QEMU's own cancel at quit (REUSE_EXT), and after a qsnapd killed
  between the end and the removal (block-copy:unbitmap), the destination
  has none of the bitmaps its target got at READY; a REUSE_EXT
  destination that has a bitmap of a checkpoint's name is AlreadyExists.
- refused requests change nothing (images, metadata): duplicate name,
  unknown disk, bitmap other than the name, a raw disk, bad XML, QUIESCE,
  unknown flags, CHILDREN with CHILDREN_ONLY, a denied uid.
- kill -9 at every crash point of create and delete: recovery leaves a
  whole checkpoint or none, and no bitmap without metadata.
"""

import os
import re
import signal
import xml.etree.ElementTree as ET

import qsnaptest as q

D = q.DOMAIN_IFACE
C = q.CHECKPOINT_IFACE
S = q.SNAPSHOT_IFACE
J = q.JOB_IFACE
MiB = 1 << 20

REDEFINE, QUIESCE, REDEFINE_VALIDATE = 1, 2, 4
ROOTS, TOPOLOGICAL, LEAVES, NO_LEAVES = 1, 2, 4, 8
CHILDREN, METADATA_ONLY, CHILDREN_ONLY = 1, 2, 4
SECURE, NO_DOMAIN, SIZE = 1, 2, 4
REUSE_EXT = 2   # BlockCopy's flag
DISK_ONLY = 16
FORCE = 4


def cp_xml(name=None, disks=None, description=None):
    out = ['<domaincheckpoint>']
    if name:
        out.append('<name>%s</name>' % name)
    if description:
        out.append('<description>%s</description>' % description)
    if disks is not None:
        out.append('<disks>%s</disks>' % ''.join(disks))
    out.append('</domaincheckpoint>')
    return ''.join(out)


def image_bitmaps(path):
    """{name: flags} of the persistent bitmaps in one image."""
    info = q.qemu_img_info(path)
    found = info.get('format-specific', {}).get('data', {}).get('bitmaps', [])
    return {b['name']: sorted(b.get('flags', [])) for b in found}


class CheckpointCase(q.QsnapTestCase):
    maxDiff = None

    def domain(self, name='cpd', disks=('vda', 'vdb'), fmt='qcow2'):
        imgs = {}
        for t in disks:
            imgs[t] = self.h.create_image('%s-%s.%s' % (name, t, fmt), '16M', fmt=fmt)
        path = self.h.define_domain(name, [q.Disk(t, imgs[t], fmt) for t in disks])
        return path, imgs

    def create(self, dom, xml, flags=0):
        return self.h.call(dom, D, 'CreateCheckpoint', (xml, flags), 'st')

    def node_bitmaps(self, dom):
        """{file: {bitmap name: (count, recording)}} of QEMU's format nodes."""
        out = {}
        reply = self.h.qmp(dom, 'query-named-block-nodes', {'flat': True})
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        for n in reply.get('return', reply) if isinstance(reply, dict) else reply:
            if n.get('drv') == 'file':
                continue
            # qsnap-size-*: a Size measurement of qsnapd's, there for a moment.
            bms = {b['name']: (b['count'], b['recording']) for b in n.get('dirty-bitmaps', [])
                   if 'name' in b and not b['name'].startswith('qsnap-size-')}
            # QEMU knows files as /dev/fdset/N: the real file behind it.
            out.setdefault(self.h.qemu_file_name(dom, n['file'], fdsets), {}).update(bms)
        return out

    def active(self, dom, target):
        return next(d[2] for d in self.h.get_property(dom, D, 'Disks') if d[0] == target)

    def size(self, c):
        """Size measured now (GetXMLDesc with SIZE waits for a measurement)."""
        self.h.call(c, C, 'GetXMLDesc', (SIZE,), 't')
        return self.h.get_property(c, C, 'Size')

    def xml_sizes(self, c):
        """Per disk, Size measured now (GetXMLDesc with SIZE waits for the
        measurement; a Get of Size would start another after its reply)."""
        xml = self.h.call(c, C, 'GetXMLDesc', (SIZE,), 't')
        return {d.get('name'): int(d.get('size')) for d in ET.fromstring(xml).find('disks') if d.get('size')}

    def assert_incremental(self, dom, name, size, disk='vda'):
        """Issue #12's check after a chain operation, the domain shut off:
        an incremental push since checkpoint `name` (by the paused QEMU,
        from the bitmaps in the images) copies exactly `size` bytes, and
        restored onto the disk at that checkpoint (empty: every test makes
        its checkpoint on fresh images before writing) equals the disk."""
        h = self.h
        self.assertEqual(h.get_property(dom, D, 'State'), 'shutoff')
        self._incs = getattr(self, '_incs', 0) + 1
        inc = h.image_path('inc%d-%s.qcow2' % (self._incs, name))
        job = h.call(dom, D, 'BackupBegin', ("<domainbackup><incremental>%s</incremental><disks><disk name='%s' "
                                             "type='file'><target file='%s'/></disk></disks></domainbackup>"
                                             % (name, disk, inc), '', 0), 'sst')
        q.wait_until(lambda: h.get_property(job, J, 'State') in ('completed', 'failed', 'canceled'), 60, 'the backup')
        self.assertEqual(h.get_property(job, J, 'State'), 'completed', h.get_property(job, J, 'Error'))
        self.assertEqual(h.get_property(job, J, 'End'), size, 'the incremental since %s copies what changed' % name)
        base = q.qemu_img_create(h.image_path('at%d-%s.qcow2' % (self._incs, name)), '16M')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', base, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'qcow2', '-F', 'qcow2', self.active(dom, disk), inc])
        self.assertEqual(r.returncode, 0, '%s + incremental against the disk: %s' % (name, r.stdout + r.stderr))

    def refused(self, dom, imgs, error, xml, flags=0):
        before = (self.h.get_property(dom, D, 'Checkpoints'), {p: image_bitmaps(p) for p in imgs.values()})
        with self.assertDBusError(error):
            self.create(dom, xml, flags)
        after = (self.h.get_property(dom, D, 'Checkpoints'), {p: image_bitmaps(p) for p in imgs.values()})
        self.assertEqual(after, before, 'a refused CreateCheckpoint changed something')


class CreateTest(CheckpointCase):

    def test_create_offline_and_live(self):
        h = self.h
        dom, imgs = self.domain()
        rec = h.record_signals()
        # Shut off: qemu-img bitmap --add in every active image.
        c1 = self.create(dom, cp_xml('c1', description='first'))
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        for p in imgs.values():
            self.assertEqual(image_bitmaps(p), {'c1': ['auto']})
        props = h.get_all(c1, C)
        self.assertEqual(props['Name'], 'c1')
        self.assertEqual(props['Description'], 'first')
        self.assertEqual(props['Parent'], '/')
        self.assertEqual(props['Disks'], [('vda', 'c1'), ('vdb', 'c1')])
        self.assertTrue(props['IsCurrent'])
        self.assertEqual(props['Problems'], [])
        self.assertGreater(props['CreationTime'], 1600000000)
        rec.wait_for_signal('InterfacesAdded')
        rec.wait_for_property(dom, 'Checkpoints', [c1], interface=D)

        # Running: one transaction for both disks.
        h.call(dom, D, 'Start', (0,), 't')
        h.write_pattern_live(dom, 'vda', 0x11, 0, MiB)
        c2 = self.create(dom, cp_xml('c2', disks=["<disk name='vda'/>", "<disk name='vdb'/>"]))
        self.assertEqual(h.get_property(c2, C, 'Parent'), c1)
        self.assertTrue(h.get_property(c2, C, 'IsCurrent'))
        self.assertFalse(h.get_property(c1, C, 'IsCurrent'))
        self.assertEqual(h.get_property(c1, C, 'Children'), [c2])
        nodes = self.node_bitmaps(dom)
        for t, p in imgs.items():
            self.assertEqual(set(nodes[p]), {'c1', 'c2'}, t)
            self.assertEqual(nodes[p]['c2'], (0, True))
        self.assertEqual(nodes[imgs['vda']]['c1'], (MiB, True))
        self.assertEqual(nodes[imgs['vdb']]['c1'], (0, True))
        h.call(dom, D, 'Stop', (0,), 't')
        for p in imgs.values():
            self.assertEqual(image_bitmaps(p), {'c1': ['auto'], 'c2': ['auto']})
            q.qemu_img_check(p)

        # The metadata survives a restart.
        h.restart_daemon()
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1, c2])
        self.assertTrue(h.get_property(c2, C, 'IsCurrent'))
        self.assertEqual(h.get_property(c2, C, 'Parent'), c1)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])

    def test_default_name_and_size(self):
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        c = self.create(dom, '<domaincheckpoint/>')
        name = h.get_property(c, C, 'Name')
        self.assertRegex(name, r'^\d+$')
        h.write_pattern_live(dom, 'vda', 0x21, 0, MiB)
        h.write_pattern_live(dom, 'vdb', 0x22, 4 * MiB, 2 * MiB)
        xml = h.call(c, C, 'GetXMLDesc', (SIZE,), 't')
        sizes = {d.get('name'): int(d.get('size')) for d in ET.fromstring(xml).find('disks')}
        self.assertEqual(sizes, {'vda': MiB, 'vdb': 2 * MiB})
        self.assertEqual(h.get_property(c, C, 'Size'), 3 * MiB)
        self.assertNotIn('size=', h.call(c, C, 'GetXMLDesc', (0,), 't'))


    def test_size_shut_off(self):
        # Shut off, Size is read from the images' own bitmaps (the qcow2
        # bitmap tables), unioned over the chain: right after Stop, after an
        # offline write, and after a restart of qsnapd.
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x23, 0, MiB)
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        # the same MiB again in the overlay (a union counts it once) and a new one
        h.write_pattern_live(dom, 'vda', 0x24, 0, MiB)
        h.write_pattern_live(dom, 'vda', 0x24, 4 * MiB, MiB)
        h.write_pattern_live(dom, 'vdb', 0x25, 2 * MiB, 2 * MiB)
        c2 = self.create(dom, cp_xml('c2'))
        h.write_pattern_live(dom, 'vdb', 0x26, 8 * MiB, MiB)
        live = {'c1': self.xml_sizes(c1), 'c2': self.xml_sizes(c2)}
        self.assertEqual(live, {'c1': {'vda': 2 * MiB, 'vdb': 3 * MiB}, 'c2': {'vda': 0, 'vdb': MiB}})
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual({'c1': self.xml_sizes(c1), 'c2': self.xml_sizes(c2)}, live, 'Size after Stop')
        self.assertEqual(h.get_property(c1, C, 'Size'), 5 * MiB)
        # Written while shut off (qemu-io records it in the top's enabled bitmaps).
        q.qemu_io_write_pattern(self.active(dom, 'vda'), 0x27, 12 * MiB, MiB)
        self.assertEqual(self.xml_sizes(c1), {'vda': 3 * MiB, 'vdb': 3 * MiB}, 'Size after an offline write')
        self.assertEqual(self.xml_sizes(c2), {'vda': MiB, 'vdb': MiB})
        h.restart_daemon()
        self.assertEqual(self.size(c1), 6 * MiB, 'Size after a restart of qsnapd')
        self.assertEqual(self.size(c2), 2 * MiB)
        # Started again, QEMU agrees.
        h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(self.xml_sizes(c1), {'vda': 3 * MiB, 'vdb': 3 * MiB})


class ListTest(CheckpointCase):

    def test_list_lookup_and_xml(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        a = self.create(dom, cp_xml('a'))
        b = self.create(dom, cp_xml('b'))
        # c on a: redefine a sibling of b (bitmap made by hand, adopted).
        q.run([q.QEMU_IMG, 'bitmap', '--add', imgs['vda'], 'c'], check=True)
        xml_b = h.call(b, C, 'GetXMLDesc', (0,), 't')
        xml_c = xml_b.replace('<name>b</name>', '<name>c</name>').replace("bitmap='b'", "bitmap='c'")
        xml_c = re.sub(r'<parent>\s*<name>b</name>', '<parent><name>a</name>', xml_c)
        xml_c = xml_c.replace('<parent>\n    <name>a</name>', '<parent><name>a</name>')
        c = self.create(dom, xml_c, REDEFINE | REDEFINE_VALIDATE)
        self.assertEqual(h.get_property(c, C, 'Parent'), a)
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (0,), 't'), [a, b, c])
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (ROOTS,), 't'), [a])
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (LEAVES,), 't'), [b, c])
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (NO_LEAVES,), 't'), [a])
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (LEAVES | NO_LEAVES,), 't'), [a, b, c])
        self.assertEqual(h.call(dom, D, 'ListCheckpoints', (TOPOLOGICAL,), 't')[0], a)
        self.assertEqual(h.call(a, C, 'ListChildren', (0,), 't'), [b, c])
        self.assertEqual(h.call(a, C, 'ListChildren', (1,), 't'), [b, c])
        self.assertEqual(h.call(b, C, 'ListChildren', (0,), 't'), [])
        self.assertEqual(h.call(dom, D, 'LookupCheckpoint', ('b',), 's'), b)
        with self.assertDBusError(q.ERROR_PREFIX + 'NoSuchCheckpoint'):
            h.call(dom, D, 'LookupCheckpoint', ('nope',), 's')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            h.call(dom, D, 'ListCheckpoints', (64,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            h.call(a, C, 'ListChildren', (64,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            h.call(a, C, 'GetXMLDesc', (8,), 't')

        full = ET.fromstring(h.call(a, C, 'GetXMLDesc', (0,), 't'))
        self.assertEqual([e.tag for e in full], ['name', 'creationTime', 'disks', 'domain'])
        self.assertIsNotNone(ET.fromstring(h.call(a, C, 'GetXMLDesc', (SECURE,), 't')).find('domain'))
        self.assertIsNone(ET.fromstring(h.call(a, C, 'GetXMLDesc', (NO_DOMAIN,), 't')).find('domain'))
        self.assertEqual(ET.fromstring(h.call(b, C, 'GetXMLDesc', (0,), 't')).find('parent/name').text, 'a')

    def test_undefine_with_checkpoints(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        self.create(dom, cp_xml('c1'))
        with self.assertDBusError(q.ERROR_PREFIX + 'HasSnapshots') as e:
            h.call(dom, D, 'Undefine', (0,), 't')
        self.assertIn('CHECKPOINTS_METADATA', e.exception.message)
        self.assertEqual(len(h.get_property(dom, D, 'Checkpoints')), 1)
        h.call(dom, D, 'Undefine', (2,), 't')
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        # Metadata only: the bitmap stays in the image.
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})


class DeleteTest(CheckpointCase):

    def test_delete_live_merges_into_parent(self):
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x31, 0, MiB)
        c2 = self.create(dom, cp_xml('c2'))
        # c1 as libvirt < 6.0 kept it: a disabled delta up to c2, so that
        # only the merge can give it what c2 recorded.
        h.qmp(dom, 'block-dirty-bitmap-disable', {'node': 'vda-fmt', 'name': 'c1'})
        h.write_pattern_live(dom, 'vda', 0x32, 4 * MiB, MiB)
        c3 = self.create(dom, cp_xml('c3'))
        nodes = self.node_bitmaps(dom)[imgs['vda']]
        self.assertEqual({k: v[0] for k, v in nodes.items()}, {'c1': MiB, 'c2': MiB, 'c3': 0})
        rec = h.record_signals()
        h.call(c2, C, 'Delete', (0,), 't')
        # c1 holds the union of what it and c2 recorded; c3 is c1's child now.
        nodes = self.node_bitmaps(dom)
        for p in imgs.values():
            self.assertEqual(set(nodes[p]), {'c1', 'c3'})
        self.assertEqual(nodes[imgs['vda']]['c1'], (2 * MiB, False))
        h.qmp(dom, 'block-dirty-bitmap-enable', {'node': 'vda-fmt', 'name': 'c1'})
        self.assertEqual(h.get_property(c3, C, 'Parent'), c1)
        self.assertEqual(h.get_property(c1, C, 'Children'), [c3])
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1, c3])
        rec.wait_for_signal('InterfacesRemoved')
        rec.wait_for_property(dom, 'Checkpoints', [c1, c3], interface=D)
        # Deleting the current one makes its parent current.
        h.call(c3, C, 'Delete', (0,), 't')
        self.assertTrue(h.get_property(c1, C, 'IsCurrent'))
        h.call(dom, D, 'Stop', (0,), 't')
        for p in imgs.values():
            self.assertEqual(image_bitmaps(p), {'c1': ['auto']})
            q.qemu_img_check(p)
        # c1 after the delete of the middle c2: an incremental since it
        # has both writes.
        self.assert_incremental(dom, 'c1', 2 * MiB)

    def test_delete_flags_offline(self):
        h = self.h
        dom, imgs = self.domain()
        a = self.create(dom, cp_xml('a'))
        b = self.create(dom, cp_xml('b'))
        self.create(dom, cp_xml('c'))
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            h.call(a, C, 'Delete', (CHILDREN | CHILDREN_ONLY,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            h.call(a, C, 'Delete', (8,), 't')
        h.call(b, C, 'Delete', (CHILDREN_ONLY,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [a, b])
        for p in imgs.values():
            self.assertEqual(set(image_bitmaps(p)), {'a', 'b'})
        h.call(a, C, 'Delete', (CHILDREN,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        for p in imgs.values():
            self.assertEqual(image_bitmaps(p), {})
        # METADATA_ONLY leaves the bitmaps; a new checkpoint of that name is
        # refused until REDEFINE adopts them.
        d = self.create(dom, cp_xml('d'))
        xml_d = h.call(d, C, 'GetXMLDesc', (SECURE,), 't')
        h.call(d, C, 'Delete', (METADATA_ONLY,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        for p in imgs.values():
            self.assertEqual(set(image_bitmaps(p)), {'d'})
        with self.assertDBusError(q.ERROR_PREFIX + 'AlreadyExists') as e:
            self.create(dom, cp_xml('d'))
        self.assertIn('REDEFINE', e.exception.message)
        d = self.create(dom, xml_d, REDEFINE | REDEFINE_VALIDATE)
        self.assertEqual(h.get_property(d, C, 'Problems'), [])

    def test_missing_bitmap_shown_and_repaired(self):
        h = self.h
        dom, imgs = self.domain()
        c1 = self.create(dom, cp_xml('c1'))
        xml1 = h.call(c1, C, 'GetXMLDesc', (SECURE,), 't')
        q.run([q.QEMU_IMG, 'bitmap', '--remove', imgs['vdb'], 'c1'], check=True)
        # Found when the images are looked at again (here: at the start).
        rec = h.record_signals()
        h.call(dom, D, 'Start', (0,), 't')
        rec.wait_for_property(c1, 'Problems', lambda v: len(v) > 0, interface=C)
        problems = h.get_property(c1, C, 'Problems')
        self.assertEqual(len(problems), 1, problems)
        self.assertIn('vdb', problems[0])
        self.assertIn('missing', problems[0])
        # REDEFINE_VALIDATE refuses what the images do not back.
        h.call(c1, C, 'Delete', (METADATA_ONLY,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'OperationInvalid') as e:
            self.create(dom, xml1, REDEFINE | REDEFINE_VALIDATE)
        self.assertIn('vdb', e.exception.message)
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        # Without VALIDATE it is recorded, shown unusable, and Delete clears it.
        c1 = self.create(dom, xml1, REDEFINE)
        q.wait_until(lambda: h.get_property(c1, C, 'Problems'), 10, 'the problem shown again')
        h.call(c1, C, 'Delete', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        self.assertEqual(self.node_bitmaps(dom).get(imgs['vda'], {}), {})
        # A new checkpoint of that name works again: no "Bitmap already exists".
        self.create(dom, cp_xml('c1'))
        h.call(dom, D, 'Stop', (0,), 't')
        for p in imgs.values():
            self.assertEqual(image_bitmaps(p), {'c1': ['auto']})

    def test_inconsistent_bitmap_shown_and_repaired(self):
        """QEMU killed while it held the image read-write: its bitmaps stay
        "in-use" in the file (inconsistent); the checkpoint says so, and
        Delete removes them (no merge: QEMU refuses to merge one)."""
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        c1 = self.create(dom, cp_xml('c1'))
        c2 = self.create(dom, cp_xml('c2'))
        h.call(dom, D, 'Start', (0,), 't')
        h.write_pattern_live(dom, 'vda', 0x44, 0, MiB)
        rec = h.record_signals()
        os.kill(h.qemu_pid(dom), signal.SIGKILL)
        rec.wait_for_property(dom, 'State', 'crashed', timeout=10)
        self.assertIn('in-use', image_bitmaps(imgs['vda'])['c2'])
        q.wait_until(lambda: h.get_property(c2, C, 'Problems'), 10, 'c2 shown unusable')
        self.assertIn('inconsistent', h.get_property(c2, C, 'Problems')[0])
        h.call(c2, C, 'Delete', (0,), 't')
        h.call(c1, C, 'Delete', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        self.assertEqual(image_bitmaps(imgs['vda']), {})
        # A new checkpoint of an old name works: no "Bitmap already exists".
        self.create(dom, cp_xml('c2'))
        self.assertEqual(image_bitmaps(imgs['vda']), {'c2': ['auto']})

    def test_delete_from_a_read_only_backing_image(self):
        """After an external snapshot the bitmap is in a backing image QEMU
        holds read-only: Delete reopens it read-write and back."""
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x41, 0, MiB)
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        top = self.active(dom, 'vda')
        self.assertIn('c1', self.node_bitmaps(dom)[top])
        h.call(c1, C, 'Delete', (0,), 't')
        nodes = self.node_bitmaps(dom)
        self.assertNotIn('c1', nodes.get(imgs['vda'], {}))
        self.assertNotIn('c1', nodes.get(top, {}))
        fdsets = h.qmp(dom, 'query-fdsets')['return']
        ro = [n for n in h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
              if n.get('drv') == 'qcow2' and h.qemu_file_name(dom, n.get('file'), fdsets) == imgs['vda']]
        self.assertTrue(ro and all(n['ro'] for n in ro), 'the backing image is read-only again')
        h.write_pattern_live(dom, 'vda', 0x42, MiB, MiB)
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(imgs['vda']), {})
        self.assertEqual(image_bitmaps(top), {})
        q.qemu_img_check(imgs['vda'])


class RefusalTest(CheckpointCase):

    def test_bad_requests_change_nothing(self):
        h = self.h
        dom, imgs = self.domain()
        self.create(dom, cp_xml('c1'))
        E = q.ERROR_PREFIX
        self.refused(dom, imgs, E + 'AlreadyExists', cp_xml('c1'))
        self.refused(dom, imgs, E + 'NoSuchDisk', cp_xml('c2', disks=["<disk name='vdz'/>"]))
        self.refused(dom, imgs, E + 'Unsupported', cp_xml('c2', disks=["<disk name='vda' bitmap='other'/>"]))
        self.refused(dom, imgs, E + 'Unsupported', cp_xml('c2'), QUIESCE)
        self.refused(dom, imgs, E + 'InvalidXML', '<domaincheckpoint><name>c2</name>')
        self.refused(dom, imgs, E + 'InvalidXML', '<domaincheckpoint><name>bad/name</name></domaincheckpoint>')
        self.refused(dom, imgs, E + 'InvalidArgument', cp_xml('c2'), 8)
        self.refused(dom, imgs, E + 'InvalidArgument', cp_xml('c2'), REDEFINE_VALIDATE)
        self.refused(dom, imgs, E + 'InvalidXML', cp_xml('c2', disks=["<disk name='vda'/>", "<disk name='vda'/>"]))
        redefined = ('<domaincheckpoint><name>c2</name><parent><name>nope</name></parent>'
                     '<creationTime>1700000000</creationTime></domaincheckpoint>')
        self.refused(dom, imgs, E + 'NoSuchCheckpoint', redefined, REDEFINE)
        # A raw disk cannot hold a bitmap.
        rdom, rimgs = self.domain('rawd', disks=('vda',), fmt='raw')
        with self.assertDBusError(E + 'Unsupported') as e:
            self.create(rdom, cp_xml('c1'))
        self.assertIn('vda', e.exception.message)
        self.assertEqual(h.get_property(rdom, D, 'Checkpoints'), [])

    def test_busy_while_a_job_holds_a_disk(self):
        h = self.h
        base = h.create_image('busy-base.qcow2', '16M')
        top = h.create_image('busy-top.qcow2', '16M', backing=base)
        dom = h.define_domain('busy', [q.Disk('vda', top)])
        c1 = self.create(dom, cp_xml('c1'))
        h.call(dom, D, 'Start', (0,), 't')
        job = h.call(dom, D, 'BlockCommit', ('vda', '', '', 0, 4), 'ssstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the commit READY')
        with self.assertDBusError(q.ERROR_PREFIX + 'Busy'):
            self.create(dom, cp_xml('c2'))
        with self.assertDBusError(q.ERROR_PREFIX + 'Busy'):
            h.call(c1, C, 'Delete', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        h.call(job, J, 'Abort', (0,), 't')

    def test_polkit_denies(self):
        from test_authorization import call_as
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        c1 = self.create(dom, cp_xml('c1'))
        err, _ = call_as(h, q.NOBODY_UID, dom, D, 'CreateCheckpoint', [('s', cp_xml('c2')), ('t', 0)])
        self.assertEqual(err, q.ACCESS_DENIED)
        err, _ = call_as(h, q.NOBODY_UID, c1, C, 'Delete', [('t', 0)])
        self.assertEqual(err, q.ACCESS_DENIED)
        err, _ = call_as(h, q.NOBODY_UID, c1, C, 'GetXMLDesc', [('t', SECURE)])
        self.assertEqual(err, q.ACCESS_DENIED)
        err, _ = call_as(h, q.NOBODY_UID, c1, C, 'GetXMLDesc', [('t', 0)])
        self.assertIsNone(err)
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})


class CrashTest(CheckpointCase):
    """kill -9 at each crash point: a whole checkpoint or none afterwards,
    never a bitmap without metadata nor metadata without bitmaps."""

    CREATE = {'checkpoint-create:intent': False, 'checkpoint-create:bitmaps': True}
    DELETE = ('checkpoint-delete:intent', 'checkpoint-delete:bitmaps')

    def test_create_crashes(self):
        h = self.h
        for live in (True, False):
            for point, exists in self.CREATE.items():
                with self.subTest(point=point, live=live):
                    name = 'cr%d%s' % (live, point.rsplit(':', 1)[1])
                    dom, imgs = self.domain(name)
                    if live:
                        h.call(dom, D, 'Start', (0,), 't')
                    h.crash_at(point, dom, D, 'CreateCheckpoint', (cp_xml('c1'), 0), 'st')
                    want = ['c1'] if exists else []
                    got = [h.get_property(c, C, 'Name') for c in h.get_property(dom, D, 'Checkpoints')]
                    self.assertEqual(got, want)
                    if live:
                        h.call(dom, D, 'Stop', (0,), 't')
                    for p in imgs.values():
                        self.assertEqual(list(image_bitmaps(p)), want, p)

    def test_delete_crashes(self):
        h = self.h
        for live in (True, False):
            for point in self.DELETE:
                with self.subTest(point=point, live=live):
                    name = 'cd%d%s' % (live, point.rsplit(':', 1)[1])
                    dom, imgs = self.domain(name)
                    if live:
                        h.call(dom, D, 'Start', (0,), 't')
                    self.create(dom, cp_xml('c1'))
                    c2 = self.create(dom, cp_xml('c2'))
                    h.crash_at(point, c2, C, 'Delete', (0,), 't')
                    got = [h.get_property(c, C, 'Name') for c in h.get_property(dom, D, 'Checkpoints')]
                    self.assertEqual(got, ['c1'])
                    if live:
                        h.call(dom, D, 'Stop', (0,), 't')
                    for p in imgs.values():
                        self.assertEqual(list(image_bitmaps(p)), ['c1'], p)


    def test_copy_crash_before_the_bitmap_step(self):
        # qsnapd killed when the copy is READY, before the target got the
        # checkpoints' bitmaps (block-copy:bitmaps): the next one adopts the
        # copy and sends the journaled steps; after the Pivot c1 counts
        # exactly what was written since it, over the new image.
        h = self.h
        dom, imgs = self.domain('cc', disks=('vda',))
        q.qemu_io_write_pattern(imgs['vda'], 0x80, 2 * MiB, 4 * MiB)
        # the disk at c1, kept aside (nothing written yet since)
        at_c1 = h.image_path('cc-at-c1.qcow2')
        r = q.run([q.QEMU_IMG, 'convert', '-O', 'qcow2', imgs['vda'], at_c1])
        self.assertEqual(r.returncode, 0, r.stderr)
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x81, 0, MiB)
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x82, 4 * MiB, MiB)
        dest = h.image_path('cc-dest.qcow2')
        mark, job = h.crash_at('block-copy:bitmaps', dom, D, 'BlockCopy',
                               ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>" % dest, 0, 0),
                               'sstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the adopted copy is ready')
        h.wait_for_log(r'copy \S+ is READY: its target gets the checkpoints. bitmaps now', mark)
        h.write_pattern_live(dom, 'vda', 0x83, 8 * MiB, MiB)
        h.call(job, J, 'Pivot')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'completed', 60, 'the copy pivoted')
        self.assertEqual(self.active(dom, 'vda'), dest)
        h.write_pattern_live(dom, 'vda', 0x84, 12 * MiB, MiB)
        self.assertEqual(self.size(c1), 4 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(dest), {'c1': ['auto']})
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if 'copy-bitmaps' in f], [], 'the bitmap journal stayed')
        # The incremental since c1 after all that (shut off: by the paused
        # QEMU), restored onto a copy of the disk at c1, equals the disk.
        inc = h.image_path('cc-inc.qcow2')
        job = h.call(dom, D, 'BackupBegin', ("<domainbackup><incremental>c1</incremental><disks><disk name='vda' "
                                             "type='file'><target file='%s'/></disk></disks></domainbackup>" % inc,
                                             '', 0), 'sst')
        q.wait_until(lambda: h.get_property(job, J, 'State') in ('completed', 'failed', 'canceled'), 60, 'the backup')
        self.assertEqual(h.get_property(job, J, 'State'), 'completed', h.get_property(job, J, 'Error'))
        self.assertEqual(h.get_property(job, J, 'End'), 4 * MiB, 'the incremental copies what changed since c1')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', at_c1, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'qcow2', '-F', 'qcow2', dest, inc])
        self.assertEqual(r.returncode, 0, 'c1 + incremental against the disk: %s' % (r.stdout + r.stderr))


    def test_copy_crash_between_abort_and_bitmap_removal(self):
        # qsnapd killed after an aborted copy ended and before its target
        # lost the bitmaps it got at READY (block-copy:unbitmap): the next
        # one finds the target still open in QEMU, removes them, closes it
        # and keeps the destination (an Abort's, as libvirt).
        h = self.h
        dom, imgs = self.domain('cu', disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x85, 0, MiB)
        dest = h.image_path('cu-dest.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, 0), 'sstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the copy is ready')
        q.wait_until(lambda: 'c1' in self.node_bitmaps(dom).get(dest, {}), 30, 'the target got c1')
        mark, _ = h.crash_at('block-copy:unbitmap', job, J, 'Abort', (0,), 't')
        h.wait_for_log(r'copy job \S+ ended while qsnapd was away; its destination stays', mark)
        q.wait_until(lambda: dest not in self.node_bitmaps(dom), 30, 'the target closed')
        self.assertEqual(image_bitmaps(dest), {}, 'the aborted copy kept our bitmaps')
        self.assertTrue(q.qemu_io_read_pattern(dest, 0x85, 0, MiB), 'the copy has the data')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-copy' in f or 'copy-bitmaps' in f], [],
                         'the copy journal stayed')
        self.assertEqual(self.active(dom, 'vda'), imgs['vda'])
        self.assertEqual(self.size(c1), MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        # A later restart does not take the kept destination for a copy
        # that never started.
        h.restart_daemon()
        self.assertTrue(os.path.exists(dest))
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(dest), {})
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})

    def test_copy_crash_after_qemu_quit_before_bitmap_removal(self):
        # QEMU quits under a READY copy into a REUSE_EXTERNAL destination and
        # writes the bitmaps the target got at READY into the file; qsnapd is
        # killed after QEMU went away and before its qemu-img removed them
        # (block-copy:unbitmap-after-quit): the removal is journaled, so the
        # next qsnapd does it at start-up. The file keeps its data.
        h = self.h
        point = 'block-copy:unbitmap-after-quit'
        dom, imgs = self.domain('cq', disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x7e, 0, MiB)
        dest = q.qemu_img_create(h.image_path('cq-reused.qcow2'), '16M')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, REUSE_EXT), 'sstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the copy is ready')
        q.wait_until(lambda: 'c1' in self.node_bitmaps(dom).get(dest, {}), 30, 'the target got c1')
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_CRASH_AT': point})
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 30, 'the copy is adopted')
        pid, qemu = h.daemon_pid(), h.qemu_pid(dom)
        h._signaled.add(pid)
        mark = h.daemon_log_mark()
        h.qmp(dom, 'quit')
        q.wait_until(lambda: not q._alive(pid), 60, 'qsnapd killed itself at %s' % point)
        h._wait_name_gone()
        self.assertIn('Crash point %s reached' % point, h.daemon_log_since(mark))
        q.wait_until(lambda: not os.path.exists('/proc/%d' % qemu), 30, 'QEMU is gone')
        self.assertIn('c1', image_bitmaps(dest), 'QEMU did not write the bitmap at its exit: nothing to test')
        self.assertEqual(len([f for f in os.listdir(h.runtime_dir) if '.copy-unbitmap-copy-vda-' in f]), 1,
                         'the removal is not journaled')
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'checkpoint bitmap\(s\) we gave its destination removed', mark)
        self.assertEqual(image_bitmaps(dest), {}, 'the copy ended by QEMU kept our bitmaps after the restart')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.copy-unbitmap-' in f], [],
                         'the journaled removal stayed')
        self.assertTrue(q.qemu_io_read_pattern(dest, 0x7e, 0, MiB), 'the copy lost its data')
        q.qemu_img_check(dest)
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})


class ChainTest(CheckpointCase):
    """Bitmaps follow the chain (docs/checkpoints.md §2.5-§2.9): after each
    chain operation every checkpoint is usable and its Size is exactly the
    bytes written since it, over all layers."""

    def test_external_snapshot_live(self):
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x51, 0, MiB)
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        tops = {t: self.active(dom, t) for t in imgs}
        nodes = self.node_bitmaps(dom)
        for t in imgs:
            self.assertNotEqual(tops[t], imgs[t])
            self.assertEqual(nodes[tops[t]]['c1'], (0, True), 'the overlay of %s records for c1' % t)
        h.write_pattern_live(dom, 'vda', 0x52, 4 * MiB, MiB)
        h.write_pattern_live(dom, 'vdb', 0x53, 0, MiB)
        self.assertEqual(self.size(c1), 3 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        # A second checkpoint on the overlay, and a second snapshot.
        c2 = self.create(dom, cp_xml('c2'))
        h.write_pattern_live(dom, 'vda', 0x54, 8 * MiB, MiB)
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s2</name></domainsnapshot>', DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x55, 12 * MiB, MiB)
        self.assertEqual(self.size(c1), 5 * MiB)
        self.assertEqual(self.size(c2), 2 * MiB)
        h.call(dom, D, 'Stop', (0,), 't')
        top = self.active(dom, 'vda')
        self.assertEqual(image_bitmaps(top), {'c1': ['auto'], 'c2': ['auto']})
        self.assertEqual(image_bitmaps(tops['vda']), {'c1': ['auto'], 'c2': ['auto']})
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})
        # Started again, the frozen copies still count.
        h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(self.size(c1), 5 * MiB)
        self.assertEqual(h.get_property(c2, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 4 * MiB)   # vdb's MiB is not in vda's

    def test_external_snapshot_offline(self):
        h = self.h
        dom, imgs = self.domain()
        c1 = self.create(dom, cp_xml('c1'))
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        for t, p in imgs.items():
            top = self.active(dom, t)
            self.assertNotEqual(top, p)
            self.assertEqual(image_bitmaps(top), {'c1': ['auto']})
        h.call(dom, D, 'Start', (0,), 't')
        h.write_pattern_live(dom, 'vda', 0x56, 0, 2 * MiB)
        self.assertEqual(self.size(c1), 2 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 2 * MiB)

    def test_revert_external(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x61, 0, MiB)
        s1 = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x62, 4 * MiB, MiB)
        c2 = self.create(dom, cp_xml('c2'))
        # CheckRevert names what the revert leaves unusable: c2 (made after
        # s1, not in its files), not c1.
        ok, reason = h.call(s1, S, 'CheckRevert', (FORCE,), 't')
        self.assertTrue(ok, reason)
        self.assertIn("Checkpoint 'c2' becomes unusable", reason)
        self.assertIn("snapshot 's1'", reason)
        self.assertNotIn("'c1'", reason)
        h.call(s1, S, 'Revert', (FORCE,), 't')
        top = self.active(dom, 'vda')
        self.assertEqual(image_bitmaps(top), {'c1': ['auto']}, 'the new overlay carries c1 only')
        q.wait_until(lambda: h.get_property(c2, C, 'Problems'), 10, 'c2 unusable on the new branch')
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        # Again: c2 is unusable already and c1 stays, so nothing to name.
        self.assertEqual(h.call(s1, S, 'CheckRevert', (FORCE,), 't'), (True, ''))
        h.call(dom, D, 'Start', (0,), 't')
        h.write_pattern_live(dom, 'vda', 0x63, 8 * MiB, MiB)
        # c1: what the old layer recorded before s1, and the new branch's write.
        self.assertEqual(self.size(c1), 2 * MiB)
        h.call(c2, C, 'Delete', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 2 * MiB)

    def test_revert_internal(self):
        h = self.h
        # Offline: qemu-img snapshot -a refuses while enabled bitmaps exist.
        dom, imgs = self.domain('rint', disks=('vda',))
        c1 = self.create(dom, cp_xml('c1'))
        s1 = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', 0), 'st')
        self.assertEqual(h.get_property(s1, S, 'Location'), 'internal')
        ok, reason = h.call(s1, S, 'CheckRevert', (0,), 't')
        self.assertTrue(ok, reason)
        self.assertIn("Checkpoint 'c1' becomes unusable", reason)
        self.assertIn("internal snapshot 's1'", reason)
        h.call(s1, S, 'Revert', (0,), 't')
        q.wait_until(lambda: h.get_property(c1, C, 'Problems'), 10, 'c1 unusable after an internal revert')
        self.assertEqual(image_bitmaps(imgs['vda']), {})
        h.call(c1, C, 'Delete', (0,), 't')
        # Live, with memory: snapshot-load refuses the same way.
        dom, imgs = self.domain('rlive', disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        s1 = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', 0), 'st')
        self.assertEqual(h.get_property(s1, S, 'Memory'), 'internal')
        h.write_pattern_live(dom, 'vda', 0x64, 0, MiB)
        ok, reason = h.call(s1, S, 'CheckRevert', (0,), 't')
        self.assertTrue(ok, reason)
        self.assertIn("Checkpoint 'c1' becomes unusable", reason)
        h.call(s1, S, 'Revert', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'State'), 'running')
        q.wait_until(lambda: h.get_property(c1, C, 'Problems'), 10, 'c1 unusable after an internal revert')
        self.assertNotIn('c1', self.node_bitmaps(dom).get(imgs['vda'], {}))
        h.call(c1, C, 'Delete', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])

    def job_state(self, job, *states):
        h = self.h
        return q.wait_until(lambda: (lambda v: v if v in states else None)(h.get_property(job, J, 'State')),
                            60, '%s in state %s' % (job, '/'.join(states)))

    def snapshot(self, dom, name):
        return self.h.call(dom, D, 'CreateSnapshot',
                           ('<domainsnapshot><name>%s</name></domainsnapshot>' % name, DISK_ONLY), 'st')

    def test_active_commit_and_pull(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        base = imgs['vda']
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x71, 0, MiB)
        self.snapshot(dom, 's1')
        h.write_pattern_live(dom, 'vda', 0x72, 4 * MiB, MiB)
        # Active commit into the base, with a write while READY.
        job = h.call(dom, D, 'BlockCommit', ('vda', '', '', 0, 4), 'ssstt')
        self.job_state(job, 'ready')
        h.write_pattern_live(dom, 'vda', 0x73, 8 * MiB, MiB)
        h.call(job, J, 'Pivot')
        self.job_state(job, 'completed')
        self.assertEqual(self.active(dom, 'vda'), base)
        self.assertEqual(self.size(c1), 3 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        # Pull: a new overlay, then the base streamed into it.
        self.snapshot(dom, 's2')
        h.write_pattern_live(dom, 'vda', 0x74, 12 * MiB, MiB)
        top = self.active(dom, 'vda')
        job = h.call(dom, D, 'BlockPull', ('vda', 0, 0), 'stt')
        self.job_state(job, 'completed')
        self.assertEqual(self.active(dom, 'vda'), top)
        self.assertEqual(h.get_property(dom, D, 'Disks')[0][3], top, 'the overlay stands alone')
        self.assertEqual(self.size(c1), 4 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(top), {'c1': ['auto']})
        q.qemu_img_check(top)
        self.assert_incremental(dom, 'c1', 4 * MiB)

    def test_commit_of_a_middle_layer(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        base = imgs['vda']
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x75, 0, MiB)
        self.snapshot(dom, 's1')
        mid = self.active(dom, 'vda')
        h.write_pattern_live(dom, 'vda', 0x76, 4 * MiB, MiB)
        self.snapshot(dom, 's2')
        h.write_pattern_live(dom, 'vda', 0x77, 8 * MiB, MiB)
        job = h.call(dom, D, 'BlockCommit', ('vda', base, mid, 0, 0), 'ssstt')
        self.job_state(job, 'completed')
        self.assertNotIn(mid, h.get_property(dom, D, 'Disks')[0][3])
        self.assertEqual(self.size(c1), 3 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(base), {'c1': ['auto']})
        self.assert_incremental(dom, 'c1', 3 * MiB)

    def test_copy_with_pivot(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x78, 0, MiB)
        self.snapshot(dom, 's1')
        h.write_pattern_live(dom, 'vda', 0x79, 4 * MiB, MiB)
        dest = h.image_path('copy-dest.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, 0), 'sstt')
        self.job_state(job, 'ready')
        h.write_pattern_live(dom, 'vda', 0x7a, 8 * MiB, MiB)
        h.call(job, J, 'Pivot')
        self.job_state(job, 'completed')
        self.assertEqual(self.active(dom, 'vda'), dest)
        h.write_pattern_live(dom, 'vda', 0x7b, 12 * MiB, MiB)
        self.assertEqual(self.size(c1), 4 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(dest), {'c1': ['auto']})
        self.assert_incremental(dom, 'c1', 4 * MiB)

    def test_copy_aborted_leaves_a_plain_copy(self):
        # The target got c1 at READY (§2.8); an Abort (no pivot) takes it
        # away again: the destination is the caller's plain copy, as with
        # libvirt, which adds the bitmaps only at the pivot.
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x7c, 0, MiB)
        dest = h.image_path('copy-aborted.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, 0), 'sstt')
        self.job_state(job, 'ready')
        self.assertIn('c1', self.node_bitmaps(dom).get(dest, {}), 'the target got c1 at READY')
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        self.assertNotIn(dest, self.node_bitmaps(dom), 'the aborted copy is still open')
        self.assertEqual(image_bitmaps(dest), {}, 'the aborted copy kept our bitmaps')
        r = q.run([q.QEMU_IMG, 'check', dest])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(q.qemu_io_read_pattern(dest, 0x7c, 0, MiB), 'the copy has the data')
        # The disk and its checkpoint are untouched.
        self.assertEqual(self.active(dom, 'vda'), imgs['vda'])
        self.assertEqual(self.size(c1), MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if 'copy-bitmaps' in f], [], 'the bitmap journal stayed')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})
        self.assertEqual(image_bitmaps(dest), {})

    def test_copy_ended_by_qemu_quit_leaves_a_plain_copy(self):
        # QEMU quits under a READY copy into a REUSE_EXTERNAL destination
        # (kept: it is the caller's file): QEMU's own cancel closes the
        # target and writes the bitmaps it got at READY into it; qsnapd
        # removes them from the file once QEMU is gone.
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x7d, 0, MiB)
        dest = q.qemu_img_create(h.image_path('copy-reused.qcow2'), '16M')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, REUSE_EXT), 'sstt')
        self.job_state(job, 'ready')
        self.assertIn('c1', self.node_bitmaps(dom).get(dest, {}), 'the target got c1 at READY')
        mark = h.daemon_log_mark()
        h.qmp(dom, 'quit')
        q.wait_until(lambda: h.get_property(dom, D, 'State') == 'shutoff', 60, 'the domain shut off')
        self.job_state(job, 'failed', 'canceled')
        h.wait_for_log(r'checkpoint bitmap\(s\) we gave its destination removed', mark)
        self.assertTrue(os.path.exists(dest), 'the REUSE_EXTERNAL destination was removed')
        self.assertEqual(image_bitmaps(dest), {}, 'the copy ended by QEMU kept our bitmaps')
        self.assertEqual(image_bitmaps(imgs['vda']), {'c1': ['auto']})
        q.qemu_img_check(dest)

    def test_copy_into_a_file_with_a_checkpoint_name_refused(self):
        # A REUSE_EXT destination that has a bitmap named like a checkpoint
        # the copy gives its target: AlreadyExists before anything starts
        # (QEMU's add would fail at READY and, after a pivot, that stale
        # bitmap would pass for c1); the file and its bitmap untouched.
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        self.create(dom, cp_xml('c1'))
        dest = q.qemu_img_create(h.image_path('copy-stale.qcow2'), '16M')
        r = q.run([q.QEMU_IMG, 'bitmap', '--add', dest, 'c1'])
        self.assertEqual(r.returncode, 0, r.stderr)
        with self.assertDBusError(q.ERROR_PREFIX + 'AlreadyExists'):
            h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                         % dest, 0, REUSE_EXT), 'sstt')
        self.assertEqual(image_bitmaps(dest), {'c1': ['auto']})
        self.assertEqual(h.get_property(dom, D, 'Jobs'), [])
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        self.assertNotIn(dest, self.node_bitmaps(dom), 'QEMU still has the destination open')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if 'copy-bitmaps' in f or '.job-copy' in f], [])
        # without the stale bitmap the same copy runs
        r = q.run([q.QEMU_IMG, 'bitmap', '--remove', dest, 'c1'])
        self.assertEqual(r.returncode, 0, r.stderr)
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, REUSE_EXT), 'sstt')
        self.job_state(job, 'ready')
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(image_bitmaps(dest), {})

    def wait_job_gone(self, dom):
        q.wait_until(lambda: not [j for j in self.h.get_property(dom, D, 'Jobs')
                                  if self.h.get_property(j, J, 'State') not in ('completed', 'failed', 'canceled')],
                     120, 'the merge job of the delete ended')

    def test_snapshot_delete_merges(self):
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x81, 0, MiB)
        s1 = self.snapshot(dom, 's1')
        h.write_pattern_live(dom, 'vda', 0x82, 4 * MiB, MiB)
        s2 = self.snapshot(dom, 's2')
        h.write_pattern_live(dom, 'vda', 0x83, 8 * MiB, MiB)
        # s1 forward: its overlay (the middle layer) is committed into the base.
        job = h.call(s1, S, 'Delete', (0,), 't')
        if job != '/':
            self.job_state(job, 'completed', 'failed')
            self.assertEqual(h.get_property(job, J, 'State'), 'completed')
        self.assertEqual(len(h.get_property(dom, D, 'Disks')[0][3].split(' <- ')), 2)
        self.assertEqual(self.size(c1), 3 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        # s2 forward: the active layer committed into the base (active commit, pivot).
        job = h.call(s2, S, 'Delete', (0,), 't')
        if job != '/':
            self.job_state(job, 'completed', 'failed')
            self.assertEqual(h.get_property(job, J, 'State'), 'completed')
        self.assertEqual(self.active(dom, 'vda'), imgs['vda'])
        h.write_pattern_live(dom, 'vda', 0x84, 12 * MiB, MiB)
        self.assertEqual(self.size(c1), 4 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 4 * MiB)

    def test_snapshot_delete_backward(self):
        """Backward: the frozen file is streamed into the overlay above it,
        which then holds the only copy: its bitmap must get the frozen
        file's bits."""
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x85, 0, MiB)
        back = ("<domainsnapshot><name>%s</name><disks><disk name='vda' snapshot='external'>"
                "<on_delete merge='backward'/></disk></disks></domainsnapshot>")
        s1 = h.call(dom, D, 'CreateSnapshot', (back % 's1', DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x86, 4 * MiB, MiB)
        self.snapshot(dom, 's2')
        h.write_pattern_live(dom, 'vda', 0x87, 8 * MiB, MiB)
        job = h.call(s1, S, 'Delete', (0,), 't')
        if job != '/':
            self.job_state(job, 'completed', 'failed')
            self.assertEqual(h.get_property(job, J, 'State'), 'completed')
        self.assertNotIn(imgs['vda'], h.get_property(dom, D, 'Disks')[0][3])
        self.assertEqual(self.size(c1), 3 * MiB)
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 3 * MiB)

    def test_snapshot_delete_offline(self):
        """Shut off, qemu-img commit and rebase write through the images'
        enabled bitmaps: the checkpoint stays usable, its changes kept."""
        h = self.h
        for merge in ('forward', 'backward'):
            with self.subTest(merge=merge):
                dom, imgs = self.domain('off' + merge, disks=('vda',))
                c1 = self.create(dom, cp_xml('c1'))
                h.call(dom, D, 'Start', (0,), 't')
                h.write_pattern_live(dom, 'vda', 0x91, 0, MiB)
                xml = ("<domainsnapshot><name>s1</name><disks><disk name='vda' snapshot='external'>"
                       "<on_delete merge='%s'/></disk></disks></domainsnapshot>" % merge)
                s1 = h.call(dom, D, 'CreateSnapshot', (xml, DISK_ONLY), 'st')
                h.write_pattern_live(dom, 'vda', 0x92, 4 * MiB, MiB)
                self.snapshot(dom, 's2')
                h.write_pattern_live(dom, 'vda', 0x93, 8 * MiB, MiB)
                h.call(dom, D, 'Stop', (0,), 't')
                job = h.call(s1, S, 'Delete', (0,), 't')
                if job != '/':
                    self.job_state(job, 'completed', 'failed')
                    self.assertEqual(h.get_property(job, J, 'State'), 'completed')
                self.assertEqual(len(h.get_property(dom, D, 'Disks')[0][3].split(' <- ')), 2)
                h.call(dom, D, 'Start', (0,), 't')
                self.assertEqual(h.get_property(c1, C, 'Problems'), [])
                self.assertEqual(self.size(c1), 3 * MiB)
                h.call(dom, D, 'Stop', (0,), 't')
                self.assert_incremental(dom, 'c1', 3 * MiB)


class TopsTest(CheckpointCase):
    """A new checkpoint on a running domain asks QEMU for every bitmap of
    every node (query-named-block-nodes, whose reply grows with the number
    of checkpoints) only when the graph may have changed since qsnapd last
    saw it; otherwise it sends the one transaction (issue #12: a cost flat
    in the number of checkpoints). What qsnapd sends is seen by a QmpProxy
    between it and the real QEMU."""

    def sent_by(self, proxy, fn):
        n = len(proxy.commands)
        out = fn()
        return out, [c for c in proxy.commands[n:] if c != 'query-block-jobs']

    def test_inventory_only_after_a_change(self):
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)  # a new qsnapd: it has seen nothing yet

        def create(name):
            return self.sent_by(proxy, lambda: self.create(dom, cp_xml(name)))

        _, sent = create('c1')
        self.assertEqual(sent, ['query-named-block-nodes', 'transaction'])
        _, sent = create('c2')
        self.assertEqual(sent, ['transaction'], 'nothing changed since c1: no inventory')
        _, sent = create('c3')
        self.assertEqual(sent, ['transaction'])
        nodes = self.node_bitmaps(dom)  # a monitor command: anything may have changed
        for p in imgs.values():
            self.assertEqual(set(nodes[p]), {'c1', 'c2', 'c3'})
        _, sent = create('c4')
        self.assertEqual(sent, ['query-named-block-nodes', 'transaction'], 'after QemuMonitorCommand')
        # An external snapshot: new tops; c5's bitmaps go to them (the
        # nodes are read again, by c5 or by the refresh of Problems that
        # follows a snapshot, whichever comes first: what is checked is
        # where the bitmaps went).
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        _, sent = create('c5')
        self.assertEqual(sent[-1], 'transaction')
        _, sent = create('c6')
        self.assertEqual(sent, ['transaction'])
        nodes = self.node_bitmaps(dom)
        for t, p in imgs.items():
            top = self.active(dom, t)
            self.assertNotEqual(top, p)
            self.assertEqual(set(nodes[top]), {'c1', 'c2', 'c3', 'c4', 'c5', 'c6'}, t)
            self.assertEqual(set(nodes[p]), {'c1', 'c2', 'c3', 'c4'}, t)
            self.assertTrue(all(nodes[top][b][1] for b in nodes[top]), 'every bitmap of the top records')
        # A name a top image holds without a checkpoint, known from what
        # qsnapd remembered: AlreadyExists naming the image, judged on a
        # fresh inventory; nothing changes.
        self.create(dom, cp_xml('c7'))
        h.call(h.call(dom, D, 'LookupCheckpoint', ('c7',), 's'), C, 'Delete', (METADATA_ONLY,), 't')
        before = h.get_property(dom, D, 'Checkpoints')
        with self.assertDBusError(q.ERROR_PREFIX + 'AlreadyExists') as e:
            self.create(dom, cp_xml('c7'))
        self.assertIn('REDEFINE', e.exception.message)
        self.assertIn(self.active(dom, 'vda'), e.exception.message)
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), before)

    def test_new_tops_after_a_pivot_and_an_active_commit(self):
        """No monitor command in between: what was remembered of the old
        tops is not used for the new ones; each new checkpoint's bitmap is
        in the file that is the top when it was made."""
        h = self.h
        dom, imgs = self.domain(disks=('vda',))
        h.call(dom, D, 'Start', (0,), 't')
        self.create(dom, cp_xml('c1'))
        self.create(dom, cp_xml('c2'))  # on what c1's inventory saw
        dest = h.image_path('tops-dest.qcow2')
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, 0), 'sstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the copy READY')
        h.call(job, J, 'Pivot')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'completed', 60, 'the pivot')
        self.assertEqual(self.active(dom, 'vda'), dest)
        self.create(dom, cp_xml('c3'))
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        overlay = self.active(dom, 'vda')
        self.create(dom, cp_xml('c4'))
        job = h.call(dom, D, 'BlockCommit', ('vda', '', '', 0, 4), 'ssstt')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'ready', 60, 'the commit READY')
        h.call(job, J, 'Pivot')
        q.wait_until(lambda: h.get_property(job, J, 'State') == 'completed', 60, 'the commit')
        self.assertEqual(self.active(dom, 'vda'), dest)
        self.create(dom, cp_xml('c5'))
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(set(image_bitmaps(imgs['vda'])), {'c1', 'c2'})
        self.assertEqual(set(image_bitmaps(dest)), {'c1', 'c2', 'c3', 'c4', 'c5'})
        self.assertEqual(set(image_bitmaps(overlay)), {'c1', 'c2', 'c3', 'c4'})
        for c in ('c1', 'c2', 'c3', 'c4', 'c5'):
            cp = h.call(dom, D, 'LookupCheckpoint', (c,), 's')
            self.assertEqual(h.get_property(cp, C, 'Problems'), [], c)
        q.qemu_img_check(dest)

    def test_refused_transaction_judged_again(self):
        """QEMU refusing the transaction of a create that trusted what
        qsnapd remembered: the images are looked at again (a name taken
        there would be AlreadyExists); when they are fine, QEMU's own text
        as QemuFailed; nothing changed, and the next create works."""
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)
        c1 = self.create(dom, cp_xml('c1'))
        proxy.refuse('transaction', 'refused by the test: transaction')

        def refused():
            with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed') as e:
                self.create(dom, cp_xml('c2'))
            return e.exception.message
        message, sent = self.sent_by(proxy, refused)
        proxy.allow('transaction')
        self.assertEqual(sent, ['transaction', 'query-named-block-nodes'],
                         'the transaction first (no inventory), the inventory after its refusal')
        self.assertIn('refused by the test: transaction', message)
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        nodes = self.node_bitmaps(dom)
        for p in imgs.values():
            self.assertEqual(set(nodes[p]), {'c1'})
        c2 = self.create(dom, cp_xml('c2'))
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1, c2])
        self.assertEqual(h.get_property(c2, C, 'Parent'), c1)
        h.call(dom, D, 'Stop', (0,), 't')
        for p in imgs.values():
            self.assertEqual(set(image_bitmaps(p)), {'c1', 'c2'})

    def test_delete_and_size_on_what_was_remembered(self):
        """Delete and Size use what qsnapd remembers of every layer (as a
        create does the tops): a Delete sends its transaction (with the
        reopens of a backing image around it) and nothing else, the
        Problems refresh after it nothing; a Size one listing for QEMU's
        counts — the checkpoint's own count where only the top holds its
        bitmap, temporary bitmaps merged over the layers otherwise. What
        the shortcuts give is checked: each Size is the bytes written
        since the checkpoint, a deleted name is free again at once, and
        the incremental since the parent a middle checkpoint was merged
        into restores the disk."""
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x51, 0, MiB)
        c2 = self.create(dom, cp_xml('c2'))
        h.write_pattern_live(dom, 'vda', 0x52, 4 * MiB, MiB)
        h.write_pattern_live(dom, 'vdb', 0x53, 0, MiB)
        c3 = self.create(dom, cp_xml('c3'))  # (a monitor command before: it lists)
        c4 = self.create(dom, cp_xml('c4'))
        sizes, sent = self.sent_by(proxy, lambda: self.xml_sizes(c2))
        self.assertEqual(sent, ['query-named-block-nodes'], 'c2 only in the tops: its own counts')
        self.assertEqual(sizes, {'vda': MiB, 'vdb': MiB})
        # The middle c2 merged into c1, the leaf c4, then c1's Size: one
        # listing in all (the two Problems refreshes read nothing).
        sizes, sent = self.sent_by(proxy, lambda: (h.call(c2, C, 'Delete', (0,), 't'),
                                                   h.call(c4, C, 'Delete', (0,), 't'), self.xml_sizes(c1))[2])
        self.assertEqual(sent, ['transaction', 'transaction', 'query-named-block-nodes'])
        self.assertEqual(sizes, {'vda': 2 * MiB, 'vdb': MiB}, 'c1 after c2 merged into it: every write since c1')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1, c3])
        self.assertEqual(h.get_property(c3, C, 'Parent'), c1)
        for c in (c1, c3):
            self.assertEqual(h.get_property(c, C, 'Problems'), [])
        nodes = self.node_bitmaps(dom)
        for p in imgs.values():
            self.assertEqual(set(nodes[p]), {'c1', 'c3'})
        # (a monitor command again: c2 lists, then nothing but transactions)
        c2 = self.create(dom, cp_xml('c2'))
        _, sent = self.sent_by(proxy, lambda: h.call(c2, C, 'Delete', (0,), 't'))
        self.assertEqual(sent, ['transaction'])
        _, sent = self.sent_by(proxy, lambda: self.create(dom, cp_xml('c2')))
        self.assertEqual(sent, ['transaction'], 'a deleted name is free again, known without a listing')
        # After an external snapshot the bitmaps are in two layers: Size
        # merges them into temporary ones; the remembered layers hold
        # again once those are removed.
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x54, 8 * MiB, MiB)
        self.assertEqual(self.xml_sizes(c1), {'vda': 3 * MiB, 'vdb': MiB})
        sizes, sent = self.sent_by(proxy, lambda: self.xml_sizes(c1))
        self.assertEqual(sent, ['transaction', 'query-named-block-nodes', 'transaction'])
        self.assertEqual(sizes, {'vda': 3 * MiB, 'vdb': MiB})
        # c3 from both layers of both disks: the backing images reopened
        # read-write and back around the transaction, no listing before or after.
        _, sent = self.sent_by(proxy, lambda: (h.call(c3, C, 'Delete', (0,), 't'), self.xml_sizes(c1)))
        self.assertEqual(sent, ['blockdev-reopen'] * 2 + ['transaction'] + ['blockdev-reopen'] * 2 +
                         ['transaction', 'query-named-block-nodes', 'transaction'])
        nodes = self.node_bitmaps(dom)
        for t, p in imgs.items():
            self.assertEqual(set(nodes[p]), {'c1', 'c2'}, t)
            self.assertEqual(set(nodes[self.active(dom, t)]), {'c1', 'c2'}, t)
        self.assertEqual(self.xml_sizes(c1), {'vda': 3 * MiB, 'vdb': MiB})
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 3 * MiB)

    def test_size_with_one_disk_in_two_layers(self):
        """A snapshot of vda only: c1's bitmap spans two layers on vda
        (a temporary bitmap merged over them) and is in vdb's top alone
        (its own count read): one measurement does both, and removes only
        the temporary bitmap — c1's own stays, usable, and keeps
        recording."""
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x61, 0, MiB)
        h.write_pattern_live(dom, 'vdb', 0x62, 0, MiB)
        h.call(dom, D, 'CreateSnapshot', ("<domainsnapshot><name>s1</name><disks><disk name='vda' snapshot='external'/>"
                                          "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>", DISK_ONLY), 'st')
        h.write_pattern_live(dom, 'vda', 0x63, 2 * MiB, MiB)
        self.assertEqual(self.xml_sizes(c1), {'vda': 2 * MiB, 'vdb': MiB})
        sizes, sent = self.sent_by(proxy, lambda: self.xml_sizes(c1))
        self.assertEqual(sent, ['transaction', 'query-named-block-nodes', 'transaction'])
        self.assertEqual(sizes, {'vda': 2 * MiB, 'vdb': MiB})
        self.assertEqual(h.get_property(c1, C, 'Problems'), [])
        nodes = self.node_bitmaps(dom)
        self.assertEqual(set(nodes[imgs['vdb']]), {'c1'}, 'the own bitmap read is not removed')
        self.assertNotEqual(self.active(dom, 'vda'), imgs['vda'])
        self.assertEqual(set(nodes[self.active(dom, 'vda')]), {'c1'})
        h.write_pattern_live(dom, 'vdb', 0x64, 4 * MiB, MiB)
        self.assertEqual(self.xml_sizes(c1), {'vda': 2 * MiB, 'vdb': 2 * MiB})
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_incremental(dom, 'c1', 2 * MiB, disk='vdb')
        self.assert_incremental(dom, 'c1', 2 * MiB, disk='vda')

    def test_refused_size_forgets_what_was_remembered(self):
        """A Size measurement whose transaction QEMU refuses forgets what
        qsnapd remembered (docs/decisions.md: anything but a sender's own
        accounted commands — a refused transaction among them — forgets
        it): the next Delete lists the nodes again before its transaction
        instead of planning from it."""
        h = self.h
        dom, imgs = self.domain()
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)
        c1 = self.create(dom, cp_xml('c1'))
        h.write_pattern_live(dom, 'vda', 0x71, 0, MiB)
        # c1 in two layers: a Size merges it into a temporary bitmap (a transaction).
        h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        c2 = self.create(dom, cp_xml('c2'))
        _, sent = self.sent_by(proxy, lambda: self.xml_sizes(c1))
        self.assertEqual(sent, ['transaction', 'query-named-block-nodes', 'transaction'], 'remembered: no listing')
        proxy.refuse('transaction', 'refused by the test')
        _, sent = self.sent_by(proxy, lambda: self.xml_sizes(c1))
        proxy.allow('transaction')
        self.assertEqual(sent, ['transaction'])
        self.assertEqual(proxy.refused, ['transaction'])
        _, sent = self.sent_by(proxy, lambda: h.call(c2, C, 'Delete', (0,), 't'))
        self.assertEqual(sent, ['query-named-block-nodes', 'transaction'], 'after a refused transaction: listed again')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [c1])
        nodes = self.node_bitmaps(dom)
        for t in imgs:
            self.assertEqual(set(nodes[self.active(dom, t)]), {'c1'}, t)


if __name__ == '__main__':
    q.main()
