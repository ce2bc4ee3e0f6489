#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain.CreateSnapshot end to end (DESIGN.md sections 2, 3, 5, 8): the
real qsnapd, the real polkitd and real QEMU on small qcow2 images.

Data is checked the way QEMU's iotests do it: before snapshot k a distinct
pattern (0xA0+k on vda, 0xB0+k on vdb) is written into the running guest's
disk at offset k MiB; afterwards every layer is read back from the host:
the file a snapshot froze reads exactly the patterns written before it and
zeros after, the active layer reads all of them, and `qemu-img check` is
clean on every file. After every snapshot Domain.Disks must agree with
`qemu-img info --backing-chain` of the active file and with QEMU's own
query-block.

- external disk-only of a running domain (two disks, one transaction):
  default overlay names (<image-without-ext>.<snap>), an explicit <source
  file>, per-disk snapshot='no'; overlays 0600; every Snapshot property,
  InterfacesAdded and PropertiesChanged as they come; the snapshot XML's
  elements in libvirt's order; after Stop the domain keeps its overlays,
  and started again it never writes into a file a snapshot froze.
- external disk-only of a shut-off domain (qemu-img create -b -F); a
  default name (the creation time); NO_METADATA (answers "/", the chain
  changes, nothing is listed or current).
- internal with memory (running; paused; HALT), internal disk-only of a
  shut-off domain: the tag is in every qcow2 (qemu-img snapshot -l) and
  holds the data of its time.
- external full-system (<memory snapshot='external'>): memory file 0600 in
  QEMU's migration format, overlays consistent with it, the guest runs on
  (paused stays paused; HALT ends shut off).
- flags: ATOMIC, LIVE, VALIDATE accepted, REUSE_EXT uses the given file,
  QUIESCE is Unsupported with a clear message, unknown bits are refused.
- refused requests change nothing (files, metadata, Disks, QEMU's block
  graph, signals): duplicate name, unknown disk, paths outside the image
  folders, through a symlink (file or folder), existing files without
  REUSE_EXT, unfit REUSE_EXT files, invalid XML, self-contradicting
  requests, memory of a shut-off domain, internal on raw.
- atomicity with two disks: a vdb overlay QEMU cannot open read-write (the
  qcow2 "corrupt" bit) or cannot create (a read-only bind mount): neither
  disk changes, no node is left in QEMU, no metadata, the guest writes on.
- no space (tmpfs): for an overlay and a memory file (refused up front),
  a memory file that fills up during the save, an internal snapshot whose
  image fills up: NoSpace and nothing left behind.
- while a (deliberately slowed) memory snapshot runs: reads answer, a second
  snapshot and Resume are Busy, the reply comes with the guest running; a
  qsnapd killed with -9 in its middle is followed by one that finishes or
  rolls it back (no files or journal left, guest running again).
- read-only and transient disks are left out by default (snapshot='no');
  asking for a transient one is Unsupported; a paused domain stays paused.
"""

import contextlib
import os
import re
import signal
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
import xml.sax.saxutils

import qsnaptest as q

D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE
E = q.ERROR_PREFIX
MiB = 1 << 20
LEN = 256 * 1024          # pattern length at each offset

# CreateSnapshot flags (libvirt's values)
(REDEFINE, CURRENT, NO_METADATA, HALT, DISK_ONLY, REUSE_EXT, QUIESCE, ATOMIC, LIVE,
 VALIDATE) = (1 << i for i in range(10))

SNAPSHOT_PROPS = ('Name', 'Description', 'Parent', 'Children', 'State', 'Location', 'Memory', 'CreationTime',
                  'IsCurrent', 'HasMetadata')
LIBVIRT_ORDER = ('name', 'description', 'state', 'parent', 'creationTime', 'memory', 'disks', 'domain')


def _attr(v):
    return xml.sax.saxutils.quoteattr(v)


def snap_xml(name=None, description=None, memory=None, memory_file=None, disks=None, parent=None, state=None,
             creation_time=None):
    """A <domainsnapshot>. disks: (name, snapshot or None, source or None) tuples."""
    e = xml.sax.saxutils.escape
    out = ['<domainsnapshot>']
    if name is not None:
        out.append('  <name>%s</name>' % e(name))
    if description is not None:
        out.append('  <description>%s</description>' % e(description))
    if state is not None:
        out.append('  <state>%s</state>' % state)
    if parent is not None:
        out.append('  <parent>\n    <name>%s</name>\n  </parent>' % e(parent))
    if creation_time is not None:
        out.append('  <creationTime>%d</creationTime>' % creation_time)
    if memory is not None:
        file_attr = (' file=%s' % _attr(memory_file)) if memory_file else ''
        out.append('  <memory snapshot=%s%s/>' % (_attr(memory), file_attr))
    if disks is not None:
        out.append('  <disks>')
        for d in disks:
            dname, kind, source = (tuple(d) + (None, None))[:3]
            attrs = 'name=%s' % _attr(dname) + ((' snapshot=%s' % _attr(kind)) if kind else '')
            if source:
                out.append("    <disk %s type='file'>\n      <source file=%s/>\n    </disk>" % (attrs, _attr(source)))
            else:
                out.append('    <disk %s/>' % attrs)
        out.append('  </disks>')
    out.append('</domainsnapshot>')
    return '\n'.join(out) + '\n'


def qemu_img_snapshot_tags(img):
    r = q.run([q.QEMU_IMG, 'snapshot', '-l', '-U', img])
    if r.returncode != 0:
        raise RuntimeError('qemu-img snapshot -l %s: %s' % (img, r.stderr.strip()))
    tags = []
    for line in r.stdout.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 2:
            tags.append(parts[1])
    return tags


mounted_tmpfs = q.mounted_tmpfs


class SnapshotTestCase(q.QsnapTestCase):
    """Helpers shared by the snapshot tests (also imported by test_snapshots_tree.py)."""

    # ---- calls
    def create(self, dom, xml, flags=0, timeout=90):
        return self.h.call(dom, D, 'CreateSnapshot', (xml, flags), 'st', timeout=timeout)

    def dprop(self, dom, name):
        return self.h.get_property(dom, D, name)

    def props(self, snap):
        return self.h.get_all(snap, S)

    def snap_path(self, dom, name):
        return self.h.call(dom, D, 'LookupSnapshot', (name,), 's')

    def uuid(self, dom):
        return self.dprop(dom, 'UUID')

    def active(self, dom):
        return {d[0]: d[2] for d in self.dprop(dom, 'Disks')}

    def start(self, dom, flags=0):
        self.h.call(dom, D, 'Start', (flags,), 't')

    def stop(self, dom):
        self.h.call(dom, D, 'Stop', (0,), 't')

    def write(self, dom, target, pattern, offset, length=LEN):
        self.h.write_pattern_live(dom, target, pattern, offset, length)

    # ---- files and chains
    def chain_files(self, active):
        """The backing chain of active as qemu-img sees it, top first."""
        return [i['filename'] for i in q.qemu_img_info(active, backing_chain=True)]

    def qemu_chains(self, dom):
        """{target: [files, top first]} from QEMU's query-block."""
        chains = {}
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        for b in self.h.qmp(dom, 'query-block')['return']:
            target = b['qdev'].split('/')[3]
            files, img = [], b.get('inserted', {}).get('image')
            while img:
                files.append(self.h.qemu_file_name(dom, img['filename'], fdsets))
                img = img.get('backing-image')
            chains[target] = files
        return chains

    def assert_disks_agree(self, dom, msg=''):
        """Domain.Disks == qemu-img info --backing-chain of each active file
        (and, while QEMU runs, == its query-block). Returns Disks."""
        disks = self.dprop(dom, 'Disks')
        live = self.dprop(dom, 'State') in ('running', 'paused')
        chains = self.qemu_chains(dom) if live else None
        for target, fmt, active, chain in disks:
            files = self.chain_files(active)
            self.assertEqual(files[0], active, msg)
            self.assertEqual(chain, ' <- '.join(reversed(files)),
                             '%s: Disks chain of %s disagrees with qemu-img info %s' % (msg, target, files))
            self.assertEqual(fmt, q.qemu_img_info(active)['format'], msg)
            if live:
                self.assertEqual(chains.get(target), files,
                                 '%s: QEMU runs %s on %s, Disks says %s' % (msg, target, chains.get(target), files))
        return disks

    def assert_layer(self, img, present, absent, what=''):
        """img (read with its backing chain) holds each (pattern, offset) of
        present and zeros at each offset of absent."""
        for pattern, offset in present:
            self.assertTrue(q.qemu_io_read_pattern(img, pattern, offset, LEN),
                            '%s %s: expected 0x%02x at %d' % (what, img, pattern, offset))
        for offset in absent:
            self.assertTrue(q.qemu_io_read_pattern(img, 0, offset, LEN),
                            '%s %s: expected zeros at %d' % (what, img, offset))

    def reference(self, patterns, size=64 * MiB):
        """A raw reference image (one per distinct content, under the
        harness's temp dir) holding exactly patterns: (byte, offset) with
        LEN bytes each, or (byte, offset, length)."""
        full = tuple(sorted(tuple(p) if len(p) == 3 else (p[0], p[1], LEN) for p in patterns))
        refs = self.__dict__.setdefault('_references', {})
        if (full, size) not in refs:
            path = os.path.join(self.h.root, 'reference-%d.raw' % len(refs))
            refs[(full, size)] = q.write_reference(path, size, full)
        return refs[(full, size)]

    def assert_disk_is(self, img, patterns, what=''):
        """The WHOLE disk img (read with its backing chain) is exactly
        patterns and zeros elsewhere: qemu-img compare against a reference
        written with the same patterns."""
        size = q.qemu_img_info(img)['virtual-size']
        ref = self.reference(patterns, size)
        q.qemu_img_compare(img, ref, fmt_b='raw',
                           what='%s: %s against its reference (%s)' % (what, img, sorted(patterns)))

    def assert_internal_is(self, img, tag, patterns, what=''):
        """Internal snapshot tag of img holds exactly patterns (its whole
        disk, copied out with qemu-img convert -l, compared)."""
        out = os.path.join(self.h.root, 'internal-copy.raw')
        try:
            self.assertIn(tag, qemu_img_snapshot_tags(img), '%s: %s has no tag %s' % (what, img, tag))
            q.qemu_img_internal_snapshot_copy(img, tag, out)
            ref = self.reference(patterns, os.path.getsize(out))
            q.qemu_img_compare(out, ref, fmt_a='raw', fmt_b='raw',
                               what='%s: snapshot %s of %s against its reference (%s)' % (what, tag, img, sorted(patterns)))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out)

    def assert_check_clean(self, *images):
        for img in images:
            q.qemu_img_check(img, force_share=True)

    def metadata_files(self, dom):
        d = os.path.join(self.h.state_dir, 'snapshots')
        uuid = self.uuid(dom)
        return sorted(f for f in os.listdir(d) if f.startswith(uuid)) if os.path.isdir(d) else []

    def stray_state_files(self, dom):
        """Files of dom under the state folder besides its definition, its
        snapshot metadata and its log: an operation's journal or temporary
        files must be gone once the operation finished or was undone."""
        uuid = self.uuid(dom)
        known = {os.path.join('domains', uuid + '.xml'), os.path.join('snapshots', uuid + '.xml'),
                 os.path.join('snapshots', uuid + '.journal'), os.path.join('log', uuid + '.log')}
        stray = []
        for dirpath, _, filenames in os.walk(self.h.state_dir):
            for f in filenames:
                rel = os.path.relpath(os.path.join(dirpath, f), self.h.state_dir)
                if uuid in f and rel not in known:
                    stray.append(rel)
        return sorted(stray)

    def fingerprint(self, dom, extra_dirs=()):
        """Everything a refused or failed CreateSnapshot must leave as it was."""
        h = self.h
        uuid = self.uuid(dom)
        files = {}
        for top in (h.images_dir,) + tuple(extra_dirs):
            for dirpath, dirnames, filenames in os.walk(top):
                for f in dirnames + filenames:
                    p = os.path.join(dirpath, f)
                    st = os.lstat(p)
                    files[p] = (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0)
        meta = {}
        for p in [os.path.join(h.state_dir, 'snapshots', f) for f in self.metadata_files(dom)] + \
                 [os.path.join(h.state_dir, 'domains', uuid + '.xml'), os.path.join(h.runtime_dir, uuid + '.xml')]:
            if os.path.exists(p):
                with open(p, 'rb') as f:
                    meta[p] = f.read()
        state = self.dprop(dom, 'State')
        return {
            'files': files,
            'metadata': meta,
            'Disks': self.dprop(dom, 'Disks'),
            'Snapshots': self.dprop(dom, 'Snapshots'),
            'CurrentSnapshot': self.dprop(dom, 'CurrentSnapshot'),
            'List': h.call(dom, D, 'ListSnapshots', (0,), 't'),
            'State': state,
            'stray state files': self.stray_state_files(dom),
            'qemu': self.qemu_chains(dom) if state in ('running', 'paused') else None,
            'nodes': sorted(n['node-name'] for n in h.qmp(dom, 'query-named-block-nodes')['return'])
            if state in ('running', 'paused') else None,
        }

    @contextlib.contextmanager
    def unchanged(self, dom, extra_dirs=(), signals=True):
        """The block must change nothing about dom; with signals, not one
        signal about dom or its snapshots may be sent either."""
        before = self.fingerprint(dom, extra_dirs)
        rec = self.h.record_signals()
        try:
            yield
            after = self.fingerprint(dom, extra_dirs)
            self.h.barrier(dom)
            for key in before:
                self.assertEqual(after[key], before[key], '%s changed' % key)
            if signals:
                seen = [s for s in rec.records if s.path.startswith(dom) or
                        (s.member in ('InterfacesAdded', 'InterfacesRemoved') and str(s.args[0]).startswith(dom))]
                self.assertEqual(seen, [], 'signals sent for a refused call')
        finally:
            rec.close()

    def refused(self, dom, error, xml, flags=0, message_has=None, extra_dirs=(), signals=True):
        """CreateSnapshot(xml, flags) fails with error and changes nothing."""
        with self.unchanged(dom, extra_dirs, signals):
            with self.assertDBusError(error) as cm:
                self.create(dom, xml, flags)
        if message_has:
            self.assertIn(message_has, cm.exception.message)
        return cm.exception

    def assert_snapshot_xml(self, snap, order=None):
        """GetXMLDesc parses and has libvirt's elements in libvirt's order."""
        text = self.h.call(snap, S, 'GetXMLDesc', (0,), 't')
        root = ET.fromstring(text)
        self.assertEqual(root.tag, 'domainsnapshot')
        tags = [c.tag for c in root]
        known = [t for t in tags if t in LIBVIRT_ORDER]
        self.assertEqual(known, sorted(known, key=LIBVIRT_ORDER.index), 'element order: %s' % tags)
        if order is not None:
            self.assertEqual(tags, list(order))
        return root


