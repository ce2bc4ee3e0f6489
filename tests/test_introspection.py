#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""interfaces/*.xml are exactly what the running daemon introspects.

For every interface file, the interface of that name on the live object
tree has the same methods (argument names, types, directions), signals
(argument names, types) and properties (type, access, and whether
EmitsChangedSignal is "const"); and every org.example.* interface the
daemon exposes has a file. Annotations other than "const" and comments
are ignored.

When a later change adds an interface file, make_objects() must create an
object that carries it (a snapshot, a checkpoint, a job), or the test
fails with "not exposed".
"""

import glob
import os
import xml.etree.ElementTree as ET

import qsnaptest as q

EMITS = 'org.freedesktop.DBus.Property.EmitsChangedSignal'


def model(iface):
    """A comparable description of an <interface> element."""
    def names(elements):
        found = [e.get('name') for e in elements]
        dups = sorted({n for n in found if found.count(n) > 1})
        if dups:
            raise AssertionError('%s: duplicate members %s' % (iface.get('name'), dups))

    # A method may not share a name with anything; a signal and a property
    # may (DESIGN: BlockJob1 has both a Ready property and a Ready signal).
    names(iface.findall('method') + iface.findall('signal'))
    names(iface.findall('method') + iface.findall('property'))
    methods = {m.get('name'): [(a.get('name'), a.get('type'), a.get('direction', 'in'))
                               for a in m.findall('arg')]
               for m in iface.findall('method')}
    # Signal arguments have no direction (sd-bus writes none).
    signals = {s.get('name'): [(a.get('name'), a.get('type')) for a in s.findall('arg')]
               for s in iface.findall('signal')}
    props = {}
    for p in iface.findall('property'):
        const = any(a.get('name') == EMITS and a.get('value') == 'const' for a in p.findall('annotation'))
        props[p.get('name')] = (p.get('type'), p.get('access'), 'const' if const else 'changes')
    return {'methods': methods, 'signals': signals, 'properties': props}


def interface_files():
    files = sorted(glob.glob(q.source_path('interfaces', '*.xml')))
    if not files:
        raise AssertionError('no interface files under %s' % q.source_path('interfaces'))
    result = {}
    for path in files:
        for iface in ET.parse(path).getroot().findall('interface'):
            result[iface.get('name')] = (path, iface)
    return result


class IntrospectionTest(q.QsnapTestCase):
    maxDiff = None

    def make_objects(self):
        """At least one object of each interface kind the daemon has."""
        img = self.h.create_image('introspect.qcow2')
        path = self.h.define_domain('introspect', [q.Disk('vda', img)])
        self.h.call(path, q.DOMAIN_IFACE, 'CreateSnapshot',
                    ('<domainsnapshot><name>s1</name></domainsnapshot>', 0), 'st')
        self.h.call(path, q.DOMAIN_IFACE, 'CreateCheckpoint',
                    ('<domaincheckpoint><name>k1</name></domaincheckpoint>', 0), 'st')
        # A job: an active commit stays READY until told, so it is there to see.
        self.h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        self.h.call(path, q.DOMAIN_IFACE, 'CreateSnapshot',
                    ('<domainsnapshot><name>s2</name></domainsnapshot>', 16), 'st')
        self.h.call(path, q.DOMAIN_IFACE, 'BlockCommit', ('vda', '', '', 0, 4), 'sssttt'[:5])

    def live_interfaces(self):
        """{interface name: [(object path, <interface> element)]} over the
        whole tree below /org/example/Snapshot1."""
        found = {}
        todo = [q.MANAGER_PATH]
        while todo:
            path = todo.pop()
            root = ET.fromstring(self.h.introspect(path))
            for iface in root.findall('interface'):
                found.setdefault(iface.get('name'), []).append((path, iface))
            for child in root.findall('node'):
                todo.append(path.rstrip('/') + '/' + child.get('name'))
        return found

    def test_interfaces_match_files(self):
        self.make_objects()
        files = interface_files()
        live = self.live_interfaces()

        root_ifaces = {name for name, objs in live.items() for obj, _ in objs if obj == q.MANAGER_PATH}
        self.assertIn(q.OBJECT_MANAGER_IFACE, root_ifaces, 'the root object must implement ObjectManager')

        for name, (path, iface) in sorted(files.items()):
            with self.subTest(interface=name):
                self.assertTrue(name in live, '%s (%s) is not exposed by any object of the running daemon'
                                % (name, os.path.basename(path)))
                want = model(iface)
                for obj, live_iface in live[name]:
                    self.assertEqual(model(live_iface), want,
                                     'interface %s on %s differs from %s' % (name, obj, path))

        for name in sorted(live):
            if name.startswith('org.example.'):
                with self.subTest(interface=name):
                    self.assertTrue(name in files, 'the daemon exposes %s (on %s) but interfaces/ has no file for it'
                                    % (name, live[name][0][0]))


if __name__ == '__main__':
    q.main()
