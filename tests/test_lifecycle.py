# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain lifecycle end to end: the real qsnapd on a private bus with the
real polkitd, driving real qemu-system-x86_64 on qcow2 images. Every state
change must be seen as a signal carrying the new value, and guest data
written live must be on disk afterwards."""

import json
import os
import signal
import subprocess
import sys
import time

import qsnaptest as q


def state_signals(rec, path, start=0):
    return [v for v in rec.property_values(path, 'State')][start:]


def read(path):
    with open(path, errors='replace') as f:
        return f.read()


class LifecycleTest(q.QsnapTestCase):
    harness_options = {'daemon_args': ('--graceful-timeout=2',)}

    def test_define_start_pause_resume_stop_undefine(self):
        h = self.h
        img = h.create_image('a.qcow2', '64M')
        rec = h.record_signals()

        path = h.define_domain('alpha', [q.Disk('vda', img)])
        rec.wait_for_signal('InterfacesAdded', path=q.MANAGER_PATH)
        added = [s for s in rec.records if s.member == 'InterfacesAdded']
        self.assertEqual(added[0].args[0], path)
        self.assertIn(q.DOMAIN_IFACE, added[0].args[1])
        self.assertEqual(added[0].args[1][q.DOMAIN_IFACE]['State'], 'shutoff')
        rec.wait_for_property(q.MANAGER_PATH, 'Domains', [path], interface=q.MANAGER_IFACE)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [path])
        props = h.get_all(path, q.DOMAIN_IFACE)
        self.assertEqual(props['Name'], 'alpha')
        self.assertTrue(props['Managed'])
        self.assertEqual(props['Disks'], [('vda', 'qcow2', img, img)])
        uuid = props['UUID']
        self.assertTrue(os.path.exists(os.path.join(h.state_dir, 'domains', uuid + '.xml')))

        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        # The reply comes once the state is reached: no waiting needed.
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        rec.wait_for_property(path, 'State', 'running')
        pid = int(read(os.path.join(h.runtime_dir, uuid + '.pid')))
        self.assertIn('qemu-system', read('/proc/%d/cmdline' % pid))
        # glibc's malloc keeps QEMU's bounce buffers (docs/performance.md,
        # "The pull"): qsnapd's environment has no GLIBC_TUNABLES.
        self.assertNotIn('GLIBC_TUNABLES', os.environ)
        # (glibc's parser, reading them, puts a NUL in place of each ':')
        with open('/proc/%d/environ' % pid, 'rb') as f:
            env = f.read().replace(b'\0', b':')
        self.assertIn(b':GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864:', env)

        h.write_pattern_live(path, 'vda', 0xa1, 0, 1 << 20)
        h.verify_pattern_live(path, 'vda', 0xa1, 0, 1 << 20)
        h.verify_not_pattern_live(path, 'vda', 0xa2, 0, 1 << 20)

        h.call(path, q.DOMAIN_IFACE, 'Pause')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'paused')
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'paused')
        rec.wait_for_property(path, 'State', 'paused')
        h.call(path, q.DOMAIN_IFACE, 'Pause')  # already paused: nothing happens
        h.call(path, q.DOMAIN_IFACE, 'Resume')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'running')

        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
        rec.wait_for_property(path, 'State', 'shutoff')
        self.assertEqual(state_signals(rec, path), ['running', 'paused', 'running', 'shutoff'])
        self.assertTrue(q.spin(lambda: not os.path.exists('/proc/%d' % pid) or
                               read('/proc/%d/stat' % pid).split(')')[1].split()[0] == 'Z', 10))
        self.assertEqual(sorted(f for f in os.listdir(h.runtime_dir) if f.startswith(uuid)), [])

        # The guest's write reached the image.
        self.assertTrue(q.qemu_io_read_pattern(img, 0xa1, 0, 1 << 20))
        q.qemu_img_check(img)

        h.call(path, q.DOMAIN_IFACE, 'Undefine', (0,), 't')
        rec.wait_for_signal('InterfacesRemoved', path=q.MANAGER_PATH)
        removed = [s for s in rec.records if s.member == 'InterfacesRemoved']
        self.assertEqual(removed[0].args[0], path)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        self.assertFalse(os.path.exists(os.path.join(h.state_dir, 'domains', uuid + '.xml')))
        self.assertTrue(os.path.exists(img), 'Undefine must never delete images')

    def test_start_paused_then_resume(self):
        h = self.h
        img = h.create_image('p.qcow2')
        path = h.define_domain('paused one', [q.Disk('vda', img)])
        h.call(path, q.DOMAIN_IFACE, 'Start', (1,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'paused')
        self.assertIn(h.qmp(path, 'query-status')['return']['status'], ('prelaunch', 'paused'))
        h.call(path, q.DOMAIN_IFACE, 'Resume')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')

    def test_graceful_stop_falls_back_to_quit(self):
        # The guest has no OS, so ACPI powerdown is ignored; after the
        # graceful timeout (2 s here) qsnapd tells QEMU to quit.
        h = self.h
        img = h.create_image('g.qcow2')
        path = h.define_domain('graceful', [q.Disk('vda', img)])
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        t0 = time.monotonic()
        h.call(path, q.DOMAIN_IFACE, 'Stop', (1,), 't', timeout=60)
        self.assertGreaterEqual(time.monotonic() - t0, 1.5)
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
        self.assertIn('system_powerdown', read(h.daemon_log))

    def test_guest_state_changed_behind_our_back(self):
        # A stop/cont sent by someone else through the monitor is seen from
        # QMP events, not assumed.
        h = self.h
        img = h.create_image('e.qcow2')
        path = h.define_domain('events', [q.Disk('vda', img)])
        rec = h.record_signals()
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        h.qmp(path, 'stop')
        rec.wait_for_property(path, 'State', 'paused')
        h.hmp(path, 'cont')
        rec.wait_for_property(path, 'State', 'running')
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')

    def test_qemu_killed_is_crashed_and_restartable(self):
        h = self.h
        img = h.create_image('c.qcow2')
        path = h.define_domain('crashy', [q.Disk('vda', img)])
        rec = h.record_signals()
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        uuid = h.get_property(path, q.DOMAIN_IFACE, 'UUID')
        pid = int(read(os.path.join(h.runtime_dir, uuid + '.pid')))
        os.kill(pid, signal.SIGKILL)
        rec.wait_for_property(path, 'State', 'crashed')
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            h.hmp(path, 'info status')
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        # Stop of a crashed domain just cleans up.
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        pid = int(read(os.path.join(h.runtime_dir, uuid + '.pid')))
        mark = rec.mark()
        os.kill(pid, signal.SIGKILL)
        rec.wait_for_property(path, 'State', 'crashed', start=mark)
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')

    def _hang_and_restart(self, path, uuid, pid, rec, decoy=None):
        """kill -9 qsnapd, SIGSTOP its QEMU (no monitor answers: a hung
        QEMU), optionally make the runtime state name `decoy` as if QEMU's
        pid had been reused, restart qsnapd: the attach gives up, the
        domain is crashed."""
        h = self.h
        h.kill_daemon()
        os.kill(pid, signal.SIGSTOP)
        if decoy is not None:
            record = os.path.join(h.runtime_dir, uuid + '.process')
            text = read(record)
            self.assertIn('pid=%d\n' % pid, text)
            with open(record, 'w') as f:
                f.write(text.replace('pid=%d\n' % pid, 'pid=%d\n' % decoy))
            with open(os.path.join(h.runtime_dir, uuid + '.pid'), 'w') as f:
                f.write('%d\n' % decoy)
        # The attach gives up after 2 s, not 10 (qsnapd's test hook).
        os.environ['QSNAPD_TEST_ATTACH_TIMEOUT'] = '2'
        try:
            h.start_daemon()
        finally:
            del os.environ['QSNAPD_TEST_ATTACH_TIMEOUT']
        q.wait_until(lambda: h.get_property(path, q.DOMAIN_IFACE, 'State') == 'crashed', 30,
                     'the attach to the stopped QEMU to give up')

    def test_hung_qemu_after_restart_is_killed_by_stop(self):
        """No pidfd survives a restart of qsnapd: the adoption takes one for
        the pid of the runtime state, only when it is the process the launch
        recorded (pidfs inode / start time), so Stop ends a hung QEMU — and
        never a process that merely got its pid."""
        h = self.h
        img = h.create_image('hung.qcow2')
        path = h.define_domain('hung', [q.Disk('vda', img)])
        uuid = h.get_property(path, q.DOMAIN_IFACE, 'UUID')
        rec = h.record_signals()
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        pid = h.qemu_pid(path)
        self._hang_and_restart(path, uuid, pid, rec)
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
        self.assertTrue(q.spin(lambda: not os.path.exists('/proc/%d' % pid) or
                               read('/proc/%d/stat' % pid).split(')')[1].split()[0] == 'Z', 10),
                        'the stopped QEMU still runs after Stop')
        q.qemu_img_check(img)

        # The pid of the runtime state now names another process (a pid
        # reused after QEMU went), one whose command line even names the
        # domain: Stop cleans up but signals nothing.
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        pid = h.qemu_pid(path)
        decoy = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '-uuid', uuid])
        try:
            self._hang_and_restart(path, uuid, pid, rec, decoy=decoy.pid)
            h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
            self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
            self.assertIsNone(decoy.poll(), 'Stop killed a process that only had QEMU\'s pid')
            self.assertIn('is not the QEMU qsnapd launched', read(h.daemon_log))
        finally:
            decoy.kill()
            decoy.wait()
            os.kill(pid, signal.SIGKILL)

    def test_transient_disk_discards_guest_writes(self):
        h = self.h
        base = h.create_image('t.qcow2', '64M')
        q.qemu_io_write_pattern(base, 0x11, 0, 1 << 20)
        other = h.create_image('u.qcow2', '64M')
        path = h.define_domain('transient', [q.Disk('vda', base, transient=True), q.Disk('vdb', other)])
        rec = h.record_signals()
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        uuid = h.get_property(path, q.DOMAIN_IFACE, 'UUID')
        overlay = os.path.join(h.runtime_dir, '%s-vda.transient.qcow2' % uuid)
        disks = dict((d[0], d) for d in h.get_property(path, q.DOMAIN_IFACE, 'Disks'))
        self.assertEqual(disks['vda'], ('vda', 'qcow2', overlay, '%s <- %s' % (base, overlay)))
        self.assertEqual(disks['vdb'], ('vdb', 'qcow2', other, other))
        rec.wait_for_property(path, 'Disks')
        self.assertEqual(os.stat(overlay).st_mode & 0o777, 0o600)

        h.verify_pattern_live(path, 'vda', 0x11, 0, 1 << 20)
        h.write_pattern_live(path, 'vda', 0x22, 0, 1 << 20)
        h.write_pattern_live(path, 'vdb', 0x33, 0, 1 << 20)
        h.verify_pattern_live(path, 'vda', 0x22, 0, 1 << 20)
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')

        self.assertFalse(os.path.exists(overlay))
        self.assertTrue(q.qemu_io_read_pattern(base, 0x11, 0, 1 << 20), 'guest writes reached a transient image')
        self.assertTrue(q.qemu_io_read_pattern(other, 0x33, 0, 1 << 20))
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'Disks')[0], ('vda', 'qcow2', base, base))
        q.qemu_img_check(base)

    def test_readonly_disk_refuses_writes(self):
        h = self.h
        img = h.create_image('ro.qcow2')
        q.qemu_io_write_pattern(img, 0x44, 0, 65536)
        path = h.define_domain('readonly', [q.Disk('vda', img, readonly=True)])
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        # QEMU itself refuses the write: the device's node is read-only.
        with self.assertRaises(q.HmpError) as cm:
            h.write_pattern_live(path, 'vda', 0x55, 0, 65536)
        self.assertEqual(cm.exception.reply, 'Block node is read-only')
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertTrue(q.qemu_io_read_pattern(img, 0x44, 0, 65536))

    def test_monitor_command(self):
        h = self.h
        img = h.create_image('m.qcow2')
        path = h.define_domain('monitor', [q.Disk('vda', img)])
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            h.qmp(path, 'query-status')
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        reply = h.qmp(path, 'query-block')
        self.assertEqual(reply['return'][0]['qdev'], '/machine/peripheral/vda/virtio-backend')
        # QEMU opened no path: the disk is an fd set holding what qsnapd
        # opened, one read-write and one read-only descriptor of the image.
        name = reply['return'][0]['inserted']['file']
        self.assertRegex(name, r'^/dev/fdset/[0-9]+$')
        sets = h.qmp(path, 'query-fdsets')['return']
        fds = [e['fd'] for s in sets if s['fdset-id'] == int(name.rsplit('/', 1)[1]) for e in s['fds']]
        pid = h.qemu_pid(path)
        modes = []
        for fd in fds:
            self.assertEqual(os.readlink('/proc/%d/fd/%d' % (pid, fd)), img)
            with open('/proc/%d/fdinfo/%d' % (pid, fd)) as f:
                modes.append(int(next(l for l in f if l.startswith('flags:')).split()[1], 8) & os.O_ACCMODE)
        self.assertEqual(sorted(modes), sorted([os.O_RDWR, os.O_RDONLY]), sets)
        # The caller's id comes back; QEMU's errors come back as the reply.
        raw = h.call(path, q.DOMAIN_IFACE, 'QemuMonitorCommand',
                     ('{"execute":"query-status","id":"mine"}', 0), 'st')
        self.assertEqual(json.loads(raw)['id'], 'mine')
        err = h.qmp(path, 'no-such-command')
        self.assertEqual(err['error']['class'], 'CommandNotFound')
        self.assertIn('VM status: running', h.hmp(path, 'info status'))
        for bad in ('not json', '[1,2]', '{"arguments":{}}', '{"execute":'):
            with self.assertDBusError(q.ERROR_PREFIX + 'InvalidArgument'):
                h.call(path, q.DOMAIN_IFACE, 'QemuMonitorCommand', (bad, 0), 'st')
        self.assertIn('tainted', read(h.daemon_log))
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')

    def test_get_xml_desc_keeps_unknown_and_shows_chain(self):
        h = self.h
        base = h.create_image('base.qcow2')
        top = h.create_image('top.qcow2', backing=base)
        xml = q.domain_xml('xmldesc', [q.Disk('vda', top)], description='a & b <c>',
                           extra="  <features><acpi/><apic/></features>\n  <on_crash>destroy</on_crash>")
        path = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')
        out = h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (0,), 't')
        self.assertIn('<features>', out)
        self.assertIn('<acpi/>', out)
        self.assertIn('<on_crash>destroy</on_crash>', out)
        self.assertIn('a &amp; b &lt;c&gt;', out)
        self.assertIn("<backingStore type='file' index='1'>", out)
        self.assertIn("<source file='%s'/>" % base, out)
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'Disks'), [('vda', 'qcow2', top, '%s <- %s' % (base, top))])
        # What GetXMLDesc says can be defined again, unchanged.
        again = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (out, 0), 'st')
        self.assertEqual(again, path)
        self.assertEqual(h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (0,), 't'), out)

    def test_redefine_while_running_takes_effect_at_next_start(self):
        h = self.h
        img = h.create_image('r.qcow2')
        path = h.define_domain('redefine', [q.Disk('vda', img)], memory_mib=128)
        h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        uuid = h.get_property(path, q.DOMAIN_IFACE, 'UUID')
        again = h.define_domain('redefine', [q.Disk('vda', img)], memory_mib=192, uuid=uuid)
        self.assertEqual(again, path)
        self.assertIn("<memory unit='KiB'>131072</memory>", h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (0,), 't'))
        self.assertIn("<memory unit='KiB'>196608</memory>", h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (2,), 't'))
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertIn("<memory unit='KiB'>196608</memory>", h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (0,), 't'))

    def test_attach_to_qemu_started_elsewhere(self):
        h = self.h
        img = h.create_image('x.qcow2')
        sock = os.path.join(h.images_dir, 'ext.qmp')
        qemu = h.start_foreign_qemu(img, sock)
        self.addCleanup(lambda: (qemu.kill(), qemu.wait()))

        rec = h.record_signals()
        path = h.define_domain('external', [q.Disk('vda', img)], monitor=sock)
        # Defining attaches at once and answers once attached: State is
        # final, and its signal came first.
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        rec.wait_for_property(path, 'State', 'running')
        self.assertFalse(h.get_property(path, q.DOMAIN_IFACE, 'Managed'))
        with self.assertDBusError(q.ERROR_PREFIX + 'OperationInvalid'):
            h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        # A restarted qsnapd attaches again before it takes its name.
        h.restart_daemon(kill=True)
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'running')
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'running')
        h.call(path, q.DOMAIN_IFACE, 'Pause')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'paused')
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertEqual(qemu.wait(timeout=20), 0)
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
        # Start attaches; with nothing listening it says so and changes nothing.
        with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
            h.call(path, q.DOMAIN_IFACE, 'Start', (0,), 't')
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')


if __name__ == '__main__':
    q.main()