class ExternalTest(SnapshotTestCase):
    def test_live_disk_only_chain_data_and_signals(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('ext', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/')
        rec = h.record_signals()
        custom = h.image_path('custom-a1.qcow2')
        steps = [
            # (name, xml, expected new active files)
            ('s0', snap_xml('s0'), {'vda': h.image_path('a.s0'), 'vdb': h.image_path('b.s0')}),
            ('s1', snap_xml('s1', description='second, <vda> elsewhere',
                            disks=[('vda', None, custom), ('vdb', 'external')]),
             {'vda': custom, 'vdb': h.image_path('b.s1')}),
            ('s2', snap_xml('s2', disks=[('vdb', 'no')]),
             {'vda': h.image_path('custom-a1.s2'), 'vdb': h.image_path('b.s1')}),
        ]
        frozen = {'vda': [], 'vdb': []}     # files in the order they were frozen
        snaps = []
        for k, (name, xml_text, expect) in enumerate(steps):
            self.write(dom, 'vda', 0xa0 + k, k * MiB)
            self.write(dom, 'vdb', 0xb0 + k, k * MiB)
            before = self.active(dom)
            mark = rec.mark()
            path = self.create(dom, xml_text, DISK_ONLY)
            self.assertEqual(path, self.snap_path(dom, name))
            snaps.append(path)
            now = self.assert_disks_agree(dom, 'after %s' % name)
            self.assertEqual(self.active(dom), expect)
            for t in ('vda', 'vdb'):
                if expect[t] != before[t]:
                    frozen[t].append(before[t])
                    self.assertEqual(self.chain_files(expect[t])[1], before[t])
                    self.assertEqual(stat.S_IMODE(os.stat(expect[t]).st_mode), 0o600, expect[t])
            self.assertEqual(self.dprop(dom, 'State'), 'running')
            self.assertEqual(self.stray_state_files(dom), [])

            p = self.props(path)
            self.assertEqual(p['Name'], name)
            self.assertEqual(p['Parent'], snaps[k - 1] if k else '/')
            self.assertEqual(p['Children'], [])
            self.assertEqual(p['State'], 'disk-snapshot')
            self.assertEqual(p['Location'], 'external')
            self.assertEqual(p['Memory'], 'no')
            self.assertTrue(p['IsCurrent'])
            self.assertTrue(p['HasMetadata'])
            self.assertLessEqual(abs(p['CreationTime'] - int(time.time())), 60)
            self.assertEqual(p['Description'], 'second, <vda> elsewhere' if name == 's1' else '')
            self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), path)
            self.assertEqual(self.dprop(dom, 'Snapshots'), snaps)

            # Signals: the object with all its properties, the old current
            # and the parent, the domain's lists and its new Disks.
            added = rec.wait_for(lambda s: s.member == 'InterfacesAdded' and s.args[0] == path, start=mark)
            self.assertEqual(added.path, q.MANAGER_PATH)
            self.assertEqual(added.args[1].get(S), p)
            rec.wait_for_property(dom, 'CurrentSnapshot', path, start=mark)
            rec.wait_for_property(dom, 'Snapshots', snaps, start=mark)
            rec.wait_for_property(dom, 'Disks', now, start=mark)
            if k:
                rec.wait_for_property(snaps[k - 1], 'IsCurrent', False, start=mark)
                rec.wait_for_property(snaps[k - 1], 'Children', [path], start=mark)
                self.assertFalse(h.get_property(snaps[k - 1], S, 'IsCurrent'))
                self.assertEqual(h.get_property(snaps[k - 1], S, 'Children'), [path])
            managed = h.client.managed_objects()
            self.assertEqual(managed[path][S], p)

            # The XML: libvirt's elements and order, the overlays named.
            order = ['name'] + (['description'] if name == 's1' else []) + ['state'] + (['parent'] if k else []) + \
                ['creationTime', 'memory', 'disks', 'domain']
            root = self.assert_snapshot_xml(path, order)
            self.assertEqual(root.findtext('name'), name)
            self.assertEqual(root.findtext('state'), 'disk-snapshot')
            self.assertEqual(root.find('memory').get('snapshot'), 'no')
            disks = {d.get('name'): d for d in root.find('disks')}
            self.assertEqual(sorted(disks), ['vda', 'vdb'])
            for t in ('vda', 'vdb'):
                if expect[t] != before[t]:
                    self.assertEqual(disks[t].get('snapshot'), 'external')
                    self.assertEqual(disks[t].find('source').get('file'), expect[t])
                else:
                    self.assertEqual(disks[t].get('snapshot'), 'no')
            dom_disks = {d.find('target').get('dev'): d.find('source').get('file')
                         for d in root.find('domain').find('devices').findall('disk')}
            self.assertEqual(dom_disks, before, 'the <domain> of %s is not the one at its time' % name)

        self.write(dom, 'vda', 0xa3, 3 * MiB)
        self.write(dom, 'vdb', 0xb3, 3 * MiB)
        offsets = [k * MiB for k in range(4)]
        final = steps[-1][2]

        def check_layers(when):
            for t, base in (('vda', 0xa0), ('vdb', 0xb0)):
                for i, img in enumerate(frozen[t]):
                    # vdb was frozen at s0 and s1 only (s2 left it alone)
                    n = i + 1
                    self.assert_layer(img, [(base + j, offsets[j]) for j in range(n)], offsets[n:],
                                      '%s: %s layer %d' % (when, t, i))
                    self.assert_disk_is(img, [(base + j, offsets[j]) for j in range(n)],
                                        '%s: %s layer %d' % (when, t, i))
                self.assert_layer(final[t], [(base + j, offsets[j]) for j in range(4)], [],
                                  '%s: %s active' % (when, t))
                self.assert_disk_is(final[t], [(base + j, offsets[j]) for j in range(4)], '%s: %s active' % (when, t))
        check_layers('live')
        self.assertEqual(frozen['vda'], [a, h.image_path('a.s0'), custom])
        self.assertEqual(frozen['vdb'], [b, h.image_path('b.s0')])

        disks_running = self.dprop(dom, 'Disks')
        with self.subTest('the stored definition follows the live snapshots'):
            xml_inactive = h.call(dom, D, 'GetXMLDesc', (2,), 't')
            self.assertIn("<source file='%s'/>" % h.image_path('custom-a1.s2'), xml_inactive)
        self.stop(dom)
        with self.subTest('after Stop the domain keeps its overlays'):
            self.assertEqual(self.dprop(dom, 'Disks'), disks_running,
                             'after Stop the domain must keep running on its overlays '
                             '(the stored definition was not updated by the live snapshot)')
        self.assert_disks_agree(dom, 'after Stop')
        check_layers('offline')
        self.assert_check_clean(*(frozen['vda'] + frozen['vdb'] +
                                  [h.image_path('custom-a1.s2'), h.image_path('b.s1')]))

        # Started again, the guest writes on top of the chain, never into a
        # file that a snapshot froze.
        self.start(dom)
        self.write(dom, 'vda', 0xa4, 4 * MiB)
        self.write(dom, 'vdb', 0xb4, 4 * MiB)
        self.stop(dom)
        for t, base in (('vda', 0xa0), ('vdb', 0xb0)):
            for i, img in enumerate(frozen[t]):
                self.assert_layer(img, [(base + j, offsets[j]) for j in range(i + 1)], offsets[i + 1:] + [4 * MiB],
                                  'after a restart of the domain: %s frozen layer %d' % (t, i))
                self.assert_disk_is(img, [(base + j, offsets[j]) for j in range(i + 1)],
                                    'after a restart of the domain: %s frozen layer %d' % (t, i))
            self.assert_layer(final[t], [(base + j, offsets[j]) for j in range(4)] + [(base + 4, 4 * MiB)], [],
                              'after a restart of the domain: %s active' % t)
            self.assert_disk_is(final[t], [(base + j, offsets[j]) for j in range(4)] + [(base + 4, 4 * MiB)],
                                'after a restart of the domain: %s active' % t)

    def test_offline_disk_only_default_name_and_no_metadata(self):
        h = self.h
        a = h.create_image('base.img.qcow2')
        q.qemu_io_write_pattern(a, 0xa0, 0, LEN)
        dom = h.define_domain('offline', [q.Disk('vda', a)])
        rec = h.record_signals()
        t0 = int(time.time())
        s = self.create(dom, '<domainsnapshot><description>no name</description></domainsnapshot>', DISK_ONLY)
        t1 = int(time.time())
        p = self.props(s)
        self.assertRegex(p['Name'], r'^\d+$')
        self.assertTrue(t0 <= int(p['Name']) <= t1, p['Name'])
        self.assertEqual(p['CreationTime'], int(p['Name']))
        self.assertEqual((p['State'], p['Location'], p['Memory'], p['Description']),
                         ('shutoff', 'external', 'no', 'no name'))
        self.assertTrue(p['IsCurrent'])
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        overlay = h.image_path('base.img.' + p['Name'])
        self.assertEqual(self.active(dom), {'vda': overlay})
        info = q.qemu_img_info(overlay)
        self.assertEqual((info['format'], info['backing-filename'], info['backing-filename-format']),
                         ('qcow2', a, 'qcow2'))
        self.assertEqual(stat.S_IMODE(os.stat(overlay).st_mode), 0o600)
        self.assert_disks_agree(dom)
        rec.wait_for(lambda x: x.member == 'InterfacesAdded' and x.args[0] == s)
        rec.wait_for_property(dom, 'Disks', self.dprop(dom, 'Disks'))

        # NO_METADATA: the chain grows, nothing is recorded.
        rec2 = h.record_signals()
        listed = h.call(dom, D, 'ListSnapshots', (0,), 't')
        meta = self.metadata_files(dom)
        self.assertEqual(self.create(dom, snap_xml('hidden'), DISK_ONLY | NO_METADATA), '/')
        hidden = h.image_path('base.img.hidden')
        self.assertEqual(self.active(dom), {'vda': hidden})
        self.assertEqual(self.chain_files(hidden), [hidden, overlay, a])
        self.assert_disks_agree(dom)
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), listed)
        self.assertEqual(self.dprop(dom, 'Snapshots'), listed)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), s)
        with self.assertDBusError(E + 'NoSuchSnapshot'):
            self.snap_path(dom, 'hidden')
        rec2.wait_for_property(dom, 'Disks')
        h.client.sync()
        self.assertEqual([x for x in rec2.records if x.member in ('InterfacesAdded', 'InterfacesRemoved')], [])
        self.assertNotIn('Snapshots', [k for x in rec2.records if x.member == 'PropertiesChanged' for k in x.args[1]])
        self.assertEqual(self.metadata_files(dom), meta)

        # The domain starts on the new chain, and the old data is there.
        self.start(dom)
        self.assert_disks_agree(dom, 'started')
        self.write(dom, 'vda', 0xa1, MiB)
        self.stop(dom)
        self.assert_layer(a, [(0xa0, 0)], [MiB])
        self.assert_layer(overlay, [(0xa0, 0)], [MiB])
        self.assert_layer(hidden, [(0xa0, 0), (0xa1, MiB)], [])
        self.assert_disk_is(a, [(0xa0, 0)], 'base')
        self.assert_disk_is(overlay, [(0xa0, 0)], 'the overlay frozen by NO_METADATA')
        self.assert_disk_is(hidden, [(0xa0, 0), (0xa1, MiB)], 'active')
        self.assert_check_clean(a, overlay, hidden)

    def test_full_system_external(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('full', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.write(dom, 'vda', 0xa0, 0)
        self.write(dom, 'vdb', 0xb0, 0)
        mem1 = h.image_path('f1.mem')
        s1 = self.create(dom, snap_xml('f1', memory='external', memory_file=mem1))
        with self.subTest('State right after the reply'):
            # libvirt resumes the guest before it answers; so must we.
            self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        p = self.props(s1)
        self.assertEqual((p['State'], p['Location'], p['Memory']), ('running', 'external', 'external'))
        st = os.stat(mem1)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(mem1, 'rb') as f:
            self.assertEqual(f.read(4), b'QEVM', 'the memory file is not a QEMU migration stream')
        self.assertGreater(st.st_size, 64 * 1024)
        self.assertEqual(self.active(dom), {'vda': h.image_path('a.f1'), 'vdb': h.image_path('b.f1')})
        self.assert_disks_agree(dom, 'after f1')
        root = self.assert_snapshot_xml(s1)
        self.assertEqual(root.find('memory').attrib, {'snapshot': 'external', 'file': mem1})
        self.assertEqual(root.findtext('state'), 'running')
        # The guest runs on and writes into the new overlays only.
        self.write(dom, 'vda', 0xa1, MiB)
        h.verify_pattern_live(dom, 'vda', 0xa1, MiB, LEN)
        self.assert_layer(a, [(0xa0, 0)], [MiB])
        self.assert_layer(h.image_path('a.f1'), [(0xa0, 0), (0xa1, MiB)], [])

        # Paused: recorded as paused, and it stays paused.
        h.call(dom, D, 'Pause')
        mem2 = h.image_path('f2.mem')
        s2 = self.create(dom, snap_xml('f2', memory='external', memory_file=mem2))
        self.assertEqual(self.props(s2)['State'], 'paused')
        self.assertEqual(self.props(s2)['Parent'], s1)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertNotEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.assert_disks_agree(dom, 'after f2')
        h.call(dom, D, 'Resume')
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.write(dom, 'vdb', 0xb2, 2 * MiB)
        self.assert_layer(h.image_path('b.f1'), [(0xb0, 0)], [2 * MiB])

        # LIVE | HALT: memory saved while running, the domain ends shut off.
        mem3 = h.image_path('f3.mem')
        s3 = self.create(dom, snap_xml('f3', memory='external', memory_file=mem3), LIVE | HALT)
        with self.subTest('HALT: shut off when the call returns'):
            self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertTrue(q.spin(lambda: self.dprop(dom, 'State') == 'shutoff', 20), 'HALT did not stop the domain')
        self.assertEqual(self.props(s3)['State'], 'running')
        self.assertTrue(os.path.getsize(mem3) > 0)
        for x in 'ab':
            self.assertEqual(self.chain_files(h.image_path(x + '.f3'))[1], h.image_path(x + '.f2'))
        with self.subTest('after HALT the domain keeps its overlays'):
            self.assertEqual(self.active(dom), {'vda': h.image_path('a.f3'), 'vdb': h.image_path('b.f3')})
        self.assert_disks_agree(dom, 'after HALT')
        self.assert_layer(h.image_path('b.f2'), [(0xb0, 0), (0xb2, 2 * MiB)], [])
        # every point in time, whole: f1 froze a and b, f2 a.f1 and b.f1, f3 a.f2 and b.f2
        for img, patterns in ((a, [(0xa0, 0)]), (b, [(0xb0, 0)]),
                              (h.image_path('a.f1'), [(0xa0, 0), (0xa1, MiB)]), (h.image_path('b.f1'), [(0xb0, 0)]),
                              (h.image_path('a.f2'), [(0xa0, 0), (0xa1, MiB)]),
                              (h.image_path('b.f2'), [(0xb0, 0), (0xb2, 2 * MiB)]),
                              (h.image_path('a.f3'), [(0xa0, 0), (0xa1, MiB)]),
                              (h.image_path('b.f3'), [(0xb0, 0), (0xb2, 2 * MiB)])):
            self.assert_disk_is(img, patterns, 'full-system snapshots')
        self.assert_check_clean(a, b, *[h.image_path(x + y) for x in 'ab' for y in ('.f1', '.f2', '.f3')])


class InternalTest(SnapshotTestCase):
    def test_internal_live_paused_halt_and_offline(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('int', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.write(dom, 'vda', 0xc0, 0)
        i1 = self.create(dom, snap_xml('i1', description='live, with memory'))
        p = self.props(i1)
        self.assertEqual((p['State'], p['Location'], p['Memory'], p['Parent']),
                         ('running', 'internal', 'internal', '/'))
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(self.active(dom), {'vda': a, 'vdb': b})
        self.assert_disks_agree(dom, 'after i1')
        for img in (a, b):
            self.assertIn('i1', qemu_img_snapshot_tags(img), img)
        root = self.assert_snapshot_xml(i1)
        self.assertEqual(root.find('memory').get('snapshot'), 'internal')
        self.assertEqual({d.get('name'): d.get('snapshot') for d in root.find('disks')},
                         {'vda': 'internal', 'vdb': 'internal'})
        self.write(dom, 'vda', 0xc1, 0)        # overwrites what i1 keeps
        self.write(dom, 'vda', 0xc2, MiB)

        h.call(dom, D, 'Pause')
        i2 = self.create(dom, snap_xml('i2'))
        self.assertEqual(self.props(i2)['State'], 'paused')
        self.assertEqual(self.props(i2)['Parent'], i1)
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'paused')
        h.call(dom, D, 'Resume')

        i3 = self.create(dom, snap_xml('i3'), HALT)
        with self.subTest('HALT: shut off when the call returns'):
            self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assertTrue(q.spin(lambda: self.dprop(dom, 'State') == 'shutoff', 20), 'HALT did not stop the domain')
        self.assertEqual((self.props(i3)['State'], self.props(i3)['Memory']), ('running', 'internal'))

        # Shut off, default flags: internal, disk-only (qemu-img snapshot -c).
        o1 = self.create(dom, snap_xml('o1'))
        p = self.props(o1)
        self.assertEqual((p['State'], p['Location'], p['Memory'], p['Parent'], p['IsCurrent']),
                         ('shutoff', 'internal', 'no', i3, True))
        for img in (a, b):
            self.assertEqual(qemu_img_snapshot_tags(img), ['i1', 'i2', 'i3', 'o1'])
        self.assertEqual(self.active(dom), {'vda': a, 'vdb': b})
        self.assert_disks_agree(dom)

        # What each snapshot keeps is the data of its time, whole, on both disks.
        saved = h.image_path('i1-export.qcow2')
        r = q.run([q.QEMU_IMG, 'convert', '-U', '-l', 'snapshot.name=i1', '-O', 'qcow2', a, saved])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_layer(saved, [(0xc0, 0)], [MiB], 'i1')
        os.unlink(saved)
        for tag, patterns in (('i1', [(0xc0, 0)]), ('i2', [(0xc1, 0), (0xc2, MiB)]),
                              ('i3', [(0xc1, 0), (0xc2, MiB)]), ('o1', [(0xc1, 0), (0xc2, MiB)])):
            self.assert_internal_is(a, tag, patterns, 'vda')
            self.assert_internal_is(b, tag, [], 'vdb')
        self.assert_layer(a, [(0xc1, 0), (0xc2, MiB)], [], 'active')
        self.assert_disk_is(a, [(0xc1, 0), (0xc2, MiB)], 'active vda')
        self.assert_disk_is(b, [], 'active vdb')
        self.assert_check_clean(a, b)

        # Internal snapshots of a running domain always hold its memory.
        self.start(dom)
        self.refused(dom, E + 'Unsupported', snap_xml('nope', disks=[('vda', 'internal'), ('vdb', 'internal')]),
                     DISK_ONLY)

    def test_internal_needs_qcow2(self):
        h = self.h
        raw = h.create_image('r.img', fmt='raw')
        dom = h.define_domain('raw', [q.Disk('vda', raw, 'raw')])
        self.refused(dom, E + 'Unsupported', snap_xml('x'))                # default: internal
        # external works on raw, with a raw backing format
        s = self.create(dom, snap_xml('e'), DISK_ONLY)
        self.assertEqual(self.props(s)['Location'], 'external')
        info = q.qemu_img_info(h.image_path('r.e'))
        self.assertEqual(info.get('backing-filename-format'), 'raw')
        self.assertEqual(self.dprop(dom, 'Disks'),
                         [('vda', 'qcow2', h.image_path('r.e'), '%s <- %s' % (raw, h.image_path('r.e')))])


class FlagsAndErrorsTest(SnapshotTestCase):
    def setUp(self):
        super().setUp()
        h = self.h
        self.outside = os.path.join(h.root, 'outside')
        os.mkdir(self.outside)

    def test_bad_input_changes_nothing(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('bad', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.create(dom, snap_xml('first'), DISK_ONLY)
        ext = (self.outside,)

        def refused(error, xml_text, flags=DISK_ONLY, has=None):
            with self.subTest(error=error, xml=xml_text, flags=flags):
                self.refused(dom, error, xml_text, flags, has, extra_dirs=ext)

        refused(E + 'AlreadyExists', snap_xml('first'))
        refused(E + 'AlreadyExists', snap_xml('first'), 0)
        refused(E + 'NoSuchDisk', snap_xml('x', disks=[('vdz', 'external')]))
        refused(E + 'NoSuchDisk', snap_xml('x', disks=[(h.image_path('nope.qcow2'), 'external')]))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, os.path.join(self.outside, 'o.qcow2'))]))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, '/var/tmp/qsnapt-never.qcow2')]))
        # a symlink as the overlay (dangling, pointing outside; and to an existing file)
        os.symlink(os.path.join(self.outside, 'target.qcow2'), h.image_path('link.qcow2'))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, h.image_path('link.qcow2'))]))
        os.symlink(b, h.image_path('link-b.qcow2'))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, h.image_path('link-b.qcow2'))]))
        # a folder that is a symlink to outside
        os.symlink(self.outside, h.image_path('linkdir'))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, h.image_path('linkdir/o.qcow2'))]))
        # an existing file without REUSE_EXT (even a fit one)
        fit = q.qemu_img_create(h.image_path('fit.qcow2'), None, backing=self.active(dom)['vda'])
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, fit)]))
        refused(E + 'PathNotAllowed', snap_xml('x', disks=[('vda', None, b)]))
        # the default name of an overlay taken already
        q.qemu_img_create(h.image_path('b.taken'), '64M')
        refused(E + 'PathNotAllowed', snap_xml('taken'))
        os.unlink(h.image_path('b.taken'))
        # memory files: outside, existing, through a symlink
        refused(E + 'PathNotAllowed', snap_xml('x', memory='external', memory_file=os.path.join(self.outside, 'm')), 0)
        refused(E + 'PathNotAllowed', snap_xml('x', memory='external', memory_file=fit), 0)
        refused(E + 'PathNotAllowed', snap_xml('x', memory='external', memory_file=h.image_path('link.qcow2')), 0)
        # REUSE_EXT with unfit files
        refused(E + 'InvalidArgument', snap_xml('x', disks=[('vda', None, b), ('vdb', 'no')]), DISK_ONLY | REUSE_EXT)
        raw = h.create_image('raw.img', fmt='raw')
        refused(E + 'InvalidArgument', snap_xml('x', disks=[('vda', None, raw), ('vdb', 'no')]), DISK_ONLY | REUSE_EXT)
        # invalid XML
        for bad in ('<domainsnapshot><name>x</name>', '<domain/>', 'not xml at all', '',
                    "<domainsnapshot><memory snapshot='sideways'/></domainsnapshot>",
                    "<domainsnapshot><disks><disk/></disks></domainsnapshot>"):
            refused(E + 'InvalidXML', bad)
        with open(q.source_path('tests', 'fixtures', 'snapshot', 'xxe.xml')) as f:
            refused(E + 'InvalidXML', f.read())
        # requests that contradict themselves
        refused(E + 'InvalidArgument', snap_xml('x', disks=[('vda', None, h.image_path('same')),
                                                            ('vdb', None, h.image_path('same'))]))
        refused(E + 'InvalidArgument', snap_xml('x', memory='external', memory_file=h.image_path('m')), DISK_ONLY)
        refused(E + 'InvalidArgument', snap_xml('x', memory='no', disks=[('vda', 'no'), ('vdb', 'no')]), 0)
        refused(E + 'Unsupported', snap_xml('x', disks=[('vda', 'internal'), ('vdb', 'external')]), 0)
        # flags
        refused(E + 'Unsupported', snap_xml('x'), DISK_ONLY | QUIESCE, has='agent')
        refused(E + 'InvalidArgument', snap_xml('x'), DISK_ONLY | (1 << 10))
        refused(E + 'InvalidArgument', snap_xml('x'), 1 << 40)
        refused(E + 'InvalidArgument', snap_xml('x'), DISK_ONLY | CURRENT)
        refused(E + 'InvalidArgument', snap_xml('x'), REDEFINE | NO_METADATA)
        # an overlay name longer than the file system allows: a named error
        with self.unchanged(dom, ext):
            with self.assertDBusError(E + 'InvalidArgument') as cm:
                self.create(dom, snap_xml('x' * 300), DISK_ONLY)
        self.assertEqual(cm.exception.message, 'The file name %s is too long for the file system.'
                         % h.image_path('a.' + 'x' * 300))
        # nothing was left anywhere by all that
        self.assertEqual(os.listdir(self.outside), [])
        self.assertEqual(self.dprop(dom, 'Snapshots'), [self.snap_path(dom, 'first')])
        self.assert_disks_agree(dom)
        self.write(dom, 'vda', 0x5a, 0)

        # A shut-off domain has no memory to save.
        self.stop(dom)
        refused(E + 'OperationInvalid', snap_xml('x', memory='external', memory_file=h.image_path('m.mem')), 0)
        refused(E + 'OperationInvalid', snap_xml('x', memory='internal'), 0)
        # A crashed one is refused.
        self.start(dom)
        os.kill(h.qemu_pid(dom), signal.SIGKILL)
        self.assertTrue(q.spin(lambda: self.dprop(dom, 'State') == 'crashed', 10))
        refused(E + 'OperationInvalid', snap_xml('x'))

    def test_reuse_ext_and_accepted_flags(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('flags', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        # REUSE_EXT: the given files are used as they are (same inode).
        ra = q.qemu_img_create(h.image_path('reuse-a.qcow2'), None, backing=a)
        rb = q.qemu_img_create(h.image_path('reuse-b.qcow2'), None, backing=b)
        inodes = (os.stat(ra).st_ino, os.stat(rb).st_ino)
        s = self.create(dom, snap_xml('reuse', disks=[('vda', None, ra), ('vdb', None, rb)]), DISK_ONLY | REUSE_EXT)
        self.assertEqual(self.active(dom), {'vda': ra, 'vdb': rb})
        self.assertEqual((os.stat(ra).st_ino, os.stat(rb).st_ino), inodes)
        self.assert_disks_agree(dom, 'after REUSE_EXT')
        self.assertEqual(self.props(s)['Location'], 'external')
        # ATOMIC, VALIDATE, LIVE (meaningless without memory) are accepted.
        for name, flags in (('atomic', DISK_ONLY | ATOMIC), ('validate', DISK_ONLY | VALIDATE),
                            ('live', DISK_ONLY | LIVE | ATOMIC)):
            with self.subTest(flags=flags):
                s = self.create(dom, snap_xml(name), flags)
                self.assertEqual(self.props(s)['Name'], name)
                self.assertEqual(self.active(dom)['vda'], h.image_path('reuse-a.' + name))
                self.assert_disks_agree(dom, name)
        # Live NO_METADATA: the chain grows, nothing is listed.
        listed = h.call(dom, D, 'ListSnapshots', (0,), 't')
        current = self.dprop(dom, 'CurrentSnapshot')
        self.assertEqual(self.create(dom, snap_xml('nometa'), DISK_ONLY | NO_METADATA), '/')
        self.assertEqual(self.active(dom)['vda'], h.image_path('reuse-a.nometa'))
        self.assert_disks_agree(dom, 'NO_METADATA')
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), listed)
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (16,), 't'), [])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), current)
        # the name is free: NO_METADATA recorded nothing
        self.create(dom, snap_xml('nometa', disks=[('vda', None, h.image_path('again.qcow2')), ('vdb', 'no')]),
                    DISK_ONLY)
        self.write(dom, 'vda', 0x77, 0)
        self.stop(dom)
        self.assert_layer(a, [], [0])
        self.assert_layer(h.image_path('again.qcow2'), [(0x77, 0)], [])

    def _corrupt(self, path):
        """Sets the qcow2 v3 "corrupt" incompatible-feature bit: QEMU then
        refuses to open the image read-write."""
        with open(path, 'r+b') as f:
            f.seek(72)
            v = bytearray(f.read(8))
            v[7] |= 2
            f.seek(72)
            f.write(bytes(v))
        self.assertTrue(q.qemu_img_info(path)['format-specific']['data'].get('corrupt'))

    def test_atomic_failure_on_second_disk(self):
        h = self.h
        a = h.create_image('a.qcow2')
        rod = h.image_path('ro')
        os.mkdir(rod)
        b = q.qemu_img_create(os.path.join(rod, 'b.qcow2'))
        dom = h.define_domain('atomic', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.start(dom)
        self.write(dom, 'vda', 0xa0, 0)
        self.write(dom, 'vdb', 0xb0, 0)

        # 1. REUSE_EXT, both files given, vdb's cannot be opened read-write:
        #    QEMU refuses vdb's blockdev-add after vda's was added.
        ra = q.qemu_img_create(h.image_path('ra.qcow2'), None, backing=a)
        rb = q.qemu_img_create(os.path.join(rod, 'rb.qcow2'), None, backing=b)
        self._corrupt(rb)
        xml_text = snap_xml('t1', disks=[('vda', None, ra), ('vdb', None, rb)])
        with self.unchanged(dom, signals=False):
            with self.assertDBusError(E + 'QemuFailed') as cm:
                self.create(dom, xml_text, DISK_ONLY | REUSE_EXT | ATOMIC)
        self.assertIn('rb.qcow2', cm.exception.message)
        self.assertTrue(os.path.exists(ra), 'a REUSE_EXT file given by the caller must not be deleted')
        self.assertEqual(self.metadata_files(dom), [])
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.write(dom, 'vda', 0xa1, MiB)
        self.write(dom, 'vdb', 0xb1, MiB)
        self.assert_layer(a, [(0xa0, 0), (0xa1, MiB)], [])
        self.assert_layer(b, [(0xb0, 0), (0xb1, MiB)], [])
        self.assert_layer(ra, [(0xa0, 0), (0xa1, MiB)], [], 'untouched REUSE_EXT file')

        # 2. REUSE_EXT where only vdb's file exists: libvirt creates vda's
        #    (REUSE_EXT = "reuse any existing file"); when vdb then fails,
        #    the created one must go again.
        os.unlink(ra)
        with self.subTest('REUSE_EXT with one missing file (libvirt creates it)'):
            with self.unchanged(dom, signals=False):
                with self.assertDBusError(E + 'QemuFailed'):
                    self.create(dom, snap_xml('t2', disks=[('vdb', None, rb)]), DISK_ONLY | REUSE_EXT)
            self.assertFalse(os.path.exists(h.image_path('a.t2')))

        # 3. No REUSE_EXT; vdb's folder turns read-only: vda's overlay is made
        #    first, vdb's cannot be; vda's must be removed again.
        subprocess.run(['mount', '--bind', rod, rod], check=True)
        self.addCleanup(subprocess.run, ['umount', '-l', rod], stderr=subprocess.DEVNULL)
        subprocess.run(['mount', '-o', 'remount,ro,bind', rod], check=True)
        with self.unchanged(dom, signals=False):
            with self.assertDBusError(E + 'PathNotAllowed') as cm:
                self.create(dom, snap_xml('t3'), DISK_ONLY)
        self.assertFalse(os.path.exists(h.image_path('a.t3')), "vda's overlay was left behind")
        self.assertEqual(cm.exception.message, 'Cannot create files next to %s: Read-only file system.'
                         % os.path.join(rod, 'b.t3'))
        subprocess.run(['umount', rod], check=True)

        # After all that the domain snapshots fine, and still writes.
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        s = self.create(dom, snap_xml('ok'), DISK_ONLY)
        self.assert_disks_agree(dom, 'after the failures')
        self.assertEqual(self.dprop(dom, 'Snapshots'), [s])
        self.write(dom, 'vdb', 0xb2, 2 * MiB)
        self.assert_layer(b, [(0xb0, 0), (0xb1, MiB)], [2 * MiB])
        self.assert_check_clean(a, b)

    def test_no_space(self):
        h = self.h
        tiny = os.path.join(h.root, 'tiny')
        small = os.path.join(h.root, 'small')
        tank = os.path.join(h.root, 'tank')
        stack = contextlib.ExitStack()
        self.addCleanup(stack.close)
        stack.enter_context(mounted_tmpfs(tiny, '512k'))
        stack.enter_context(mounted_tmpfs(small, '1200k'))
        stack.enter_context(mounted_tmpfs(tank, '4m'))
        h.daemon_args += ['--image-root=' + tiny, '--image-root=' + small]
        h.update_activation_file()
        h.restart_daemon(kill=False)

        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        # 512 MiB of (untouched) guest RAM: a ~1.5 MB migration stream
        dom = h.define_domain('space', [q.Disk('vda', a), q.Disk('vdb', b)], memory_mib=512)
        self.start(dom)
        dirs = (tiny, small)
        # Checked up front: an overlay or a memory file on a full file system.
        self.refused(dom, E + 'NoSpace', snap_xml('x', disks=[('vda', None, os.path.join(tiny, 'o.qcow2')),
                                                              ('vdb', 'no')]), DISK_ONLY, extra_dirs=dirs)
        self.refused(dom, E + 'NoSpace', snap_xml('x', memory='external', memory_file=os.path.join(tiny, 'm')),
                     extra_dirs=dirs)
        # Found out during the save: the memory file fills the file system
        # after both overlays were made.
        with self.unchanged(dom, extra_dirs=dirs, signals=False):
            with self.assertDBusError(E + 'NoSpace'):
                self.create(dom, snap_xml('x', memory='external', memory_file=os.path.join(small, 'm')))
        self.assertEqual(os.listdir(small), [])
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.write(dom, 'vda', 0xa0, 0)
        self.stop(dom)

        # Internal: the image's own file system fills up during snapshot-save.
        c = q.qemu_img_create(os.path.join(tank, 'c.qcow2'))
        dom2 = h.define_domain('full-tank', [q.Disk('vda', c)], memory_mib=512)
        self.start(dom2)
        self.write(dom2, 'vda', 0xc0, 0)
        sv = os.statvfs(tank)
        with open(os.path.join(tank, 'filler'), 'wb') as f:
            f.write(b'\x01' * (sv.f_bavail * sv.f_frsize - 300 * 1024))
        # (c.qcow2 may keep the clusters QEMU had claimed: checked clean below)
        with self.unchanged(dom2, signals=False):
            with self.assertDBusError(E + 'NoSpace'):
                self.create(dom2, snap_xml('i'))
        self.assertEqual(qemu_img_snapshot_tags(c), [])
        self.assertEqual(self.dprop(dom2, 'State'), 'running')
        os.unlink(os.path.join(tank, 'filler'))
        self.write(dom2, 'vda', 0xc1, MiB)
        self.stop(dom2)
        self.assert_layer(c, [(0xc0, 0), (0xc1, MiB)], [])
        self.assert_check_clean(c, a, b)


class ConcurrencyTest(SnapshotTestCase):
    """A memory snapshot made slow with QEMU's migration bandwidth limit, so
    that other calls and a daemon crash can land in its middle."""

    def _slow_memory_snapshot(self, dom, name, bandwidth=512 * 1024):
        h = self.h
        h.qmp(dom, 'migrate-set-parameters', {'max-bandwidth': bandwidth})
        mem = h.image_path(name + '.mem')
        pending = h.client.call_async(dom, D, 'CreateSnapshot',
                                      (snap_xml(name, memory='external', memory_file=mem), 0), 'st', timeout=90)

        def migrating():
            return h.qmp(dom, 'query-migrate')['return'].get('status') == 'active'
        self.assertTrue(q.spin(migrating, 10), 'the memory save did not start')
        return pending, mem

    def test_busy_while_a_snapshot_runs(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('busy', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xa0, 0)
        pending, mem = self._slow_memory_snapshot(dom, 'slow')
        # Reads answer at once.
        self.assertEqual(self.dprop(dom, 'Snapshots'), [])
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), [])
        # A second snapshot is Busy and leaves nothing.
        with self.assertDBusError(E + 'Busy'):
            self.create(dom, snap_xml('other'), DISK_ONLY)
        self.assertFalse(os.path.exists(h.image_path('a.other')))
        # The guest was stopped so that memory and disks match: nobody may
        # let it run before the disks are switched.
        with self.subTest('Resume during a memory snapshot'):
            with self.assertDBusError(E + 'Busy'):
                h.call(dom, D, 'Resume')
        self.assertFalse(pending.done(), 'the slow snapshot ended early; the checks above proved nothing')
        path = pending.wait()
        self.assertEqual(self.props(path)['State'], 'running')
        self.assertTrue(q.spin(lambda: self.dprop(dom, 'State') == 'running', 10))
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running')
        self.assertEqual(self.active(dom), {'vda': h.image_path('a.slow')})
        self.assert_disks_agree(dom, 'after the slow snapshot')
        self.write(dom, 'vda', 0xa1, MiB)
        self.assert_layer(a, [(0xa0, 0)], [MiB])

    def test_qsnapd_killed_during_memory_snapshot(self):
        # DESIGN 8: a multi-step operation is journalled; a new qsnapd
        # finishes or rolls it back, and never leaves a guest stopped.
        # Killed while QEMU still saves the memory, the disks were not
        # switched: the one outcome is rolled back.
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('crash', [q.Disk('vda', a)])
        self.start(dom)
        self.write(dom, 'vda', 0xa0, 0)
        pending, mem = self._slow_memory_snapshot(dom, 'cut', bandwidth=256 * 1024)
        mark = h.daemon_log_mark()
        h.restart_daemon(kill=True)
        with self.assertDBusError('org.freedesktop.DBus.Error.NoReply'):
            pending.wait()
        h.wait_for_log(re.escape(ROLLED_BACK), mark)
        self.assertNotIn(FINISHED, h.daemon_log_since(mark))
        q.wait_until(lambda: self.dprop(dom, 'State') == 'running' and
                     h.qmp(dom, 'query-status')['return']['status'] == 'running', 10, 'the guest runs again')
        # QEMU's save into the removed memory file is stopped, so the guest
        # is not paused (postmigrate) once it would have completed.
        q.wait_until(lambda: h.qmp(dom, 'query-migrate')['return'].get('status') in ('cancelled', None), 10,
                     'the memory save of the rolled-back snapshot is cancelled')
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), [])
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/')
        self.assertEqual(sorted(os.listdir(h.images_dir)), ['a.qcow2'], 'a rolled-back snapshot left files behind')
        self.assertEqual(self.active(dom), {'vda': a})
        self.assert_disks_agree(dom, 'after the crash')
        self.assertEqual(self.stray_state_files(dom), [], 'the interrupted operation is still pending')
        self.assert_disk_is(a, [(0xa0, 0)], 'after the crash')
        self.write(dom, 'vda', 0xa1, MiB)
        self.assert_disk_is(a, [(0xa0, 0), (0xa1, MiB)], 'written after the crash')
        # and the next snapshot works
        self.create(dom, snap_xml('next'), DISK_ONLY)
        self.assert_disks_agree(dom, 'after the next snapshot')
        self.assertEqual(self.dprop(dom, 'State'), 'running')


