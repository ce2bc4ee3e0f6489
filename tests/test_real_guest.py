#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A real Linux guest under qsnapd (issue #14): Debian's kernel booted
directly (<os><kernel/><initrd/><cmdline/>) under TCG (<domain
type='qemu'>: this machine kind's KVM hangs a Linux kernel), an ext4 vda
the guest mounts and writes to all the time (a counter and checksummed
files, each fsync'ed and renamed into place), built by
tests/guest/build-guest.py and driven by tests/lib/qsnapguest.py.

- Devices: a user-mode virtio-net interface, a bridge one and a network
  one (on a bridge of the test's own, allowed in /etc/qemu/bridge.conf,
  the list qsnapd checks before it makes the taps; the guest sees eth0-eth2
  with the MACs of GetXMLDesc, generated when the XML had none, and both
  taps are ports of the bridge), VNC and SPICE on
  UNIX sockets in the runtime dir (VNC with a passwd= asks for it, which
  is neither on QEMU's command line nor in GetXMLDesc without SECURE), ttyS0 to a file
  (every marker the test reads comes from there), ttyS1 on a unix socket
  (the guest's line arrives on it), a read-only raw SATA CD-ROM whose first
  line the guest reads, CPU host-passthrough (max under TCG), boot order,
  on_poweroff/on_reboot, and the guest agent's virtio channel (qemu-ga in
  the guest answers qsnapd's agent client: AgentConnected), and
  <qemu:commandline> arguments (an SMBIOS serial the guest reads). GetXMLDesc writes every
  device back; the CD-ROM is not one of the Disks and no snapshot touches
  it (virsh's snapshot='no' for it is accepted, snapshot='external'
  refused). Internal snapshot with memory of the running guest with all these
  devices, revert to it (the guest's counter goes back and the writer goes
  on), delete it.
- While the guest writes: an external disk-only snapshot (its frozen file
  is clean for e2fsck -n after journal replay and every data file's
  checksum verifies), an external snapshot with memory, revert to the
  memory one (the guest resumes from the counter of its time), revert to
  the disk-only one (shut off; started, the guest boots, mounts and
  verifies every file, its counter from the snapshot's time), delete each
  (merges), and the final image is clean with verified files.
- <on_poweroff>preserve</on_poweroff>: the guest powers off and the domain
  is paused (QEMU kept, the state of the moment); <on_reboot>destroy</on_reboot>:
  the guest reboots and the domain is shut off; the filesystem is clean.
- <domain type='qemu'> runs under TCG (query-kvm: not enabled); the
  launch log shows -accel tcg.
"""

import contextlib
import fcntl
import os
import re
import socket
import xml.etree.ElementTree as ET

import qsnapguest as g
import qsnaptest as q
from test_snapshots import D, DISK_ONLY, S, SnapshotTestCase, qemu_img_snapshot_tags, snap_xml

J = q.JOB_IFACE
RUNNING, PAUSED, FORCE = 1, 2, 4   # Revert's
START_PAUSED = 1
def open_read(path):
    with open(path) as f:
        return f.read()


MAC = re.compile(r'^52:54:00(:[0-9a-f]{2}){3}$')


BRIDGE_CONF = '/etc/qemu/bridge.conf'
BRIDGE_LOCK = '/run/lock/qsnaptest-bridge.lock'


@contextlib.contextmanager
def test_bridge():
    """A bridge of this run (ip link), allowed in QEMU's bridge helper ACL
    (/etc/qemu/bridge.conf, shared: our line added and removed under a
    lock, the file removed when we created it and nothing else is left)."""
    name = 'qsnapt%d' % (os.getpid() % 100000)
    line = 'allow %s\n' % name
    q.run(['ip', 'link', 'del', name])
    r = q.run(['ip', 'link', 'add', name, 'type', 'bridge'])
    if r.returncode != 0:
        raise RuntimeError('cannot create bridge %s: %s' % (name, r.stderr))

    def edit(fn):
        with open(BRIDGE_LOCK, 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.makedirs(os.path.dirname(BRIDGE_CONF), exist_ok=True)
            old = open(BRIDGE_CONF).read() if os.path.exists(BRIDGE_CONF) else None
            new = fn(old or '')
            if new:
                with open(BRIDGE_CONF + '.tmp', 'w') as f:
                    f.write(new)
                os.replace(BRIDGE_CONF + '.tmp', BRIDGE_CONF)
            elif old is not None:
                os.unlink(BRIDGE_CONF)
    edit(lambda text: text + line)
    try:
        yield name
    finally:
        edit(lambda text: text.replace(line, '', 1))
        q.run(['ip', 'link', 'del', name])


def devices_xml(cdrom, serial1_sock, bridge):
    return '\n'.join([
        "    <interface type='user'>",
        "      <model type='virtio'/>",
        '    </interface>',
        "    <interface type='bridge'>",
        "      <source bridge='%s'/>" % bridge,
        '    </interface>',
        "    <interface type='network'>",
        "      <source network='%s'/>" % bridge,
        "      <model type='virtio'/>",
        '    </interface>',
        "    <graphics type='vnc' passwd='qsnap-vnc'/>",
        "    <graphics type='spice'/>",
        "    <video><model type='vga'/></video>",
        "    <serial type='unix'>",
        "      <source mode='bind' path='%s'/>" % serial1_sock,
        "      <target port='1'/>",
        '    </serial>',
        "    <console type='pty'>",
        "      <target type='serial' port='0'/>",
        '    </console>',
        "    <disk type='file' device='cdrom'>",
        "      <driver name='qemu' type='raw'/>",
        "      <source file='%s'/>" % cdrom,
        "      <target dev='sda' bus='sata'/>",
        '      <readonly/>',
        '    </disk>',
        g.agent_channel_xml()])


class RealGuestTest(SnapshotTestCase):
    def guest(self, name, devices='', **kw):
        gu = g.Guest(self.h, name, devices=devices, **kw)
        self.addCleanup(gu.close)
        return gu

    def assert_image_clean(self, image, what, counter_range=None):
        """Offline: journal replayed if needed, e2fsck -fn clean, at least one
        data file and every one verifies; counter within counter_range."""
        r = g.verify_image(image)
        self.assertEqual(r['fsck_rc'], 0, '%s: e2fsck -fn:\n%s' % (what, r['fsck_output']))
        self.assertTrue(r['files'], '%s: no data files' % what)
        self.assertEqual([n for n, ok in r['files'].items() if not ok], [], '%s: files whose checksum fails' % what)
        if counter_range:
            lo, hi = counter_range
            self.assertTrue(lo <= r['counter'] <= hi, '%s: counter %s not in [%d, %d]' % (what, r['counter'], lo, hi))
        return r

    def test_devices_and_internal_memory_snapshot(self):
        h = self.h
        cdrom = g.make_cdrom(h.image_path('cd.raw'), 'QSNAP-CDROM-MARKER-4711')
        serial1 = os.path.join(h.images_dir, 's1.sock')
        bridge = self.enterContext(test_bridge())
        gu = self.guest('devs', devices_xml(cdrom, serial1, bridge),
                        extra="  <cpu mode='host-passthrough'/>\n"
                              "  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
                              "    <qemu:arg value='-smbios'/>\n"
                              "    <qemu:arg value='type=1,serial=QSNAP-ARG-0815'/>\n"
                              "  </qemu:commandline>")
        dom = gu.path
        xml = h.call(dom, D, 'GetXMLDesc', (0,), 't')
        root = ET.fromstring(xml)
        macs = [i.find('mac').get('address') for i in root.findall('devices/interface')]
        for mac in macs:
            self.assertRegex(mac, MAC, 'a generated MAC is kept in the definition')
        self.assertEqual(len(set(macs)), 3)

        # Paused first: ttyS1's socket is connected before the guest writes.
        gu.follow()
        h.call(dom, D, 'Start', (START_PAUSED,), 't', timeout=60)
        s1 = socket.socket(socket.AF_UNIX)
        self.addCleanup(s1.close)
        s1.connect(serial1)
        h.call(dom, D, 'Resume')
        v = gu.wait_boot()
        self.assertEqual(v.group(1), 'ok', v.group(0))

        # Each device, seen from inside the guest.
        nets = sorted(line.split()[1:] for line in gu.boot_lines if line.startswith('QSNAP-GUEST-NET '))
        self.assertEqual(nets, [['eth0', macs[0]], ['eth1', macs[1]], ['eth2', macs[2]]], gu.boot_lines)
        # qsnapd put a tap of each bridged interface on the bridge.
        self.assertEqual(len(os.listdir('/sys/class/net/%s/brif' % bridge)), 2)
        self.assertEqual(gu.boot_line('CDROM'), 'QSNAP-CDROM-MARKER-4711', gu.boot_lines)
        self.assertEqual(gu.boot_line('DMI-SERIAL'), 'QSNAP-ARG-0815', '<qemu:commandline> reached QEMU')
        self.assertRegex(gu.boot_line('AGENT') or '', r'^/dev/vport\d+p\d+$', gu.boot_lines)
        s1.settimeout(30)
        got = b''
        while b'\n' not in got:
            chunk = s1.recv(4096)
            self.assertTrue(chunk, 'ttyS1 closed before a line came')
            got += chunk
        self.assertIn(b'QSNAP-GUEST-SERIAL1 ', got)
        # From the host: the sockets in the runtime dir.
        uuid = self.uuid(dom)
        with socket.socket(socket.AF_UNIX) as v:
            v.settimeout(10)
            v.connect(os.path.join(h.runtime_dir, uuid + '.vnc'))
            self.assertTrue(v.recv(12).startswith(b'RFB 003.'))
            # RFB 3.8: the server lists its security types; with passwd=
            # only VNC authentication (2), never None (1).
            v.sendall(b'RFB 003.008\n')
            n = v.recv(1)[0]
            types = b''
            while len(types) < n:
                types += v.recv(n - len(types))
            self.assertEqual(list(types), [2], 'the VNC server asks for the password')
        self.assertNotIn('qsnap-vnc', open_read(h.domain_log(dom)), 'the password on the command line')
        self.assertNotIn('qsnap-vnc', h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        self.assertTrue(os.path.exists(os.path.join(h.runtime_dir, uuid + '.spice')))
        # qemu-ga answers on the channel: qsnapd's agent client connects
        # there (core/domain-agent.c) and says so.
        q.wait_until(lambda: self.dprop(dom, 'AgentConnected'), 60, 'AgentConnected')
        self.assertEqual(h.qmp(dom, 'query-kvm')['return']['enabled'], False, "type='qemu' is TCG")
        cpu = h.qmp(dom, 'query-cpu-definitions')  # the QEMU answers; the model is in the launch line
        self.assertIn('return', cpu)
        with open(h.domain_log(dom)) as f:
            log = f.read()
        self.assertIn('-accel tcg', log)
        self.assertNotIn('-accel kvm', log)
        self.assertIn('-cpu max', log)
        self.assertIn('-kernel ', log)

        # GetXMLDesc has every device back; the CD-ROM is not a disk.
        for path in ('devices/interface', 'devices/graphics', 'devices/serial', 'devices/console',
                     'devices/channel', "devices/disk[@device='cdrom']", 'os/kernel', 'os/initrd', 'os/cmdline',
                     'cpu', 'on_poweroff', 'on_reboot', '{http://libvirt.org/schemas/domain/qemu/1.0}commandline'):
            self.assertIsNotNone(root.find(path), 'GetXMLDesc lost ' + path)
        self.assertEqual([d[0] for d in self.dprop(dom, 'Disks')], ['vda'])

        # Internal snapshot with memory, with all these devices.
        # A CD-ROM is never snapshotted: virsh's snapshot='no' for it is
        # accepted, asking for more is InvalidArgument and changes nothing.
        with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument') as cm:
            self.create(dom, snap_xml('bad', disks=[('vda', 'external'), ('sda', 'external')]), DISK_ONLY)
        self.assertIn('CD-ROM', cm.exception.message)
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), [])
        self.assertEqual(self.active(dom)['vda'], gu.disk)
        c0 = gu.wait_count((gu.count or 0) + 2)
        i1 = self.create(dom, snap_xml('i1', disks=[('vda', 'internal'), ('sda', 'no')]), 0, timeout=120)
        c1 = gu.wait_count(c0 + 1)
        self.assertEqual(self.props(i1)['Memory'], 'internal')
        self.assertEqual(self.props(i1)['Location'], 'internal')
        c2 = gu.wait_count(c1 + 3)
        gu.follow()
        h.call(i1, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        back = gu.wait_count(0)
        self.assertLess(back, c2 + 1, 'after the revert the counter went back (was %d)' % c2)
        self.assertGreaterEqual(back, c0, 'the counter is the snapshot\'s')
        gu.wait_count(back + 2)                        # and the writer goes on
        self.assertEqual(h.call(i1, S, 'Delete', (0,), 't', timeout=120), '/')
        gu.wait_count(back + 3)
        self.stop(dom)
        self.assert_image_clean(gu.disk, 'after the internal snapshot')
        self.assertEqual(qemu_img_snapshot_tags(gu.disk), [])

    def test_external_snapshots_while_writing(self):
        h = self.h
        gu = self.guest('ext', "    <interface type='user'/>")
        v = gu.start()
        self.assertEqual(v.group(1), 'ok', v.group(0))
        base = gu.disk

        # Disk-only, while the guest writes: the frozen file is a clean fs.
        dom = gu.path
        lo = gu.wait_count((gu.count or 0) + 2)
        e1 = self.create(dom, snap_xml('e1'), DISK_ONLY, timeout=120)
        hi = gu.wait_count(lo + 1)
        self.assertNotEqual(self.active(dom)['vda'], base)
        self.assert_image_clean(base, 'the disk-only snapshot e1', (lo, hi))

        # With memory (external): the guest resumes from its counter.
        m_lo = gu.wait_count(hi + 2)
        m1 = self.create(dom, snap_xml('m1', memory='external', memory_file=h.image_path('m1.mem')), 0,
                         timeout=120)
        m_hi = gu.wait_count(m_lo + 1)
        late = gu.wait_count(m_hi + 3)
        gu.follow()
        h.call(m1, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        back = gu.wait_count(0)
        self.assertTrue(m_lo <= back <= m_hi + 1, 'after revert to m1 the counter is %d, not in [%d, %d] (was %d)'
                        % (back, m_lo, m_hi + 1, late))
        gu.wait_count(back + 2)

        # Disk-only revert: shut off (FORCE: the running state is thrown
        # away); started, the guest boots and verifies every file.
        h.call(e1, S, 'Revert', (FORCE,), 't', timeout=120)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        v = gu.start()
        self.assertEqual(v.group(1), 'ok', v.group(0))
        self.assertTrue(lo <= gu.count <= hi, 'booted from e1 with counter %d, not in [%d, %d]' % (gu.count, lo, hi))
        gu.wait_count(gu.count + 2)

        # Delete both, in the tree, while the guest writes.
        for snap in (m1, e1):
            path = h.call(snap, S, 'Delete', (0,), 't', timeout=120)
            if path != '/':
                q.wait_until(lambda: h.get_property(path, J, 'State') in ('completed', 'failed', 'canceled'), 120,
                             'the delete job ends')
                self.assertEqual(h.get_property(path, J, 'State'), 'completed', h.get_property(path, J, 'Error'))
            gu.wait_count(gu.count + 1)
        self.assertEqual(h.call(dom, D, 'ListSnapshots', (0,), 't'), [])
        self.stop(dom)
        img = self.active(dom)['vda']
        self.assert_image_clean(img, 'after deleting every snapshot')
        q.qemu_img_check(img)

    def test_on_poweroff_and_on_reboot(self):
        h = self.h
        # Both guests boot at once (two TCG guests use both cores: one boot's
        # wait instead of two); each serial log is a file of its own.
        gu = self.guest('life', cmdline_extra='qsnap.then=poweroff', on_poweroff='preserve')
        gu2 = self.guest('life2', cmdline_extra='qsnap.then=reboot', on_reboot='destroy')
        for one in (gu, gu2):
            one.follow()
            h.call(one.path, D, 'Start', (0,), 't', timeout=60)
        gu.wait_boot()
        gu.serial.wait_for(r'^QSNAP-GUEST-THEN poweroff$', what='the guest powering off')
        q.wait_until(lambda: self.dprop(gu.path, 'State') == 'paused', 60, 'on_poweroff preserve: paused')
        self.assertEqual(h.qmp(gu.path, 'query-status')['return']['status'], 'shutdown')
        self.stop(gu.path)
        self.assert_image_clean(gu.disk, 'after the poweroff')

        gu2.wait_boot()
        gu2.serial.wait_for(r'^QSNAP-GUEST-THEN reboot$', what='the guest rebooting')
        q.wait_until(lambda: self.dprop(gu2.path, 'State') == 'shutoff', 60, 'on_reboot destroy: shut off')
        self.assert_image_clean(gu2.disk, 'after the reboot')


if __name__ == '__main__':
    q.main()
