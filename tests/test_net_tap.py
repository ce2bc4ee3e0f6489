#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bridged interfaces under the sandboxed, unprivileged QEMU (issue #14):
qsnapd makes each tap (core/domain-net.c) and QEMU inherits it.

QEMU runs as qsnap-qemu with -sandbox …,spawn=deny (the system bus's
default, --qemu-user=), so QEMU's bridge helper cannot run; the bridges
allowed are those of a bridge.conf the test names with --bridge-conf=.

- <interface type='bridge'> and type='network' on a bridge of the test's
  own (ip link add … type bridge): each is a tap (ip -d link: a port of
  the bridge, UP, the bridge's MTU, the guest's MAC with 0xfe first,
  tun type tap), QEMU's `info network` names a tap netdev, QEMU holds
  /dev/net/tun and qsnapd does not (so the tap goes with QEMU), the live
  GetXMLDesc has <target dev=…> of each (the stored definition has none),
  a <target dev> named in the XML is the tap's name.
- qsnapd killed and restarted: the running QEMU keeps its taps, the live
  XML still names them; Stop removes them.
- An internal snapshot with memory and its revert with the NIC: the tap
  stays on the bridge; an external one with memory: its revert starts a
  new QEMU with a new tap, the old one goes.
- A ping through the bridge: the real guest (tests/guest, TCG) on a
  bridged interface with an address from its command line answers the
  host's ping to it over the bridge (the host has an address on it).
- Refusals, before anything is made (no tap left, domain shut off): a
  bridge the list does not allow and no list at all (PathNotAllowed), a
  bridge that does not exist or is not a bridge (InvalidArgument).
