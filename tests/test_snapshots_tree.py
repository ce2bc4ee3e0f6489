#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot metadata end to end (DESIGN.md sections 2, 3, 4, 5): the tree,
its listings, its XML, its persistence and who may do what.

- a branched tree built with REDEFINE (explicit <parent>, <state>,
  <memory>, <disks>, creationTime; CURRENT): every property of every
  snapshot, every ListSnapshots flag alone and in combinations (exact
  result, creation order; parents before children with TOPOLOGICAL),
  Snapshot.ListChildren with and without DESCENDANTS, LookupSnapshot;
  REDEFINE errors (duplicate, unknown parent, no name) change nothing;
  after kill -9 and after SIGTERM of qsnapd everything is back as it was.
- XML: GetXMLDesc of real snapshots (internal offline, external live,
  external with memory) is libvirt's <domainsnapshot>; REDEFINE of that
  text into a second domain gives back the same text; libvirt's own
  `virsh snapshot-dumpxml` outputs (tests/fixtures/snapshot) are accepted
  and come back element for element.
- persistence of real snapshots: all in <state>/snapshots/<uuid>.xml (+
  .journal); after restarts every snapshot, property, the current one, the
  domain's Disks (also of a running domain after a live external snapshot)
  and QEMU's chains agree.
- authorization: uid 65534 may read (properties, lists, GetXMLDesc without
  SECURE) but not CreateSnapshot (also not REDEFINE) nor GetXMLDesc SECURE;
  a denied call changes nothing; root's SECURE XML has the secret.
- Undefine: HasSnapshots without flag 1 (nothing changes); with it the
  metadata files go, the images stay, InterfacesRemoved for every object.
