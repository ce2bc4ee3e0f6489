#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qsnapd going away and coming back (DESIGN.md sections 1 and 5): VMs
outlive it, and the first answer of the next qsnapd is already right.

- kill -9 with a running VM: the domain is back under the same path, State
  is 'running' on the very first Get, the QEMU is the same process, data
  written live before the kill reads back live and, after Stop, offline.
- a paused VM comes back 'paused'.
- a VM whose QEMU was killed while qsnapd was down comes back 'crashed'
  (its runtime files cleaned up); Start and Stop work again.
- a <transient/> disk keeps its overlay (and the data in it) across a
  restart and loses it at Stop; the base image never holds the data.
- SIGTERM: qsnapd exits cleanly, the VM keeps running.
- --idle-timeout: with a running VM and no calls qsnapd exits by itself,
  the VM keeps running and the next call bus-activates a qsnapd that
  reports 'running'; a call in flight (Stop GRACEFUL waiting for a guest
  that never powers off) keeps it alive until the call is done.
"""

import os
import signal
import time

import qsnaptest as q

D = q.DOMAIN_IFACE
MiB = 1 << 20


class RestartTestCase(q.QsnapTestCase):
    def define(self, name, transient=False):
        img = self.h.create_image(name + '.qcow2')
        return self.h.define_domain(name, [q.Disk('vda', img, transient=transient)]), img

    def state(self, path):
        return self.h.get_property(path, D, 'State')

    def uuid(self, path):
        return self.h.get_property(path, D, 'UUID')

    def runtime_files(self, uuid):
        return sorted(f for f in os.listdir(self.h.runtime_dir) if f.startswith(uuid))

    def qemu_pid(self, path):
        pid = self.h.qemu_pid(path)
        self.assertTrue(q._alive(pid), 'QEMU pid %d of %s is not running' % (pid, path))
        return pid

    def process_identity(self, pid):
        """(pid, start time): the same process, not a reused pid."""
        st = q._proc_stat(pid)
        self.assertIsNotNone(st, 'process %d is gone' % pid)
        return pid, st[2]

    def first_get(self, path, prop='State'):
        """The first call of a fresh connection: no cached value, no waiting."""
        client = self.h.new_client()
        try:
            return client.get_property(path, D, prop)
        finally:
            client.close()


class KillTest(RestartTestCase):
    def test_running_vm_survives_kill9(self):
        h = self.h
        path, img = self.define('alive')
        h.call(path, D, 'Start', (0,), 't')
        h.write_pattern_live(path, 'vda', 0xab, 0, MiB)
        qemu = self.process_identity(self.qemu_pid(path))
        disks = h.get_property(path, D, 'Disks')
        old_daemon = h.daemon_pid()

        h.restart_daemon(kill=True)
        self.assertNotEqual(h.daemon_pid(), old_daemon)
        self.assertEqual(self.first_get(path), 'running')
        self.assertEqual(h.domain_path('alive'), path)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [path])
        self.assertEqual(h.get_property(path, D, 'Name'), 'alive')
        self.assertEqual(self.process_identity(self.qemu_pid(path)), qemu)
        self.assertEqual(h.get_property(path, D, 'Disks'), disks)
        self.assertTrue(h.get_property(path, D, 'Managed'))
        # The monitor works again, and the data is there.
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'running')
        h.verify_pattern_live(path, 'vda', 0xab, 0, MiB)

        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([qemu[0]], 10), [])
        self.assertEqual(self.runtime_files(self.uuid(path)), [])
        self.assertTrue(q.qemu_io_read_pattern(img, 0xab, 0, MiB), 'the live write is not in the image')

    def test_paused_vm_comes_back_paused(self):
        h = self.h
        path, _ = self.define('sleepy')
        h.call(path, D, 'Start', (1,), 't')
        self.assertEqual(self.state(path), 'paused')
        qemu = self.process_identity(self.qemu_pid(path))
        h.restart_daemon(kill=True)
        self.assertEqual(self.first_get(path), 'paused')
        self.assertEqual(self.process_identity(self.qemu_pid(path)), qemu)
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'prelaunch')
        h.call(path, D, 'Resume')
        self.assertEqual(self.state(path), 'running')
        h.call(path, D, 'Pause')
        h.restart_daemon(kill=True)
        self.assertEqual(self.first_get(path), 'paused')
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'paused')
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')

    def test_vm_killed_while_daemon_down_is_crashed(self):
        h = self.h
        path, _ = self.define('victim')
        bystander, _ = self.define('bystander')
        for p in (path, bystander):
            h.call(p, D, 'Start', (0,), 't')
        uuid = self.uuid(path)
        pid = self.qemu_pid(path)
        other = self.process_identity(self.qemu_pid(bystander))

        h.kill_daemon()
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(q._wait_gone([pid], 10), [])
        h.start_daemon()
        self.assertEqual(self.first_get(path), 'crashed')
        self.assertEqual(self.first_get(bystander), 'running')
        self.assertEqual(self.process_identity(self.qemu_pid(bystander)), other)
        # Its socket and pid file are stale: gone.
        self.assertEqual(self.runtime_files(uuid), [])
        for call in (('Pause', None, None), ('QemuMonitorCommand', ('info status', 1), 'st')):
            with self.assertDBusError(q.ERROR_PREFIX + 'NotRunning'):
                h.call(path, D, *call)

        h.call(path, D, 'Start', (0,), 't')
        self.assertEqual(self.state(path), 'running')
        new = self.qemu_pid(path)
        self.assertNotEqual(new, pid)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([new], 10), [])

        # A crashed domain can also just be stopped (made shutoff).
        h.kill_daemon()
        os.kill(other[0], signal.SIGKILL)
        self.assertEqual(q._wait_gone([other[0]], 10), [])
        h.start_daemon()
        self.assertEqual(self.first_get(bystander), 'crashed')
        h.call(bystander, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(bystander), 'shutoff')

    def test_transient_overlay_survives_restart_and_goes_at_stop(self):
        h = self.h
        path, base = self.define('scratch', transient=True)
        h.call(path, D, 'Start', (0,), 't')
        uuid = self.uuid(path)
        overlay = os.path.join(h.runtime_dir, '%s-vda.transient.qcow2' % uuid)
        disks = h.get_property(path, D, 'Disks')
        self.assertEqual(disks[0][2], overlay)
        self.assertTrue(os.path.exists(overlay))
        h.write_pattern_live(path, 'vda', 0xcd, 0, MiB)
        self.assertFalse(q.qemu_io_read_pattern(base, 0xcd, 0, MiB), 'a transient disk wrote to its base')

        h.restart_daemon(kill=True)
        self.assertEqual(self.first_get(path), 'running')
        self.assertTrue(os.path.exists(overlay), 'the transient overlay went with qsnapd')
        self.assertEqual(h.get_property(path, D, 'Disks'), disks)
        h.verify_pattern_live(path, 'vda', 0xcd, 0, MiB)

        h.call(path, D, 'Stop', (0,), 't')
        self.assertFalse(os.path.exists(overlay), 'the transient overlay outlived Stop')
        self.assertEqual(self.runtime_files(uuid), [])
        self.assertFalse(q.qemu_io_read_pattern(base, 0xcd, 0, MiB), 'the transient data reached the base')
        self.assertTrue(q.qemu_io_read_pattern(base, 0x00, 0, MiB))
        self.assertEqual(h.get_property(path, D, 'Disks')[0][2], base)
        # The next start begins from the base again.
        h.call(path, D, 'Start', (0,), 't')
        h.verify_pattern_live(path, 'vda', 0x00, 0, MiB)
        h.call(path, D, 'Stop', (0,), 't')

    def test_sigterm_leaves_vm_running(self):
        h = self.h
        path, _ = self.define('steady')
        h.call(path, D, 'Start', (0,), 't')
        qemu = self.process_identity(self.qemu_pid(path))
        daemon = h.daemon_pid()
        h.restart_daemon(kill=False)    # SIGTERM, wait until it is gone, start again
        self.assertFalse(q._alive(daemon))
        with open(h.daemon_log, errors='replace') as f:
            log = f.read()
        self.assertIn('Received Terminated, exiting; running VMs keep running', log)
        self.assertEqual(self.first_get(path), 'running')
        self.assertEqual(self.process_identity(self.qemu_pid(path)), qemu)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')

    def test_live_definition_survives_restart(self):
        # A redefinition while running changes the stored definition only;
        # the running QEMU's definition (<run>/<uuid>.xml) is what
        # GetXMLDesc(0) and Disks show, before and after a restart.
        h = self.h
        path, img = self.define('evolving')
        h.call(path, D, 'Start', (0,), 't')
        second = h.create_image('second.qcow2')
        h.define_domain('evolving', [q.Disk('vda', img), q.Disk('vdb', second)], description='next boot')
        for when in ('before', 'after'):
            with self.subTest(when=when + ' the restart'):
                self.assertNotIn('next boot', h.call(path, D, 'GetXMLDesc', (0,), 't'))
                self.assertIn('next boot', h.call(path, D, 'GetXMLDesc', (2,), 't'))
                self.assertEqual([d[0] for d in h.get_property(path, D, 'Disks')], ['vda'])
            if when == 'before':
                h.restart_daemon(kill=True)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertIn('next boot', h.call(path, D, 'GetXMLDesc', (0,), 't'))
        self.assertEqual([d[0] for d in h.get_property(path, D, 'Disks')], ['vda', 'vdb'])

    def test_qemu_hung_at_restart(self):
        # A QEMU that does not answer on its monitor while qsnapd starts
        # (here: SIGSTOPped) cannot be told from a dead one: 'crashed' is
        # fine. But its process is alive, so Stop must end it (as libvirt's
        # destroy does) rather than forget it: a forgotten QEMU keeps running
        # with its monitor socket deleted, unreachable, holding the image's
        # write lock, and the next Start fails.
        h = self.h
        path, _ = self.define('frozen')
        h.call(path, D, 'Start', (0,), 't')
        pid = self.qemu_pid(path)
        h.kill_daemon()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: q._alive(pid) and os.kill(pid, signal.SIGCONT))
        # Waits out qsnapd's attach timeout: 2 s, not 10 (its test hook).
        os.environ['QSNAPD_TEST_ATTACH_TIMEOUT'] = '2'
        try:
            h.start_daemon()
        finally:
            del os.environ['QSNAPD_TEST_ATTACH_TIMEOUT']
        self.assertEqual(self.first_get(path), 'crashed')
        os.kill(pid, signal.SIGCONT)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([pid], 10), [], 'Stop left the QEMU of a crashed domain running')
        h.call(path, D, 'Start', (0,), 't')
        self.assertEqual(self.state(path), 'running')
        h.call(path, D, 'Stop', (0,), 't')


class IdleTest(RestartTestCase):
    harness_options = {'idle_timeout': 2, 'daemon_args': ['--graceful-timeout=4']}

    def test_idle_exit_keeps_vm_and_reactivates(self):
        h = self.h
        path, _ = self.define('idler')
        h.call(path, D, 'Start', (0,), 't')
        qemu = self.process_identity(self.qemu_pid(path))
        daemon = h.daemon_pid()
        t0 = time.monotonic()
        self.assertEqual(q._wait_gone([daemon], 10), [], 'qsnapd did not exit on idle within 10 s')
        self.assertGreater(time.monotonic() - t0, 1.0, 'qsnapd exited before its idle timeout')
        self.assertFalse(h.client.name_has_owner())
        self.assertTrue(q._alive(qemu[0]), 'the VM went with qsnapd')

        # The next call activates a new qsnapd whose first answer is right.
        self.assertEqual(self.first_get(path), 'running')
        new = h.daemon_pid()
        self.assertIsNotNone(new)
        self.assertNotEqual(new, daemon)
        self.assertEqual(self.process_identity(self.qemu_pid(path)), qemu)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([new], 10), [], 'the activated qsnapd did not exit on idle')

    def test_no_exit_while_a_call_is_in_flight(self):
        h = self.h
        path, _ = self.define('slowstop')
        h.call(path, D, 'Start', (0,), 't')
        qemu = self.qemu_pid(path)
        daemon = h.daemon_pid()
        t0 = time.monotonic()
        # No OS in the guest: ACPI powerdown goes unanswered and Stop waits
        # the whole --graceful-timeout (4 s, twice the idle timeout).
        pending = h.call_async(path, D, 'Stop', (1,), 't', timeout=30)
        self.assertIsNone(pending.wait())
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 3.5, 'Stop(GRACEFUL) did not wait for the guest')
        self.assertTrue(q._alive(daemon), 'qsnapd exited while Stop was in flight')
        self.assertEqual(h.daemon_pid(), daemon)
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([qemu], 10), [])
        self.assertEqual(q._wait_gone([daemon], 10), [], 'qsnapd did not exit on idle after the call')


if __name__ == '__main__':
    q.main()
