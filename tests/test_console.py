#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Serial ports and consoles on ptys (issue #14's rest).

- The live GetXMLDesc names each pty as libvirt's does: <serial
  type='pty'><source path='/dev/pts/N'/>, <console type='pty'
  tty='/dev/pts/N'><source path=…/>, a console that is the first serial
  with that serial's pty; the path is the one QEMU's query-chardev gives
  and a pty device; a PAUSED start has them too when Start answers; a
  restarted qsnapd still shows them; the stored definition (INACTIVE, and
  after Stop) has none.
"""

import os
import stat
import xml.etree.ElementTree as ET

import qsnaptest as q

D = q.DOMAIN_IFACE
START_PAUSED = 1
XML_INACTIVE = 2

PTYS = '\n'.join([
    "    <serial type='pty'><target port='0'/></serial>",
    "    <serial type='pty'><target port='1'/></serial>",
    "    <console type='pty'><target type='serial' port='0'/></console>"])


class ConsoleTestCase(q.QsnapTestCase):
    harness_options = {'image_root': True}

    def define(self, name, devices):
        h = self.h
        xml = q.domain_xml(name, [q.Disk('vda', h.create_image(name + '.qcow2'))])
        xml = xml.replace('  </devices>', devices + '\n  </devices>')
        return h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')

    def ptys(self, dom, flags=0):
        """[(element, <source path>, tty=)] of the serials and consoles."""
        root = ET.fromstring(self.h.call(dom, D, 'GetXMLDesc', (flags,), 't'))
        out = []
        for e in root.find('devices'):
            if e.tag in ('serial', 'console'):
                s = e.find('source')
                out.append((e.tag, s.get('path') if s is not None else None, e.get('tty')))
        return out

    def chardev_ptys(self, dom):
        return {c['label']: c['filename'][4:] for c in self.h.qmp(dom, 'query-chardev')['return']
                if c['filename'].startswith('pty:')}


class PtyPathTest(ConsoleTestCase):
    def assert_live_ptys(self, dom):
        live = self.ptys(dom)
        qemu = self.chardev_ptys(dom)
        self.assertEqual(sorted(qemu), ['char0', 'char1'], 'the console is serial0: no chardev of its own')
        self.assertEqual(live, [('serial', qemu['char0'], None), ('serial', qemu['char1'], None),
                                ('console', qemu['char0'], qemu['char0'])])
        for path in qemu.values():
            self.assertRegex(path, r'^/dev/pts/\d+$')
            self.assertTrue(stat.S_ISCHR(os.stat(path).st_mode))
        return live

    def test_pty_paths_in_the_live_xml(self):
        h = self.h
        dom = self.define('ptys', PTYS)
        stored = self.ptys(dom)
        self.assertEqual(stored, [('serial', None, None), ('serial', None, None), ('console', None, None)])

        h.call(dom, D, 'Start', (START_PAUSED,), 't')
        live = self.assert_live_ptys(dom)
        self.assertEqual(self.ptys(dom, XML_INACTIVE), stored)
        h.restart_daemon()
        self.assertEqual(self.ptys(dom), live, 'a restarted qsnapd reads the live XML back')
        h.call(dom, D, 'Resume')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(self.ptys(dom), stored)

        h.call(dom, D, 'Start', (0,), 't')
        self.assert_live_ptys(dom)
        h.call(dom, D, 'Stop', (0,), 't')


if __name__ == '__main__':
    q.main()