# What the qsnapd started after a crash in CreateSnapshot does with the
# intent journal (daemon/snapshot-intent.c), and what is left.
TAKEN, NOT_TAKEN = 'taken', 'not taken'
FINISHED = 'finished a snapshot interrupted after the disks were switched'
ROLLED_BACK = 'rolled back a snapshot interrupted before the disks were switched'
NOTHING = None          # no intent (yet): the next qsnapd has nothing to recover


class CrashTest(SnapshotTestCase):
    """kill -9 of qsnapd at each step of CreateSnapshot
    (QSNAPD_TEST_CRASH_AT=create:<step>): the next qsnapd finishes the
    snapshot or rolls it back, exactly as written beside each point; then
    the data (whole disks against references), the chain (Disks, qemu-img
    info, QEMU), the metadata (list, properties, XML), the files and the
    log line of the recovery are checked, and the next snapshot works."""

    # point              the snapshot  what the next qsnapd logs
    LIVE_DISK_ONLY = (
        ('create:start',    NOT_TAKEN, NOTHING),      # before the intent: nothing was touched
        ('create:intent',   NOT_TAKEN, ROLLED_BACK),  # intent written, nothing made yet
        ('create:overlays', NOT_TAKEN, ROLLED_BACK),  # overlay made, QEMU never saw it: removed
        ('create:switched', TAKEN,     FINISHED),     # QEMU runs on the overlay: definition and metadata recorded
        ('create:disks',    TAKEN,     FINISHED),     # definition stored, metadata not yet: recorded
        ('create:metadata', TAKEN,     FINISHED),     # all done but removing the intent
    )
    LIVE_FULL_SYSTEM = (
        ('create:memory',   NOT_TAKEN, ROLLED_BACK),  # memory saved, disks not switched: overlay and memory file go
        ('create:switched', TAKEN,     FINISHED),     # switched in postmigrate: recorded, the guest runs again
    )
    OFFLINE_DISK_ONLY = (
        ('create:start',    NOT_TAKEN, NOTHING),
        ('create:intent',   NOT_TAKEN, ROLLED_BACK),
        ('create:overlays', NOT_TAKEN, ROLLED_BACK),  # qemu-img made the overlay: removed
        ('create:disks',    TAKEN,     FINISHED),     # the stored definition names the overlay: recorded
        ('create:metadata', TAKEN,     FINISHED),
    )
    INTERNAL = (
        # (live, point, ...): the snapshot-save job of a running domain writes no intent
        (False, 'create:intent',   NOT_TAKEN, ROLLED_BACK),  # before qemu-img snapshot -c
        (False, 'create:metadata', TAKEN,     FINISHED),     # tag and metadata there: nothing to undo
        (True,  'create:metadata', TAKEN,     NOTHING),      # live: no intent, the metadata made it
    )

    def crash_create(self, dom, name, xml_text, flags, point):
        mark, _ = self.h.crash_at(point, dom, D, 'CreateSnapshot', (xml_text, flags), 'st', timeout=90)
        return mark

    def assert_recovery(self, mark, recovery, point):
        h = self.h
        log = h.daemon_log_since(mark)
        if recovery is NOTHING:
            # the new qsnapd took its bus name: start-up recovery is over
            self.assertNotIn('a snapshot was interrupted', log, '%s: there was no intent to recover' % point)
        else:
            h.wait_for_log(r"a snapshot was interrupted; checking how far it got", mark)
            h.wait_for_log(re.escape(recovery), mark)
            other = ROLLED_BACK if recovery == FINISHED else FINISHED
            self.assertNotIn(other, h.daemon_log_since(mark), point)

    def assert_after(self, dom, name, outcome, overlays, base_patterns, point, memory_file=None, live=True):
        """outcome TAKEN: the snapshot is listed, current, its XML names the
        overlays, the disks run on them; NOT_TAKEN: nothing of it is left.
        overlays: {target: (frozen file, planned overlay)}."""
        h = self.h
        self.assertEqual(self.stray_state_files(dom), [], '%s: the intent journal is left' % point)
        snaps = h.call(dom, D, 'ListSnapshots', (0,), 't')
        active = self.active(dom)
        if outcome == TAKEN:
            self.assertEqual([self.props(p)['Name'] for p in snaps], [name], point)
            path = snaps[0]
            self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), path, point)
            self.assertTrue(self.props(path)['IsCurrent'], point)
            root = self.assert_snapshot_xml(path)
            self.assertEqual(root.findtext('name'), name)
            xml_disks = {d.get('name'): d for d in root.find('disks')}
            for target, (frozen, overlay) in overlays.items():
                self.assertEqual(active[target], overlay, '%s: %s does not run on its overlay' % (point, target))
                self.assertEqual(self.chain_files(overlay)[1], frozen, point)
                self.assertEqual(xml_disks[target].get('snapshot'), 'external', point)
                self.assertEqual(xml_disks[target].find('source').get('file'), overlay, point)
            if memory_file:
                self.assertEqual(root.find('memory').attrib, {'snapshot': 'external', 'file': memory_file}, point)
                with open(memory_file, 'rb') as f:
                    self.assertEqual(f.read(4), b'QEVM', '%s: the memory file is not a migration stream' % point)
        else:
            self.assertEqual(snaps, [], point)
            self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), '/', point)
            for target, (frozen, overlay) in overlays.items():
                self.assertEqual(active[target], frozen, '%s: %s left its file' % (point, target))
                self.assertFalse(os.path.exists(overlay), '%s: overlay %s left behind' % (point, overlay))
            if memory_file:
                self.assertFalse(os.path.exists(memory_file), '%s: memory file left behind' % point)
        self.assert_disks_agree(dom, point)
        for target, (frozen, overlay) in overlays.items():
            self.assert_disk_is(frozen, base_patterns, '%s: what %s froze' % (point, target))
            self.assert_disk_is(active[target], base_patterns, '%s: %s' % (point, target))
            self.assert_check_clean(*self.chain_files(active[target]))
        if live:
            q.wait_until(lambda: self.dprop(dom, 'State') == 'running', 10, '%s: the guest runs again' % point)
            self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'running', point)
            self.assertEqual(self.qemu_chains(dom), {t: self.chain_files(f) for t, f in active.items()}, point)

    def test_live_disk_only(self):
        h = self.h
        for point, outcome, recovery in self.LIVE_DISK_ONLY:
            with self.subTest(point=point):
                tag = point.split(':')[1]
                a = h.create_image('l%s.qcow2' % tag)
                dom = h.define_domain('l' + tag, [q.Disk('vda', a)])
                self.start(dom)
                self.write(dom, 'vda', 0xa0, 0)
                mark = self.crash_create(dom, 's', snap_xml('s'), DISK_ONLY, point)
                self.assert_recovery(mark, recovery, point)
                overlay = h.image_path('l%s.s' % tag)
                self.assert_after(dom, 's', outcome, {'vda': (a, overlay)}, [(0xa0, 0)], point)
                # the guest writes on, into the active file only
                self.write(dom, 'vda', 0xa1, MiB)
                self.assert_disk_is(self.active(dom)['vda'], [(0xa0, 0), (0xa1, MiB)], point + ', written on')
                self.assert_disk_is(a, [(0xa0, 0)] + ([] if outcome == TAKEN else [(0xa1, MiB)]), point + ', base')
                # and the next snapshot works
                self.create(dom, snap_xml('next'), DISK_ONLY)
                self.assert_disks_agree(dom, point + ', the next snapshot')
                self.stop(dom)

    def test_live_full_system(self):
        h = self.h
        for point, outcome, recovery in self.LIVE_FULL_SYSTEM:
            with self.subTest(point=point):
                tag = point.split(':')[1]
                a = h.create_image('m%s.qcow2' % tag)
                dom = h.define_domain('m' + tag, [q.Disk('vda', a)])
                self.start(dom)
                self.write(dom, 'vda', 0xa0, 0)
                mem = h.image_path('m%s.mem' % tag)
                mark = self.crash_create(dom, 'f', snap_xml('f', memory='external', memory_file=mem), 0, point)
                self.assert_recovery(mark, recovery, point)
                overlay = h.image_path('m%s.f' % tag)
                self.assert_after(dom, 'f', outcome, {'vda': (a, overlay)}, [(0xa0, 0)], point, memory_file=mem)
                if outcome == TAKEN:
                    self.assertEqual(self.props(self.snap_path(dom, 'f'))['State'], 'running', point)
                self.write(dom, 'vda', 0xa1, MiB)
                self.assert_disk_is(a, [(0xa0, 0)] + ([] if outcome == TAKEN else [(0xa1, MiB)]), point + ', base')
                self.create(dom, snap_xml('next'), DISK_ONLY)
                self.stop(dom)

    def test_offline_disk_only(self):
        h = self.h
        for point, outcome, recovery in self.OFFLINE_DISK_ONLY:
            with self.subTest(point=point):
                tag = point.split(':')[1]
                a = h.create_image('o%s.qcow2' % tag)
                q.qemu_io_write_pattern(a, 0xa0, 0, LEN)
                dom = h.define_domain('o' + tag, [q.Disk('vda', a)])
                mark = self.crash_create(dom, 's', snap_xml('s'), DISK_ONLY, point)
                self.assert_recovery(mark, recovery, point)
                overlay = h.image_path('o%s.s' % tag)
                self.assert_after(dom, 's', outcome, {'vda': (a, overlay)}, [(0xa0, 0)], point, live=False)
                self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
                self.create(dom, snap_xml('next'), DISK_ONLY)
                self.assert_disks_agree(dom, point + ', the next snapshot')

    def test_internal(self):
        h = self.h
        for live, point, outcome, recovery in self.INTERNAL:
            with self.subTest(point=point, live=live):
                tag = ('l' if live else 'o') + point.split(':')[1]
                a = h.create_image('i%s.qcow2' % tag)
                dom = h.define_domain('i' + tag, [q.Disk('vda', a)])
                if live:
                    self.start(dom)
                    self.write(dom, 'vda', 0xa0, 0)
                else:
                    q.qemu_io_write_pattern(a, 0xa0, 0, LEN)
                mark = self.crash_create(dom, 'i', snap_xml('i'), 0, point)
                self.assert_recovery(mark, recovery, point)
                self.assertEqual(self.stray_state_files(dom), [], point)
                self.assertEqual(self.active(dom), {'vda': a}, point)
                self.assert_disks_agree(dom, point)
                names = [self.props(p)['Name'] for p in h.call(dom, D, 'ListSnapshots', (0,), 't')]
                if outcome == TAKEN:
                    self.assertEqual(names, ['i'], point)
                    p = self.props(self.snap_path(dom, 'i'))
                    self.assertEqual((p['Location'], p['Memory'], p['IsCurrent']),
                                     ('internal', 'internal' if live else 'no', True), point)
                    self.assertEqual(qemu_img_snapshot_tags(a), ['i'], point)
                    self.assert_internal_is(a, 'i', [(0xa0, 0)], point)
                else:
                    self.assertEqual(names, [], point)
                    self.assertEqual(qemu_img_snapshot_tags(a), [], point)
                self.assert_disk_is(a, [(0xa0, 0)], point)
                self.create(dom, snap_xml('next'))
                self.assertIn('next', qemu_img_snapshot_tags(a), point)
                if live:
                    self.stop(dom)