"""

import os
import re
import xml.etree.ElementTree as ET

import qsnaptest as q
from test_snapshots import (CURRENT, D, DISK_ONLY, E, NO_METADATA, REDEFINE, S,
                            SnapshotTestCase, qemu_img_snapshot_tags, snap_xml)

# ListSnapshots / ListChildren flags
ROOTS = DESCENDANTS = 1
METADATA, LEAVES, NO_LEAVES, L_NO_METADATA = 2, 4, 8, 16
INACTIVE, ACTIVE, L_DISK_ONLY, INTERNAL, EXTERNAL, TOPOLOGICAL = 32, 64, 128, 256, 512, 1024

FIXTURES = q.source_path('tests', 'fixtures', 'snapshot')


def in_folder(text, folder):
    """The fixture with every file='/some/where/name' moved to folder/name:
    REDEFINE records only files in the domain's allowed folders (the path
    gate, docs/security.md §3), and the fixtures' folders are libvirt's."""
    return re.sub(r"""file=(['"])/[^'"]*/([^/'"]+)\1""",
                  lambda m: 'file=%s%s/%s%s' % (m.group(1), folder, m.group(2), m.group(1)), text)

# name, parent, state, memory, disk kind, expected Location
TREE = [
    ('r1', None, 'shutoff', 'no', 'internal', 'internal'),
    ('a', 'r1', 'running', 'internal', 'internal', 'internal'),
    ('b', 'r1', 'shutoff', 'no', 'external', 'external'),
    ('a1', 'a', 'disk-snapshot', 'no', 'external', 'external'),
    ('r2', None, 'disk-snapshot', 'no', 'external', 'external'),
    ('b1', 'b', 'paused', 'internal', 'internal', 'internal'),
    ('a2', 'a', 'running', 'external', 'external', 'external'),
    ('m', 'a2', 'running', 'internal', 'external', 'mixed'),
]
ORDER = [t[0] for t in TREE]
CURRENT_ONE = 'b1'

# flags -> exact expected names, in creation order
EXPECTED_LISTS = {
    0: ORDER,
    ROOTS: ['r1', 'r2'],
    LEAVES: ['a1', 'r2', 'b1', 'm'],
    NO_LEAVES: ['r1', 'a', 'b', 'a2'],
    LEAVES | NO_LEAVES: ORDER,
    METADATA: ORDER,
    L_NO_METADATA: [],
    METADATA | L_NO_METADATA: ORDER,
    INACTIVE: ['r1', 'b'],
    ACTIVE: ['a', 'b1', 'a2', 'm'],
    L_DISK_ONLY: ['a1', 'r2'],
    INACTIVE | L_DISK_ONLY: ['r1', 'b', 'a1', 'r2'],
    INACTIVE | ACTIVE: ['r1', 'a', 'b', 'b1', 'a2', 'm'],
    INACTIVE | ACTIVE | L_DISK_ONLY: ORDER,
    INTERNAL: ['r1', 'a', 'b1'],
    EXTERNAL: ['b', 'a1', 'r2', 'a2', 'm'],           # mixed counts as external
    INTERNAL | EXTERNAL: ORDER,
    ROOTS | LEAVES: ['r2'],
    ROOTS | NO_LEAVES: ['r1'],
    ROOTS | EXTERNAL: ['r2'],
    ROOTS | INACTIVE: ['r1'],
    LEAVES | EXTERNAL: ['a1', 'r2', 'm'],
    NO_LEAVES | ACTIVE: ['a', 'a2'],
    LEAVES | INTERNAL | ACTIVE: ['b1'],
    METADATA | LEAVES | L_DISK_ONLY: ['a1', 'r2'],
}
# flags -> expected set; order: parents before children
EXPECTED_TOPOLOGICAL = {
    TOPOLOGICAL: ORDER,
    ROOTS | TOPOLOGICAL: ['r1', 'r2'],
    LEAVES | TOPOLOGICAL: ['a1', 'r2', 'b1', 'm'],
    EXTERNAL | TOPOLOGICAL: ['b', 'a1', 'r2', 'a2', 'm'],
    L_NO_METADATA | TOPOLOGICAL: [],
}
# (snapshot, flags) -> exact expected names of ListChildren
EXPECTED_CHILDREN = {
    ('r1', 0): ['a', 'b'],
    ('r1', DESCENDANTS): ['a', 'b', 'a1', 'b1', 'a2', 'm'],
    ('r1', DESCENDANTS | LEAVES): ['a1', 'b1', 'm'],
    ('r1', DESCENDANTS | NO_LEAVES): ['a', 'b', 'a2'],
    ('r1', DESCENDANTS | EXTERNAL): ['b', 'a1', 'a2', 'm'],
    ('r1', DESCENDANTS | INACTIVE): ['b'],
    ('r1', LEAVES): [],
    ('a', 0): ['a1', 'a2'],
    ('a', LEAVES): ['a1'],
    ('a', DESCENDANTS): ['a1', 'a2', 'm'],
    ('a', DESCENDANTS | ACTIVE): ['a2', 'm'],
    ('a2', 0): ['m'],
    ('b', DESCENDANTS): ['b1'],
    ('r2', DESCENDANTS): [],
    ('m', 0): [],
    ('r1', DESCENDANTS | L_NO_METADATA): [],
}
EXPECTED_CHILDREN_TOPOLOGICAL = {
    ('r1', DESCENDANTS | TOPOLOGICAL): ['a', 'b', 'a1', 'b1', 'a2', 'm'],
    ('a', DESCENDANTS | TOPOLOGICAL): ['a1', 'a2', 'm'],
    ('r1', TOPOLOGICAL): ['a', 'b'],
}


def normalize(el, relaxed=False, drop=('active',)):
    """An element as nested tuples: tag, attributes, stripped text, children
    (quoting and indentation do not matter). relaxed, for libvirt's input
    documents: element order and the attributes libvirt's parser fills in
    (<disk snapshot=… type=…>) do not matter either."""
    attrs = dict(el.attrib)
    if relaxed and el.tag == 'disk' and 'name' in attrs:
        attrs.pop('snapshot', None)
        attrs.pop('type', None)
    children = [normalize(c, relaxed, drop) for c in el if c.tag not in drop]
    if relaxed:
        children.sort()
    return (el.tag, tuple(sorted(attrs.items())), (el.text or '').strip(), tuple(children))


class TreeTest(SnapshotTestCase):
    def _tree_xml(self, name, parent, state, memory, kind, k):
        h = self.h
        disks = [('vda', kind, h.image_path('ov-%s.qcow2' % name) if kind == 'external' else None)]
        mem_file = h.image_path('%s.mem' % name) if memory == 'external' else None
        return snap_xml(name, description='snapshot %s' % name, memory=memory, memory_file=mem_file, disks=disks,
                        parent=parent, state=state, creation_time=1700000000 + 100 * k)

    def _names(self, dom, paths):
        byp = {self.snap_path(dom, n): n for n in ORDER}
        return [byp.get(p, p) for p in paths]

    def _assert_topological(self, dom, names, expected, what):
        self.assertEqual(sorted(names), sorted(expected), what)
        parent = {t[0]: t[1] for t in TREE}
        for i, n in enumerate(names):
            anc = parent[n]
            while anc is not None:
                if anc in names:
                    self.assertLess(names.index(anc), i, '%s: %s listed before its ancestor %s: %s'
                                    % (what, n, anc, names))
                anc = parent[anc]

    def _check_tree(self, dom, when):
        h = self.h
        paths = {n: self.snap_path(dom, n) for n in ORDER}
        self.assertEqual(self.dprop(dom, 'Snapshots'), [paths[n] for n in ORDER], when)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), paths[CURRENT_ONE], when)
        for k, (name, parent, state, memory, kind, location) in enumerate(TREE):
            p = self.props(paths[name])
            children = [paths[t[0]] for t in TREE if t[1] == name]
            self.assertEqual(p, {
                'Name': name, 'Description': 'snapshot %s' % name, 'Parent': paths[parent] if parent else '/',
                'Children': children, 'State': state, 'Location': location, 'Memory': memory,
                'CreationTime': 1700000000 + 100 * k, 'IsCurrent': name == CURRENT_ONE, 'HasMetadata': True,
            }, '%s: %s' % (when, name))
        for flags, expected in EXPECTED_LISTS.items():
            got = self._names(dom, h.call(dom, D, 'ListSnapshots', (flags,), 't'))
            self.assertEqual(got, expected, '%s: ListSnapshots(%d)' % (when, flags))
        for flags, expected in EXPECTED_TOPOLOGICAL.items():
            got = self._names(dom, h.call(dom, D, 'ListSnapshots', (flags,), 't'))
            self._assert_topological(dom, got, expected, '%s: ListSnapshots(%d)' % (when, flags))
        for (name, flags), expected in EXPECTED_CHILDREN.items():
            got = self._names(dom, h.call(paths[name], S, 'ListChildren', (flags,), 't'))
            self.assertEqual(got, expected, '%s: %s.ListChildren(%d)' % (when, name, flags))
        for (name, flags), expected in EXPECTED_CHILDREN_TOPOLOGICAL.items():
            got = self._names(dom, h.call(paths[name], S, 'ListChildren', (flags,), 't'))
            self._assert_topological(dom, got, expected, '%s: %s.ListChildren(%d)' % (when, name, flags))
        return {n: h.call(paths[n], S, 'GetXMLDesc', (1,), 't') for n in ORDER}

    def test_redefine_tree_list_filters_and_restart(self):
        h = self.h
        img = h.create_image('t.qcow2')
        dom = h.define_domain('tree', [q.Disk('vda', img)])
        rec = h.record_signals()
        for k, t in enumerate(TREE):
            name, parent = t[0], t[1]
            mark = rec.mark()
            before_current = self.dprop(dom, 'CurrentSnapshot')
            path = self.create(dom, self._tree_xml(*t[:5], k), REDEFINE | (CURRENT if name == CURRENT_ONE else 0))
            self.assertEqual(path, self.snap_path(dom, name))
            added = rec.wait_for(lambda s: s.member == 'InterfacesAdded' and s.args[0] == path, start=mark)
            self.assertEqual(added.args[1][S]['Name'], name)
            if parent:
                rec.wait_for_property(self.snap_path(dom, parent), 'Children', lambda v: path in v, start=mark)
            if name == CURRENT_ONE:
                rec.wait_for_property(dom, 'CurrentSnapshot', path, start=mark)
                self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), path)
            else:
                self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), before_current,
                                 'REDEFINE without CURRENT changed the current snapshot')
        # REDEFINE records metadata only: no file was made or changed.
        self.assertEqual(sorted(os.listdir(h.images_dir)), ['t.qcow2'])
        self.assertEqual(qemu_img_snapshot_tags(img), [])
        self.assertEqual(self.active(dom), {'vda': img})

        xml_before = self._check_tree(dom, 'defined')
        # Refused REDEFINEs change nothing.
        self.refused(dom, E + 'AlreadyExists', self._tree_xml('a', None, 'running', 'no', 'internal', 0), REDEFINE)
        self.refused(dom, E + 'NoSuchSnapshot', self._tree_xml('z', 'nope', 'running', 'no', 'internal', 0), REDEFINE)
        self.refused(dom, E + 'InvalidXML', snap_xml(description='no name', state='shutoff'), REDEFINE)
        self.refused(dom, E + 'InvalidXML', '<domainsnapshot><name>x</name>', REDEFINE | CURRENT)
        self.refused(dom, E + 'InvalidArgument', snap_xml('x'), REDEFINE | NO_METADATA)
        self.refused(dom, E + 'InvalidArgument', snap_xml('x'), CURRENT)
        with self.assertDBusError(E + 'NoSuchSnapshot'):
            self.snap_path(dom, 'nope')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(dom, D, 'ListSnapshots', (1 << 11,), 't')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(self.snap_path(dom, 'r1'), S, 'ListChildren', (1 << 11,), 't')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(self.snap_path(dom, 'r1'), S, 'GetXMLDesc', (2,), 't')

        files = self.metadata_files(dom)
        uuid = self.uuid(dom)
        self.assertTrue(files, 'no metadata file under %s/snapshots' % h.state_dir)
        self.assertTrue(set(files) <= {uuid + '.xml', uuid + '.journal'}, files)

        h.restart_daemon(kill=True)
        self.assertEqual(self._check_tree(dom, 'after kill -9'), xml_before)
        h.restart_daemon(kill=False)
        self.assertEqual(self._check_tree(dom, 'after SIGTERM'), xml_before)

    def test_xml_round_trip_into_another_domain(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('origin', [q.Disk('vda', a)], description='the origin')
        names = ['o1', 'e1', 'f1']
        self.create(dom, snap_xml('o1', description='first & <one>'))
        self.start(dom)
        self.create(dom, snap_xml('e1', description='live\nexternal'), DISK_ONLY)
        self.create(dom, snap_xml('f1', memory='external', memory_file=h.image_path('f1.mem')))
        self.stop(dom)
        texts = {}
        for n in names:
            path = self.snap_path(dom, n)
            texts[n] = h.call(path, S, 'GetXMLDesc', (0,), 't')
            self.assertEqual(h.call(path, S, 'GetXMLDesc', (1,), 't'), texts[n])    # no secrets here
            root = self.assert_snapshot_xml(path)
            self.assertEqual(root.find('domain').findtext('name'), 'origin')
            self.assertEqual(root.findtext('creationTime'), str(self.props(path)['CreationTime']))
        self.assertEqual(ET.fromstring(texts['o1']).findtext('description'), 'first & <one>')
        self.assertEqual(ET.fromstring(texts['e1']).find('parent').findtext('name'), 'o1')
        self.assertEqual(ET.fromstring(texts['f1']).findtext('state'), 'running')

        b = h.create_image('b.qcow2')
        other = h.define_domain('copy', [q.Disk('vda', b)])
        for n in names:
            path = self.create(other, texts[n], REDEFINE | (CURRENT if n == 'f1' else 0))
            self.assertEqual(h.call(path, S, 'GetXMLDesc', (0,), 't'), texts[n], 'round trip of %s' % n)
            mine, theirs = self.props(path), self.props(self.snap_path(dom, n))
            for k in ('Name', 'Description', 'State', 'Location', 'Memory', 'CreationTime', 'IsCurrent'):
                self.assertEqual(mine[k], theirs[k], '%s.%s' % (n, k))
        self.assertEqual(self.dprop(other, 'CurrentSnapshot'), self.snap_path(other, 'f1'))
        self.assertEqual(self.active(other), {'vda': b})
        self.assertEqual(sorted(os.listdir(h.images_dir)), sorted(['a.qcow2', 'a.e1', 'a.f1', 'f1.mem', 'b.qcow2']))

    def test_libvirt_dumpxml_fixtures_redefine(self):
        h = self.h
        img = h.create_image('a.qcow2')
        # Fixtures in libvirt's layout (tests/fixtures/snapshot/README.md)
        # and ours come back element for element; inputs in another shape
        # as libvirt would write them.
        outputs = ['all-parameters.xml', 'disk-seclabel.xml', 'disk-source-only.xml', 'external-memory.xml',
                   'external-memory-redefine.xml', 'full-domain.xml', 'memory-inactive-domain.xml',
                   'no-parent-description-active.xml', 'metadata-cache.xml', 'revert-disks.xml',
                   'qsnap-written.expected.xml']
        inputs = ['in-any-order.xml', 'in-external-memory.xml', 'in-disk-seclabel.xml', 'on-delete.xml',
                  'qsnap-written.xml']
        for i, fixture in enumerate(outputs + inputs):
            relaxed = fixture in inputs
            with self.subTest(fixture=fixture):
                with open(os.path.join(FIXTURES, fixture)) as f:
                    text = in_folder(f.read(), h.images_dir)
                want = ET.fromstring(text)
                dom = h.define_domain('fx%d' % i, [q.Disk('vda', img)])
                parent = want.find('parent')
                if parent is not None:
                    self.create(dom, snap_xml(parent.findtext('name').strip()), REDEFINE)
                path = self.create(dom, text, REDEFINE)
                self.assertEqual(self.props(path)['Name'], want.findtext('name'))
                secure = h.call(path, S, 'GetXMLDesc', (1,), 't')
                self.assertEqual(normalize(ET.fromstring(secure), relaxed), normalize(want, relaxed))
                if fixture == 'qsnap-written.xml':
                    with open(os.path.join(FIXTURES, 'qsnap-written.expected.xml')) as f:
                        self.assertEqual(secure, in_folder(f.read(), h.images_dir))
                plain = h.call(path, S, 'GetXMLDesc', (0,), 't')
                if 'passwd=' in text:
                    self.assertNotIn('passwd=', plain)
                else:
                    self.assertEqual(plain, secure)
                # and what we wrote goes back in once more
                again = h.define_domain('fx%d-again' % i, [q.Disk('vda', img)])
                if parent is not None:
                    self.create(again, snap_xml(parent.findtext('name').strip()), REDEFINE)
                path2 = self.create(again, secure, REDEFINE)
                self.assertEqual(h.call(path2, S, 'GetXMLDesc', (1,), 't'), secure)
        self.assertEqual(sorted(os.listdir(h.images_dir)), ['a.qcow2'])
        self.assertEqual(qemu_img_snapshot_tags(img), [])

    def test_real_snapshots_survive_restart(self):
        h = self.h
        a = h.create_image('a.qcow2')
        b = h.create_image('b.qcow2')
        dom = h.define_domain('persist', [q.Disk('vda', a), q.Disk('vdb', b)])
        self.create(dom, snap_xml('o1', description='offline internal'))
        self.create(dom, snap_xml('e1', description='offline external'), DISK_ONLY)
        self.create(dom, snap_xml('r1', parent='e1', state='shutoff', creation_time=1600000000,
                                  disks=[('vda', 'no'), ('vdb', 'no')], memory='no'), REDEFINE | CURRENT)
        # between two steps: the current snapshot must survive, or the next
        # one gets the wrong parent
        h.restart_daemon(kill=True)
        self.assertEqual(self.dprop(dom, 'CurrentSnapshot'), self.snap_path(dom, 'r1'))
        self.start(dom)
        self.write(dom, 'vda', 0xa0, 0)
        self.create(dom, snap_xml('l1', description='live external'), DISK_ONLY)
        self.write(dom, 'vda', 0xa1, 1 << 20)
        self.create(dom, snap_xml('l2', description='live internal'))
        names = ['o1', 'e1', 'r1', 'l1', 'l2']
        paths = [self.snap_path(dom, n) for n in names]
        self.assertEqual([self.props(p)['Parent'] for p in paths], ['/'] + paths[:-1])

        def capture():
            return {
                'props': {n: self.props(self.snap_path(dom, n)) for n in names},
                'xml': {n: h.call(self.snap_path(dom, n), S, 'GetXMLDesc', (1,), 't') for n in names},
                'Snapshots': self.dprop(dom, 'Snapshots'),
                'CurrentSnapshot': self.dprop(dom, 'CurrentSnapshot'),
                'topological': h.call(dom, D, 'ListSnapshots', (TOPOLOGICAL,), 't'),
                'State': self.dprop(dom, 'State'),
            }
        before = capture()
        self.assertEqual(before['CurrentSnapshot'], paths[-1])
        disks = self.assert_disks_agree(dom, 'before the restarts')
        uuid = self.uuid(dom)
        files = self.metadata_files(dom)
        self.assertTrue(files and set(files) <= {uuid + '.xml', uuid + '.journal'}, files)
        self.assertEqual(sorted(os.listdir(os.path.join(h.state_dir, 'snapshots'))), files)

        for kill in (True, False):
            how = 'kill -9' if kill else 'SIGTERM'
            h.restart_daemon(kill=kill)
            after = capture()
            for key in before:
                self.assertEqual(after[key], before[key], '%s after %s' % (key, how))
            with self.subTest('Disks of the running domain after %s' % how):
                self.assertEqual(self.dprop(dom, 'Disks'), disks,
                                 'a restarted qsnapd reads the live definition QEMU was started with, '
                                 'from before the live external snapshot')
                self.assert_disks_agree(dom, 'after %s' % how)
        h.verify_pattern_live(dom, 'vda', 0xa1, 1 << 20, 1 << 16)
        # The next live snapshot after the restarts goes on top of the file
        # QEMU really writes (a.l1), with that file as the overlay's backing.
        l3 = h.image_path('a.l3')
        self.create(dom, snap_xml('l3'), DISK_ONLY)
        with self.subTest('the overlay made after a restart'):
            self.assertEqual(self.qemu_chains(dom)['vda'][:2], [l3, h.image_path('a.l1')])
            self.assertEqual(self.chain_files(l3)[:2], [l3, h.image_path('a.l1')],
                             'the overlay made after the restart names the wrong backing file')
            self.assert_disks_agree(dom, 'l3 after the restarts')
        self.write(dom, 'vda', 0xa3, 3 << 20)
        self.stop(dom)
        with self.subTest('Disks after Stop'):
            self.assertEqual(self.active(dom), {'vda': l3, 'vdb': h.image_path('b.l3')})
        self.assert_layer(a, [], [0, 1 << 20])
        self.assert_layer(h.image_path('a.e1'), [(0xa0, 0)], [1 << 20])
        self.assert_layer(h.image_path('a.l1'), [(0xa0, 0), (0xa1, 1 << 20)], [3 << 20])
        self.assert_layer(l3, [(0xa0, 0), (0xa1, 1 << 20), (0xa3, 3 << 20)], [], 'the active layer (data written '
                          'before l3 must read through its chain)')
        self.assertEqual(qemu_img_snapshot_tags(a), ['o1'])
        self.assertEqual(qemu_img_snapshot_tags(h.image_path('a.l1')), ['l2'])

    def test_authorization(self):
        h = self.h
        img = h.create_image('a.qcow2')
        domain_text = q.domain_xml('secret', [q.Disk('vda', img)]).replace(
            '  </devices>', "    <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret-vnc'/>\n  </devices>")
        dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (domain_text, 0), 'st')
        snap = self.create(dom, snap_xml('o1'))
        self.assertIn('s3cret-vnc', h.call(snap, S, 'GetXMLDesc', (1,), 't'))
        plain = h.call(snap, S, 'GetXMLDesc', (0,), 't')
        self.assertNotIn('s3cret-vnc', plain)

        def gdbus(path, method, *args):
            return h.gdbus_as(q.NOBODY_UID, 'call', '--dest', q.BUS_NAME, '--object-path', path,
                              '--method', method, *args)

        # Denied: nothing changes.
        for flags in (DISK_ONLY, 0, REDEFINE):
            with self.subTest(flags=flags):
                with self.unchanged(dom):
                    rc, out, err = gdbus(dom, D + '.CreateSnapshot',
                                         '"<domainsnapshot><name>n%d</name></domainsnapshot>"' % flags,
                                         'uint64 %d' % flags)
                    self.assertNotEqual(rc, 0, out)
                    self.assertIn(q.ACCESS_DENIED, err)
        self.assertEqual(sorted(os.listdir(h.images_dir)), ['a.qcow2'])
        self.assertEqual(qemu_img_snapshot_tags(img), ['o1'])
        rc, out, err = gdbus(snap, S + '.GetXMLDesc', 'uint64 1')
        self.assertNotEqual(rc, 0, out)
        self.assertIn(q.ACCESS_DENIED, err)
        self.assertNotIn('s3cret', out)

        # The same for a running domain: QEMU's block graph stays as it was.
        other = h.define_domain('running', [q.Disk('vda', h.create_image('r.qcow2'))])
        self.start(other)
        for flags in (DISK_ONLY, 0):
            with self.unchanged(other):
                rc, out, err = gdbus(other, D + '.CreateSnapshot', '"<domainsnapshot/>"', 'uint64 %d' % flags)
                self.assertNotEqual(rc, 0, out)
                self.assertIn(q.ACCESS_DENIED, err)
        self.assertEqual(qemu_img_snapshot_tags(h.image_path('r.qcow2')), [])
        self.stop(other)

        # Reads need nothing.
        rc, out, err = gdbus(snap, S + '.GetXMLDesc', 'uint64 0')
        self.assertEqual(rc, 0, err)
        self.assertIn('<name>o1</name>', out)
        self.assertNotIn('s3cret', out)
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, dom, D, 'ListSnapshots', 't', '0')
        self.assertEqual((rc, out.strip()), (0, 'ao 1 "%s"' % snap), err)
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, dom, D, 'LookupSnapshot', 's', 'o1')
        self.assertEqual((rc, out.strip()), (0, 'o "%s"' % snap), err)
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'get-property', q.BUS_NAME, snap, S, 'State', 'IsCurrent')
        self.assertEqual((rc, out.split()), (0, ['s', '"shutoff"', 'b', 'true']), err)
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, snap, S, 'ListChildren', 't', '1')
        self.assertEqual((rc, out.strip()), (0, 'ao 0'), err)

        # A rule granting manage-snapshots lets the same uid in.
        h.grant(q.ACTION_MANAGE_SNAPSHOTS, user='nobody')
        rc, out, err = gdbus(dom, D + '.CreateSnapshot', '"<domainsnapshot><name>granted</name></domainsnapshot>"',
                             'uint64 %d' % DISK_ONLY)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.active(dom), {'vda': h.image_path('a.granted')})

    def test_undefine_with_snapshots(self):
        h = self.h
        a = h.create_image('a.qcow2')
        dom = h.define_domain('gone', [q.Disk('vda', a)])
        uuid = self.uuid(dom)
        o1 = self.create(dom, snap_xml('o1'))
        e1 = self.create(dom, snap_xml('e1'), DISK_ONLY)
        self.assertTrue(self.metadata_files(dom))
        with self.unchanged(dom):
            with self.assertDBusError(E + 'HasSnapshots'):
                h.call(dom, D, 'Undefine', (0,), 't')
        rec = h.record_signals()
        h.call(dom, D, 'Undefine', (1,), 't')
        for path in (o1, e1, dom):
            rec.wait_for(lambda s: s.member == 'InterfacesRemoved' and s.args[0] == path)
        snapdir = os.path.join(h.state_dir, 'snapshots')
        self.assertEqual([f for f in os.listdir(snapdir) if f.startswith(uuid)] if os.path.isdir(snapdir) else [], [])
        self.assertFalse(os.path.exists(os.path.join(h.state_dir, 'domains', uuid + '.xml')))
        self.assertEqual(sorted(os.listdir(h.images_dir)), ['a.e1', 'a.qcow2'])
        self.assertEqual(qemu_img_snapshot_tags(a), ['o1'], 'Undefine must not touch images')
        with self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject'):
            h.get_property(o1, S, 'Name')
        # Defined again (same UUID): no metadata comes back from anywhere.
        again = h.define_domain('gone', [q.Disk('vda', h.image_path('a.e1'))], uuid=uuid)
        self.assertEqual(self.dprop(again, 'Snapshots'), [])
        self.assertEqual(self.dprop(again, 'CurrentSnapshot'), '/')
        h.restart_daemon(kill=True)
        self.assertEqual(h.call(again, D, 'ListSnapshots', (0,), 't'), [])


if __name__ == '__main__':
    q.main()
