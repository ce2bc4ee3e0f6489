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
- Domain.OpenConsole (the runtime folder and QEMU's ptys are not a
  caller's to open on the system bus): a pty console is QEMU's pty (the
  path of the live XML) in raw mode, '' and 'console0' are the console
  that repeats serial0, a unix serial QEMU listens on is a connection to
  its socket; unknown flags, an unknown name, a shut-off domain and a file
  serial are refused with named errors. A user granted manage-domains for
  the real guest's domain (polkit rules.d, setpriv) reads the guest's
  ttyS1 line through the descriptor; a user without the grant is denied.
"""

import os
import re
import select
import socket
import stat
import struct
import subprocess
import termios
import xml.etree.ElementTree as ET

from gi.repository import Gio, GLib

import qsnapguest as g
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


# Run as another user (setpriv): OpenConsole, then the console's bytes
# until a line holding argv[3] ends (or 120 s), on stdout.
HELPER = r"""
import os, select, sys, time
from gi.repository import Gio, GLib
conn = Gio.DBusConnection.new_for_address_sync(os.environ['DBUS_SYSTEM_BUS_ADDRESS'],
    Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
try:
    ret, fds = conn.call_with_unix_fd_list_sync('org.example.Snapshot1', sys.argv[1], 'org.example.Snapshot1.Domain',
        'OpenConsole', GLib.Variant('(st)', (sys.argv[2], 0)), GLib.VariantType('(h)'), Gio.DBusCallFlags.NONE,
        30000, None, None)
except GLib.Error as e:
    print('ERROR', Gio.DBusError.get_remote_error(e), flush=True)
    sys.exit(0)
fd = fds.get(ret.unpack()[0])
print('OPENED', flush=True)
want, got, end = sys.argv[3].encode(), b'', time.monotonic() + 120
while time.monotonic() < end:
    if select.select([fd], [], [], 1)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        got += chunk
        if want in got and b'\n' in got[got.index(want):]:
            break
print('GOT', repr(got), flush=True)
"""


class OpenConsoleTest(ConsoleTestCase):
    def open_console(self, dom, dev, flags=0):
        """OpenConsole as root: the descriptor (ours to close)."""
        try:
            ret, fds = self.h.client.conn.call_with_unix_fd_list_sync(
                q.BUS_NAME, dom, D, 'OpenConsole', GLib.Variant('(st)', (dev, flags)), GLib.VariantType('(h)'),
                Gio.DBusCallFlags.NONE, 30000, None, None)
        except GLib.Error as e:
            raise q._convert_error(e, 'OpenConsole(%r)' % dev, D, 'OpenConsole') from None
        fd = fds.get(ret.unpack()[0])
        self.addCleanup(os.close, fd)
        return fd

    def helper(self, user, dom, dev, want='\n'):
        """HELPER as user, started: (Popen, its first line)."""
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.h.address, LC_ALL='C')
        p = subprocess.Popen(['setpriv'] + q._user_args(user) + ['/usr/bin/python3', '-c', HELPER, dom, dev, want],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        first = p.stdout.readline().strip()
        if first.startswith('ERROR '):
            q.note_error(D, 'OpenConsole', first.split()[1])
        return p, first

    def test_refusals_ptys_and_sockets(self):
        h = self.h
        log = h.image_path('s2.log')
        dom = self.define('con', PTYS.replace("<serial type='pty'><target port='1'/></serial>",
                                              "<serial type='unix'><target port='1'/></serial>") +
                          "\n    <serial type='file'><source path='%s'/><target port='2'/></serial>" % log)
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            self.open_console(dom, '')
        h.call(dom, D, 'Start', (0,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            self.open_console(dom, '', 1)
        for bad in ('serial7', 'console1', 'serial', 'serialx', 'vnc0'):
            with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument') as cm:
                self.open_console(dom, bad)
            self.assertIn("'serialN'", cm.exception.message)
        with self.assertDBusError(q.ERROR_PREFIX + 'Unsupported') as cm:
            self.open_console(dom, 'serial2')
        self.assertIn('a file', cm.exception.message)

        pty = self.chardev_ptys(dom)['char0']
        for dev in ('serial0', '', 'console0'):
            # Cooked (QEMU makes it raw at creation; someone may change it).
            cooked = os.open(pty, os.O_RDWR | os.O_NOCTTY)
            attrs = termios.tcgetattr(cooked)
            attrs[3] |= termios.ECHO | termios.ICANON
            termios.tcsetattr(cooked, termios.TCSANOW, attrs)
            os.close(cooked)
            fd = self.open_console(dom, dev)
            self.assertTrue(os.isatty(fd))
            self.assertEqual(os.ttyname(fd), pty, dev)
            lflag = termios.tcgetattr(fd)[3]
            self.assertEqual(lflag & (termios.ECHO | termios.ICANON), 0, 'raw, as libvirt: no echo back to the guest')
        fd = self.open_console(dom, 'serial1')
        s = socket.socket(fileno=os.dup(fd))
        self.addCleanup(s.close)
        uuid = h.get_property(dom, D, 'UUID')
        self.assertEqual(s.getpeername(), os.path.join(h.runtime_dir, uuid + '.serial1'))
        h.call(dom, D, 'Stop', (0,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            self.open_console(dom, 'serial0')

    def test_granted_user_reads_the_guest(self):
        h = self.h
        gu = g.Guest(h, 'gcon', devices="    <serial type='pty'><target port='1'/></serial>")
        self.addCleanup(gu.close)
        other = self.define('other', PTYS)
        h.grant([q.ACTION_MANAGE_DOMAINS], user=q.TEST_USER, domain='gcon')
        gu.follow()
        h.call(gu.path, D, 'Start', (START_PAUSED,), 't', timeout=60)
        h.call(other, D, 'Start', (0,), 't')

        # Not granted: another user, and the granted one on another domain.
        for user, dom in ((q.NOBODY_UID, gu.path), (q.TEST_USER, other)):
            p, first = self.helper(user, dom, 'serial1')
            p.wait(30)
            self.assertEqual(first, 'ERROR ' + q.ACCESS_DENIED, (user, dom, p.stderr.read()))
        # ttyS0 is a file: not a console to open.
        with self.assertDBusError(q.ERROR_PREFIX + 'Unsupported'):
            self.open_console(gu.path, '')

        p, first = self.helper(q.TEST_USER, gu.path, 'serial1', 'QSNAP-GUEST-SERIAL1 ')
        self.assertEqual(first, 'OPENED', p.stderr.read() if p.poll() is not None else '')
        h.call(gu.path, D, 'Resume')
        out, err = p.communicate(timeout=150)
        self.assertRegex(out, r"QSNAP-GUEST-SERIAL1 \d+\.\d+", 'the guest\'s ttyS1 line through the fd: %s %s'
                         % (out, err))
        gu.wait_boot()
        h.call(gu.path, D, 'Stop', (0,), 't')

        # qsnapctl console, as that user: the line again on the next boot,
        # then ^] on its standard input ends it (exit 0).
        h.call(gu.path, D, 'Start', (START_PAUSED,), 't', timeout=60)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=h.address, LC_ALL='C')
        ctl = subprocess.Popen(['setpriv'] + q._user_args(q.TEST_USER) +
                               [os.environ['QSNAPCTL_BINARY'], 'console', 'gcon', 'serial1'],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: ctl.poll() is None and ctl.kill())
        self.assertIn(b'Escape character is ^]', ctl.stderr.readline() + ctl.stderr.readline())
        h.call(gu.path, D, 'Resume')
        got = b''
        while not re.search(rb'QSNAP-GUEST-SERIAL1 \d+\.\d+[^\n]*\n', got):
            self.assertTrue(select.select([ctl.stdout], [], [], 120)[0], 'no line from qsnapctl console: %r' % got)
            chunk = os.read(ctl.stdout.fileno(), 4096)
            if not chunk:
                ctl.kill()
                self.fail('qsnapctl console ended: %r %r' % (got, ctl.communicate(timeout=10)[1]))
            got += chunk
        ctl.stdin.write(b'\x1d')
        ctl.stdin.flush()
        self.assertEqual(ctl.wait(30), 0, ctl.stderr.read())
        h.call(gu.path, D, 'Stop', (0,), 't')


class GraphicsTest(ConsoleTestCase):
    GRAPHICS = "    <graphics type='vnc' passwd='qsnap-pw'/>\n    <graphics type='spice'/>"

    def open_graphics(self, dom, idx, flags=0):
        """OpenGraphicsFD as root: a socket (ours to close)."""
        try:
            ret, fds = self.h.client.conn.call_with_unix_fd_list_sync(
                q.BUS_NAME, dom, D, 'OpenGraphicsFD', GLib.Variant('(ut)', (idx, flags)), GLib.VariantType('(h)'),
                Gio.DBusCallFlags.NONE, 30000, None, None)
        except GLib.Error as e:
            raise q._convert_error(e, 'OpenGraphicsFD(%d)' % idx, D, 'OpenGraphicsFD') from None
        s = socket.socket(fileno=fds.get(ret.unpack()[0]))
        self.addCleanup(s.close)
        s.settimeout(10)
        return s

    def test_vnc_and_spice_clients(self):
        h = self.h
        dom = self.define('gfx', self.GRAPHICS)
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            self.open_graphics(dom, 0)
        h.call(dom, D, 'Start', (0,), 't')
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            self.open_graphics(dom, 2)
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
            self.open_graphics(dom, 0, 1)
        for _ in range(2):    # each call a client of its own
            v = self.open_graphics(dom, 0)
            self.assertTrue(v.recv(12).startswith(b'RFB 003.'), 'the VNC server greets on the descriptor')
            # RFB 3.8: the passwd= stands: VNC authentication (2) only.
            v.sendall(b'RFB 003.008\n')
            n = v.recv(1)[0]
            types = b''
            while len(types) < n:
                types += v.recv(n - len(types))
            self.assertEqual(list(types), [2])
        self.assertGreaterEqual(len(h.qmp(dom, 'query-vnc')['return']['clients']), 2)
        # SPICE: the server answers a link message with its own (REDQ).
        s = self.open_graphics(dom, 1)
        body = struct.pack('<IBIIII', 0, 1, 0, 0, 0, 18)
        s.sendall(b'REDQ' + struct.pack('<III', 2, 2, len(body)) + body)
        self.assertEqual(s.recv(4), b'REDQ', 'the SPICE server answers on the descriptor')
        h.call(dom, D, 'Stop', (0,), 't')

    def test_qemu_refuses(self):
        h = self.h
        dom = self.define('gfx', self.GRAPHICS)
        h.call(dom, D, 'Start', (0,), 't')
        proxy = h.proxy_monitor(dom)
        proxy.refuse('getfd', 'refused by the test: getfd')
        with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed') as cm:
            self.open_graphics(dom, 0)
        self.assertIn('refused by the test: getfd', cm.exception.message)
        proxy.allow('getfd')
        proxy.refuse('add_client', 'refused by the test: add_client')
        with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed') as cm:
            self.open_graphics(dom, 0)
        self.assertIn('refused by the test: add_client', cm.exception.message)
        q.wait_until(lambda: 'closefd' in proxy.commands, 10, 'the unused descriptor closed in QEMU')
        h.call(dom, D, 'Stop', (0,), 't')


if __name__ == '__main__':
    q.main()