"""

import json
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import qsnapguest as g
import qsnaptest as q

D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE


def ip_link(name):
    """ip -d -j link show NAME as a dict, None when there is no such link."""
    r = subprocess.run(['ip', '-d', '-j', 'link', 'show', 'dev', name], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)[0]


def taps():
    """Every tun/tap device of the host, by name."""
    return {n for n in os.listdir('/sys/class/net') if os.path.exists('/sys/class/net/%s/tun_flags' % n)}


def fds_to(pid, target):
    n = 0
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            n += os.readlink('/proc/%d/fd/%s' % (pid, fd)) == target
        except OSError:
            pass
    return n


class NetTapTest(q.UnprivilegedQemu, q.QsnapTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='qsnap-bridgeconf-')
        self.bridge_conf = os.path.join(self.tmp, 'bridge.conf')
        self.harness_options = {'image_root': True,
                                'daemon_args': ['--qemu-user=' + q.QEMU_USER, '--bridge-conf=' + self.bridge_conf]}
        super().setUp()
        self.bridge = self.make_bridge('br-qsnapt%d' % (os.getpid() % 100000))
        self.taps_before = taps()

    def tearDown(self):
        super().tearDown()
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)

    def make_bridge(self, name, mtu=1400):
        q.run(['ip', 'link', 'del', name])
        for argv in (['ip', 'link', 'add', name, 'type', 'bridge'], ['ip', 'link', 'set', name, 'mtu', str(mtu)],
                     ['ip', 'link', 'set', name, 'up']):
            r = q.run(argv)
            self.assertEqual(r.returncode, 0, '%s: %s' % (argv, r.stderr))
        self.addCleanup(q.run, ['ip', 'link', 'del', name])
        return name

    def allow(self, *lines):
        with open(self.bridge_conf, 'w') as f:
            f.write(''.join(line + '\n' for line in lines))

    def define(self, name, interfaces):
        h = self.h
        disk = h.create_image(name + '.qcow2')
        xml = q.domain_xml(name, [q.Disk('vda', disk)],
                           domain_type='kvm' if q.kvm_works(q.QEMU_USER) else 'qemu')
        xml = xml.replace('  </devices>', interfaces + '\n  </devices>')
        return h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')

    def bridged(self, name, target=None, network=False):
        src = ("<source network='%s'/>" if network else "<source bridge='%s'/>") % self.bridge
        tgt = "<target dev='%s'/>" % target if target else ''
        return ("    <interface type='%s'>%s%s<model type='virtio'/></interface>"
                % ('network' if network else 'bridge', src, tgt))

    def live_targets(self, dom, flags=0):
        root = ET.fromstring(self.h.call(dom, D, 'GetXMLDesc', (flags,), 't'))
        out = []
        for i in root.findall('devices/interface'):
            t = i.find('target')
            out.append((i.get('type'), i.find('mac').get('address'), t.get('dev') if t is not None else None))
        return out

    def assert_tap_on_bridge(self, tap, mac):
        link = ip_link(tap)
        self.assertIsNotNone(link, 'no link %s' % tap)
        self.assertEqual(link.get('master'), self.bridge, link)
        self.assertIn('UP', link['flags'], link)
        self.assertEqual(link['mtu'], 1400, "the bridge's MTU")
        self.assertEqual(link['address'], 'fe' + mac[2:], "the guest's MAC with 0xfe first (libvirt's)")
        self.assertEqual(link['linkinfo']['info_kind'], 'tun', link)
        self.assertEqual(link['linkinfo']['info_data']['type'], 'tap', link)
        self.assertFalse(link['linkinfo']['info_data'].get('persist'), 'a persistent tap outlives QEMU')
        self.assertTrue(os.path.exists('/sys/class/net/%s/brif/%s' % (self.bridge, tap)))

    def assert_no_new_taps(self):
        q.wait_until(lambda: taps() <= self.taps_before, 10, 'the taps gone: %s' % (taps() - self.taps_before))

    def test_taps_on_the_bridge(self):
        h = self.h
        self.allow('# the test bridge', 'allow %s' % self.bridge)
        tname = 'qt%d' % (os.getpid() % 100000)
        dom = self.define('net', "    <interface type='user'/>\n" + self.bridged('b') + '\n' +
                          self.bridged('n', network=True) + '\n' + self.bridged('t', target=tname))
        stored = self.live_targets(dom)
        self.assertEqual([t for _, _, t in stored], [None] * 3 + [tname], 'no tap in the stored definition')

        h.call(dom, D, 'Start', (0,), 't')
        pid = h.qemu_pid(dom)
        with open('/proc/%d/status' % pid) as f:
            st = dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)
        self.assertEqual(int(st['Uid'].split()[0]), q.pwd.getpwnam(q.QEMU_USER).pw_uid, 'QEMU as qsnap-qemu')
        self.assertEqual(st['Seccomp'], '2', 'QEMU sandboxed')
        with open('/proc/%d/cmdline' % pid) as f:
            self.assertIn('spawn=deny', f.read())

        live = self.live_targets(dom)
        self.assertEqual(live[0][2], None, 'user-mode has no tap')
        names = [t for _, _, t in live[1:]]
        self.assertRegex(names[0], r'^qsnap\d+$')
        self.assertRegex(names[1], r'^qsnap\d+$')
        self.assertEqual(names[2], tname, 'the <target dev> asked for')
        self.assertEqual(taps() - self.taps_before, set(names))
        for (_, mac, _), tap in zip(live[1:], names):
            self.assert_tap_on_bridge(tap, mac)
        self.assertEqual(sorted(os.listdir('/sys/class/net/%s/brif' % self.bridge)), sorted(names))
        self.assertEqual(self.live_targets(dom, 2), stored, 'INACTIVE: the stored definition')

        net = h.hmp(dom, 'info network')
        for i in (1, 2, 3):
            self.assertRegex(net, r'hostnet%d: index=0,type=tap,fd=\d+' % i)
        self.assertRegex(net, r'hostnet0: index=0,type=user')
        self.assertEqual(fds_to(pid, '/dev/net/tun'), 3, 'QEMU holds the taps')
        self.assertEqual(fds_to(h.daemon_pid(), '/dev/net/tun'), 0, 'qsnapd keeps no tap open')

        # A restarted qsnapd: QEMU keeps its taps, the live XML names them.
        h.restart_daemon()
        self.assertEqual(h.get_property(dom, D, 'State'), 'running')
        self.assertEqual([t for _, _, t in self.live_targets(dom)], [None] + names)
        for (_, mac, _), tap in zip(live[1:], names):
            self.assert_tap_on_bridge(tap, mac)

        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_no_new_taps()
        self.assertEqual(os.listdir('/sys/class/net/%s/brif' % self.bridge), [])
        self.assertEqual(self.live_targets(dom), stored)

    def test_memory_snapshot_and_revert_with_a_tap(self):
        h = self.h
        self.allow('allow all')
        dom = self.define('snap', self.bridged('b'))
        h.call(dom, D, 'Start', (0,), 't')
        (_, mac, tap), = self.live_targets(dom)
        self.assert_tap_on_bridge(tap, mac)
        snap = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>m1</name></domainsnapshot>', 0), 'st',
                      timeout=120)
        self.assertEqual(h.get_property(snap, S, 'Memory'), 'internal')
        h.call(snap, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(h.get_property(dom, D, 'State'), 'running')
        (_, mac2, tap2), = self.live_targets(dom)
        self.assertEqual(mac2, mac)
        self.assert_tap_on_bridge(tap2, mac)
        self.assertRegex(h.hmp(dom, 'info network'), r'hostnet0: index=0,type=tap,fd=\d+')
        # An external snapshot with memory: its revert starts a new QEMU
        # (incoming migration), which gets a new tap; the old one goes.
        ext = h.call(dom, D, 'CreateSnapshot', (
            "<domainsnapshot><name>e1</name><memory snapshot='external' file='%s'/><disks><disk name='vda' "
            "snapshot='external'><source file='%s'/></disk></disks></domainsnapshot>"
            % (h.image_path('e1.mem'), h.image_path('e1.qcow2')), 0), 'st', timeout=120)
        pid = h.qemu_pid(dom)
        h.call(ext, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(h.get_property(dom, D, 'State'), 'running')
        self.assertNotEqual(h.qemu_pid(dom), pid, 'a new QEMU')
        (_, mac3, tap3), = self.live_targets(dom)
        self.assertEqual(mac3, mac)
        self.assert_tap_on_bridge(tap3, mac)
        self.assertEqual(os.listdir('/sys/class/net/%s/brif' % self.bridge), [tap3], 'the old QEMU\'s tap went')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_no_new_taps()

    def refused(self, dom, error, *words):
        with self.assertDBusError(q.ERROR_PREFIX + error) as cm:
            self.h.call(dom, D, 'Start', (0,), 't')
        for w in words:
            self.assertIn(w, cm.exception.message)
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'shutoff')
        self.assertEqual(taps() - self.taps_before, set(), 'a tap was left')
        self.assertEqual(os.listdir('/sys/class/net/%s/brif' % self.bridge), [])

    def test_refusals(self):
        dom = self.define('bad', "    <interface type='user'/>\n" + self.bridged('b'))
        # No list at all: nothing is allowed (QEMU's helper's rule).
        self.refused(dom, 'PathNotAllowed', self.bridge, self.bridge_conf)
        # A list without this bridge; a deny wins over allow all.
        self.allow('allow some-other-br')
        self.refused(dom, 'PathNotAllowed', self.bridge, 'allow %s' % self.bridge)
        self.allow('allow all', 'deny %s' % self.bridge)
        self.refused(dom, 'PathNotAllowed', self.bridge)
        # A line the helper would refuse: refused too, with the line.
        self.allow('permit %s' % self.bridge)
        self.refused(dom, 'PathNotAllowed', 'line 1')
        # Allowed but missing; allowed but not a bridge.
        missing = self.define('missing', "    <interface type='bridge'><source bridge='br-qsnapt-no'/></interface>")
        self.allow('allow all')
        self.refused(missing, 'InvalidArgument', 'br-qsnapt-no', 'does not exist')
        notbr = self.define('notbr', "    <interface type='bridge'><source bridge='lo'/></interface>")
        self.refused(notbr, 'InvalidArgument', "'lo' is not a bridge")
        # A <target dev> naming an existing tap (someone else's, persistent)
        # never takes it over (IFF_TUN_EXCL): QemuFailed, the tap untouched.
        victim = 'qtv%d' % (os.getpid() % 100000)
        r = q.run(['ip', 'tuntap', 'add', 'dev', victim, 'mode', 'tap'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(q.run, ['ip', 'link', 'del', victim])
        self.taps_before = taps()
        taken = self.define('taken', self.bridged('b', target=victim))
        self.allow('allow %s' % self.bridge)
        self.refused(taken, 'QemuFailed', victim, 'exists')
        self.assertIsNone(ip_link(victim).get('master'), 'the existing tap was put on the bridge')
        # The same domain starts once its bridge is allowed.
        self.allow('include %s' % os.path.join(self.tmp, 'more.conf'))
        with open(os.path.join(self.tmp, 'more.conf'), 'w') as f:
            f.write('allow %s\n' % self.bridge)
        self.h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(len(os.listdir('/sys/class/net/%s/brif' % self.bridge)), 1)
        self.h.call(dom, D, 'Stop', (0,), 't')
        self.assert_no_new_taps()


class PingTest(q.QsnapTestCase):
    """Root's qsnapd (the harness's default: QEMU as qsnapd, which still
    makes the taps itself) and the real guest."""

    def test_ping_through_the_bridge(self):
        h = self.h
        net = 'br-qsnapp%d' % (os.getpid() % 100000)
        sub = '10.213.%d' % (os.getpid() % 250 + 1)
        q.run(['ip', 'link', 'del', net])
        for argv in (['ip', 'link', 'add', net, 'type', 'bridge'], ['ip', 'addr', 'add', sub + '.1/24', 'dev', net],
                     ['ip', 'link', 'set', net, 'up']):
            r = q.run(argv)
            self.assertEqual(r.returncode, 0, '%s: %s' % (argv, r.stderr))
        self.addCleanup(q.run, ['ip', 'link', 'del', net])
        conf = h.image_path('bridge.conf')
        with open(conf, 'w') as f:
            f.write('allow %s\n' % net)
        h.stop_daemon()
        h.daemon_args.append('--bridge-conf=' + conf)
        h.start_daemon()
        gu = g.Guest(h, 'pinger', devices="    <interface type='bridge'><source bridge='%s'/></interface>" % net,
                     cmdline_extra='qsnap.ip=%s.2/24' % sub)
        self.addCleanup(gu.close)
        v = gu.start()
        self.assertEqual(v.group(1), 'ok', v.group(0))
        self.assertEqual(gu.boot_line('IP'), sub + '.2/24', gu.boot_lines)
        tap = ET.fromstring(h.call(gu.path, q.DOMAIN_IFACE, 'GetXMLDesc', (0,), 't')).find(
            'devices/interface/target').get('dev')
        self.assertEqual(os.listdir('/sys/class/net/%s/brif' % net), [tap])
        r = q.run(['ping', '-c', '3', '-W', '5', sub + '.2'], timeout=60)
        self.assertEqual(r.returncode, 0, 'no answer through the bridge:\n' + r.stdout + r.stderr)
        self.assertIn('3 received', r.stdout)
        h.call(gu.path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        q.wait_until(lambda: not os.path.exists('/sys/class/net/' + tap), 10, 'the tap gone')


if __name__ == '__main__':
    q.main()