class DiskKindsTest(SnapshotTestCase):
    def test_readonly_and_transient_disks_are_left_out(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        c = h.create_image('c.qcow2')
        dom = h.define_domain('kinds', [q.Disk('vda', a), q.Disk('vdb', b, readonly=True),
                                        q.Disk('vdc', c, transient=True)])
        self.start(dom)
        disks_before = self.dprop(dom, 'Disks')
        s = self.create(dom, snap_xml('d'), DISK_ONLY)
        root = self.assert_snapshot_xml(s)
        self.assertEqual({d.get('name'): d.get('snapshot') for d in root.find('disks')},
                         {'vda': 'external', 'vdb': 'no', 'vdc': 'no'})
        self.assertEqual(self.dprop(dom, 'Disks')[1:], disks_before[1:])
        self.assertEqual(self.active(dom)['vda'], h.image_path('a.d'))
        self.assert_disks_agree(dom)
        self.refused(dom, E + 'Unsupported', snap_xml('t', disks=[('vdc', 'external')]), DISK_ONLY)
        # Paused: a disk-only snapshot keeps it paused.
        h.call(dom, D, 'Pause')
        p = self.create(dom, snap_xml('p'), DISK_ONLY)
        self.assertEqual(self.props(p)['State'], 'disk-snapshot')
        self.assertEqual(self.dprop(dom, 'State'), 'paused')
        self.assertEqual(h.qmp(dom, 'query-status')['return']['status'], 'paused')
        h.call(dom, D, 'Resume')
        self.write(dom, 'vda', 0x42, 0)
        self.assert_disks_agree(dom)
        self.stop(dom)
        self.assert_layer(h.image_path('a.p'), [(0x42, 0)], [])
        self.assert_layer(h.image_path('a.d'), [], [0])


class CacheModeTest(SnapshotTestCase):
    """<driver cache= io=> as libvirt means it: every node QEMU opens for
    the disk (each layer's format node and file node) has the mode, the
    overlay a snapshot adds too, the layers launched after a revert and a
    BlockCopy's destination;
    a disk without cache= keeps QEMU's defaults; io='native' without
    O_DIRECT is refused at DefineDomain."""

    def cache_xml(self, name, disks):
        """domain_xml with <driver cache= io=> per disk: disks are
        (target, path, cache, io), None for absent."""
        xml = q.domain_xml(name, [q.Disk(t, p) for t, p, _, _ in disks])
        for t, p, cache, io in disks:
            attrs = ''.join(" %s='%s'" % (k, v) for k, v in (('cache', cache), ('io', io)) if v)
            old = '<driver name=\'qemu\' type="qcow2"/>\n      <source file="%s"/>' % p
            self.assertIn(old, xml)
            xml = xml.replace(old, "<driver name='qemu' type='qcow2'%s/>\n      <source file='%s'/>" % (attrs, p))
        return xml

    def node_caches(self, dom):
        """{real file: {(drv, cache.direct, cache.no-flush)}} over every node
        QEMU has (query-named-block-nodes: format and file nodes alike)."""
        h = self.h
        fdsets = h.qmp(dom, 'query-fdsets')['return']
        out = {}
        for n in h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']:
            f = h.qemu_file_name(dom, n['file'], fdsets)
            out.setdefault(f, set()).add((n['drv'], n['cache']['direct'], n['cache']['no-flush']))
        return out

    def assert_modes(self, dom, files, direct, what, no_flush=False):
        """Every node of each of files: a qcow2 format node and its file
        node, both with cache.direct == direct and cache.no-flush == no_flush."""
        caches = self.node_caches(dom)
        for f in files:
            self.assertEqual(caches.get(f), {('qcow2', direct, no_flush), ('file', direct, no_flush)},
                             '%s: the nodes of %s (all: %s)' % (what, f, caches))

    def test_cache_none_on_every_layer(self):
        h = self.h
        a, b, c = h.create_image('a.qcow2'), h.create_image('b.qcow2'), h.create_image('c.qcow2')
        # io='native' needs O_DIRECT: refused before anything is defined.
        with self.assertDBusError(E + 'InvalidXML') as cm:
            h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                   (self.cache_xml('bad', [('vda', a, None, 'native')]), 0), 'st')
        self.assertIn("io='native' needs cache='none' or cache='directsync'", cm.exception.message)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])

        dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                     (self.cache_xml('cache', [('vda', a, 'none', 'native'), ('vdb', b, 'unsafe', None),
                                               ('vdc', c, None, None)]), 0), 'st')
        drivers = {d.find('target').get('dev'): d.find('driver').attrib
                   for d in ET.fromstring(h.call(dom, D, 'GetXMLDesc', (0,), 't')).iter('disk')}
        self.assertEqual(drivers['vda'], {'name': 'qemu', 'type': 'qcow2', 'cache': 'none', 'io': 'native'})
        self.assertEqual(drivers['vdb'], {'name': 'qemu', 'type': 'qcow2', 'cache': 'unsafe'})
        self.assertEqual(drivers['vdc'], {'name': 'qemu', 'type': 'qcow2'})
        self.start(dom)
        self.assert_modes(dom, [a], True, 'started')
        self.assert_modes(dom, [b], False, 'started, unsafe', no_flush=True)
        self.assert_modes(dom, [c], False, 'started, no cache=')
        inserted = {blk['qdev'].split('/')[3]: blk['inserted']['cache']
                    for blk in h.qmp(dom, 'query-block')['return'] if 'inserted' in blk}
        self.assertEqual(inserted['vda'], {'writeback': True, 'direct': True, 'no-flush': False})
        self.assertEqual(inserted['vdb'], {'writeback': True, 'direct': False, 'no-flush': True})
        self.assertEqual(inserted['vdc'], {'writeback': True, 'direct': False, 'no-flush': False})

        for t, pattern in (('vda', 0xa1), ('vdb', 0xb1), ('vdc', 0xc1)):
            self.write(dom, t, pattern, 0)
        s1 = self.create(dom, snap_xml('s1'), DISK_ONLY)
        a1, b1, c1 = h.image_path('a.s1'), h.image_path('b.s1'), h.image_path('c.s1')
        self.assertEqual(self.active(dom), {'vda': a1, 'vdb': b1, 'vdc': c1})
        # The new overlays in their disk's mode, the layers below unchanged.
        self.assert_modes(dom, [a, a1], True, 'after the snapshot')
        self.assert_modes(dom, [b, b1], False, 'after the snapshot, unsafe', no_flush=True)
        self.assert_modes(dom, [c, c1], False, 'after the snapshot, no cache=')
        for t, pattern in (('vda', 0xa2), ('vdb', 0xb2), ('vdc', 0xc2)):
            self.write(dom, t, pattern, MiB)
        self.assert_disks_agree(dom)
        self.stop(dom)
        for base, top, p1, p2 in ((a, a1, 0xa1, 0xa2), (b, b1, 0xb1, 0xb2), (c, c1, 0xc1, 0xc2)):
            self.assert_disk_is(base, [(p1, 0)], 'the frozen layer')
            self.assert_disk_is(top, [(p1, 0), (p2, MiB)], 'the active layer')
            self.assert_check_clean(base, top)

        # A revert's new overlays, launched with the chain under them.
        h.call(s1, S, 'Revert', (0,), 't')
        self.start(dom)
        active = self.active(dom)
        self.assertEqual(active['vda'], h.image_path('a.s1-revert1'))
        self.assert_modes(dom, [a, active['vda']], True, 'after the revert')
        self.assert_modes(dom, [b, active['vdb']], False, 'after the revert, unsafe', no_flush=True)
        self.assert_modes(dom, [c, active['vdc']], False, 'after the revert, no cache=')
        self.write(dom, 'vda', 0xa3, 2 * MiB)

        # A copy's destination becomes the disk: it takes the disk's mode
        # (unsafe: the page cache, flushes ignored), not the O_DIRECT a
        # copy of a disk without cache= gets.
        dest = h.image_path('b-copy.qcow2')
        rec = h.record_signals()
        job = h.call(dom, D, 'BlockCopy', ('vdb', "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>"
                                           % dest, 0, 0), 'sstt')
        rec.wait_for_signal('Ready', path=job, interface=q.JOB_IFACE, timeout=60)
        self.assert_modes(dom, [dest], False, 'the copy destination of vdb, unsafe', no_flush=True)
        h.call(job, q.JOB_IFACE, 'Pivot')
        rec.wait_for_signal('Completed', path=job, interface=q.JOB_IFACE, timeout=60)
        rec.close()
        self.assertEqual(self.active(dom)['vdb'], dest)
        self.assert_modes(dom, [dest], False, 'vdb after the pivot', no_flush=True)
        self.write(dom, 'vdb', 0xb3, 2 * MiB)
        self.stop(dom)
        self.assert_disk_is(active['vda'], [(0xa1, 0), (0xa3, 2 * MiB)], 'the reverted disk')
        self.assert_disk_is(dest, [(0xb1, 0), (0xb3, 2 * MiB)], 'the copied disk')
        self.assert_check_clean(active['vda'], dest)


if __name__ == '__main__':
    q.main()
