#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Self-test of tests/lib/qsnaptest.py: the private bus, the real polkitd,
the rules helper, clients as other uids, daemon start/kill -9/restart/
activation and a teardown that leaves nothing behind.

The daemon parts run tests/lib/fake_qsnapd.py in place of qsnapd, so that
this test checks the harness and nothing else.
"""

import fcntl
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest

import qsnaptest as q

FAKE_QSNAPD = os.path.join(os.path.dirname(os.path.abspath(q.__file__)), 'fake_qsnapd.py')


def alive(pid):
    return q._alive(pid)


def no_other_harness():
    """True when no other harness on the host holds the shared lock, so
    the host-wide files must be gone after our teardown."""
    fd = os.open(q._HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


class BusAndPolkitTest(q.QsnapTestCase):
    harness_options = {'daemon': False}

    def test_private_bus(self):
        h = self.h
        self.assertTrue(h.address.startswith('unix:path=' + h.root + '/'))
        self.assertEqual(h.client.bus('GetConnectionUnixUser', (h.client.unique_name,), 's'), 0)
        # Our bus policy file is in the bus's includedir.
        self.assertTrue(os.path.exists(os.path.join(h.bus_dir, 'system.d', 'org.example.Snapshot1.conf')))
        # polkitd was activated on our bus, runs as its own user and is not the system's.
        pid = h.client.name_owner_pid(q.POLKIT_NAME)
        self.assertIsNotNone(pid)
        self.assertEqual(q._proc_uid(pid), pwd.getpwnam('polkitd').pw_uid)

    def test_root_is_authorized(self):
        h = self.h
        for action in q.ALL_ACTIONS:
            ok, challenge, _ = h.check_authorization(q.subject_bus_name(h.client.unique_name), action)
            self.assertEqual((ok, challenge), (True, False), action)

    def test_nobody_is_denied(self):
        h = self.h
        peer = h.bus_peer_as(q.NOBODY_UID)
        self.assertEqual(h.client.bus('GetConnectionUnixUser', (peer.unique_name,), 's'), q.NOBODY_UID)
        for action in q.ALL_ACTIONS:
            ok, _, _ = h.check_authorization(q.subject_bus_name(peer.unique_name), action, {'domain': 'd'})
            self.assertFalse(ok, action)

    def test_actions_as_polkitd_reads_them(self):
        # The installed file is ours, and polkitd parsed the defaults we meant.
        h = self.h
        with open(q._ACTION_FILE, 'rb') as a, open(q.source_path('policy', 'org.example.snapshot1.policy'), 'rb') as b:
            self.assertEqual(a.read(), b.read())
        actions = {a[0]: a for a in h.client.call(q.POLKIT_PATH, q.POLKIT_IFACE, 'EnumerateActions', ('C',), 's',
                                                  dest=q.POLKIT_NAME)}
        NO, AUTH_ADMIN, AUTH_ADMIN_KEEP = 0, 2, 4
        for action in q.ALL_ACTIONS:
            self.assertIn(action, actions)
            _, description, message, vendor, _, _, any_, inactive, active, _ = actions[action]
            self.assertTrue(description and message, action)
            self.assertEqual(vendor, 'The qsnapd Project')
            if action == q.ACTION_HOST_ADMIN:    # root-equivalent: asked always, never remembered
                want = (AUTH_ADMIN, AUTH_ADMIN, AUTH_ADMIN)
            else:
                want = (NO, NO, AUTH_ADMIN if action == q.ACTION_BACKUP else AUTH_ADMIN_KEEP)
            self.assertEqual((any_, inactive, active), want, action)
        self.assertEqual(sorted(a for a in actions if a.startswith('org.example.')), sorted(q.ALL_ACTIONS))

    def test_rules_grant_the_test_user(self):
        h = self.h
        user = h.bus_peer_as(q.TEST_USER)
        nobody = h.bus_peer_as(q.NOBODY_UID)

        def ok(peer, domain, action=q.ACTION_MANAGE_DOMAINS):
            return h.check_authorization(q.subject_bus_name(peer.unique_name), action, {'domain': domain})[0]
        self.assertFalse(ok(user, 'd1'))
        rule = h.grant([q.ACTION_MANAGE_DOMAINS], group=q.TEST_GROUP, domain='d1')
        self.assertTrue(os.path.exists(rule))
        self.assertTrue(ok(user, 'd1'))
        self.assertFalse(ok(user, 'd2'))
        self.assertFalse(ok(user, 'd1', q.ACTION_BACKUP))
        self.assertFalse(ok(nobody, 'd1'))
        h.remove_polkit_rule(rule)
        self.assertFalse(os.path.exists(rule))
        self.assertFalse(ok(user, 'd1'))
        # By user name, all domains.
        h.grant(q.ALL_ACTIONS, user=q.TEST_USER)
        self.assertTrue(ok(user, 'anything', q.ACTION_BACKUP))
        self.assertFalse(ok(nobody, 'anything'))

    def test_run_as(self):
        h = self.h
        rc, out, err = h.run_as(q.NOBODY_UID, ['id', '-u'])
        self.assertEqual((rc, out.strip()), (0, str(q.NOBODY_UID)), err)
        rc, out, err = h.run_as(q.TEST_USER, ['id', '-Gn'])
        self.assertEqual(rc, 0, err)
        self.assertIn(q.TEST_GROUP, out.split())
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus',
                                   'org.freedesktop.DBus', 'GetConnectionUnixUser', 's', 'org.freedesktop.DBus')
        self.assertEqual(rc, 0, err)
        rc, out, err = h.gdbus_as(q.NOBODY_UID, 'call', '--dest', 'org.freedesktop.DBus', '--object-path',
                                  '/org/freedesktop/DBus', '--method', 'org.freedesktop.DBus.GetId')
        self.assertEqual(rc, 0, err)


class FakeDaemonTest(q.QsnapTestCase):
    harness_options = {'daemon_args': ['--fake-qemu']}

    @classmethod
    def setUpClass(cls):
        cls._saved = os.environ.get('QSNAPD_BINARY')
        os.environ['QSNAPD_BINARY'] = FAKE_QSNAPD
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        if cls._saved is None:
            os.environ.pop('QSNAPD_BINARY', None)
        else:
            os.environ['QSNAPD_BINARY'] = cls._saved
        super().tearDownClass()

    def fake_qemu_pid(self):
        with open(os.path.join(self.h.runtime_dir, 'fake-qemu.pid')) as f:
            return int(f.read())

    def test_calls_and_errors(self):
        h = self.h
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        self.assertEqual(h.get_property(q.MANAGER_PATH, q.MANAGER_IFACE, 'Version'), '0-fake')
        self.assertEqual(h.get_all(q.MANAGER_PATH, q.MANAGER_IFACE), {'Version': '0-fake', 'Domains': []})
        with self.assertDBusError(q.ERROR_PREFIX + 'NoSuchDomain') as cm:
            h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'GetDomain', ('x',), 's')
        self.assertIn("'x'", cm.exception.message)
        pending = h.call_async(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
        self.assertEqual(pending.wait(), [])

    def test_signal_recorder(self):
        h = self.h
        rec = h.record_signals()
        self.addCleanup(rec.close)
        start = rec.mark()
        path = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (q.domain_xml('a'), 0), 'st')
        self.assertEqual(rec.wait_for_property(q.MANAGER_PATH, 'Domains', start=start), [path])
        self.assertEqual(rec.property_values(q.MANAGER_PATH, 'Domains'), [[path]])
        with self.assertRaises(AssertionError):
            rec.wait_for_signal('NoSuchSignal', timeout=0.2)

    def test_polkit_through_the_daemon(self):
        h = self.h
        args = ['call', '--dest', q.BUS_NAME, '--object-path', q.MANAGER_PATH,
                '--method', q.MANAGER_IFACE + '.DefineDomain', '<domain/>', '0']
        rc, out, err = h.gdbus_as(q.NOBODY_UID, *args)
        self.assertNotEqual(rc, 0)
        self.assertIn(q.ACCESS_DENIED, err)
        rc, out, err = h.gdbus_as(q.TEST_USER, *args)
        self.assertIn(q.ACCESS_DENIED, err)
        h.grant([q.ACTION_MANAGE_DOMAINS], group=q.TEST_GROUP)
        rc, out, err = h.gdbus_as(q.TEST_USER, *args)
        self.assertEqual(rc, 0, err)
        self.assertIn('/org/example/Snapshot1/domain/d0', out)
        # Reads need nothing; busctl works too.
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', q.BUS_NAME, q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
        self.assertEqual((rc, out.strip()), (0, 'ao 1 "/org/example/Snapshot1/domain/d0"'), err)

    def test_bus_policy(self):
        # The bus itself refuses interfaces our policy file does not list,
        # for everyone but root.
        h = self.h
        args = ['call', '--dest', q.BUS_NAME, '--object-path', q.MANAGER_PATH,
                '--method', 'org.example.Snapshot1.Bogus.Method']
        rc, out, err = h.gdbus_as(q.NOBODY_UID, *args)
        self.assertIn(q.ACCESS_DENIED, err)
        self.assertIn('Rejected send message', err)
        with self.assertDBusError('org.freedesktop.DBus.Error.UnknownMethod'):
            h.call(q.MANAGER_PATH, 'org.example.Snapshot1.Bogus', 'Method')
        rc, out, err = h.gdbus_as(q.NOBODY_UID, 'introspect', '--dest', q.BUS_NAME, '--object-path', q.MANAGER_PATH)
        self.assertEqual(rc, 0, err)
        # Nobody may own the name.
        rc, out, err = h.busctl_as(q.NOBODY_UID, 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus',
                                   'org.freedesktop.DBus', 'RequestName', 'su', q.BUS_NAME, '4')
        self.assertNotEqual(rc, 0)

    def test_kill9_and_restart(self):
        h = self.h
        pid = h.daemon_pid()
        qemu = self.fake_qemu_pid()
        self.assertTrue(alive(pid) and alive(qemu))
        h.kill_daemon()
        self.assertFalse(alive(pid))
        self.assertFalse(h.client.name_has_owner())
        self.assertTrue(alive(qemu), 'the "QEMU" must survive kill -9 of the daemon')
        new = h.start_daemon()
        self.assertNotEqual(new, pid)
        self.assertEqual(h.daemon_pid(), new)
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        h.restart_daemon(kill=False)
        self.assertFalse(alive(new))
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])

    def test_activation(self):
        h = self.h
        h.stop_daemon()
        self.assertFalse(h.client.name_has_owner())
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        pid = h.daemon_pid()
        self.assertIsNotNone(pid)
        with open(h.daemon_log) as f:
            self.assertIn('qsnapd activated by the bus', f.read())
        self.assertIn('--state-dir=' + h.state_dir, q._proc_cmdline(pid))
        self.assertEqual(h.daemon_exit_problems(), [])

    def test_crash_is_reported(self):
        h = self.h
        h.stop_daemon()
        h.daemon_args = ['--exit-status=3']
        h.update_activation_file()
        with self.assertDBusError('org.freedesktop.DBus.Error.NoReply'):
            h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
        self.assertTrue(q.spin(lambda: h.daemon_exit_problems(), 10))
        self.assertRegex(h.daemon_exit_problems()[0], r'bus-activated qsnapd \d+ exited with status 3')
        h.acknowledge_daemon_exits()
        self.assertEqual(h.daemon_exit_problems(), [])


class TeardownTest(unittest.TestCase):
    """Teardown leaves nothing behind: processes, temp dir, rules, and (when
    no other harness runs) the action file and the test user."""

    @classmethod
    def setUpClass(cls):
        os.environ['QSNAPD_BINARY'] = FAKE_QSNAPD
        q.check_requirements()

    def test_stop_leaves_nothing(self):
        h = q.Harness(daemon_args=['--fake-qemu'])
        self.addCleanup(h.stop)
        h.start()
        h.grant()
        peer = h.bus_peer_as(q.NOBODY_UID)
        h.check_authorization(q.subject_bus_name(peer.unique_name), q.ACTION_MANAGE_DOMAINS)
        with open(os.path.join(h.runtime_dir, 'fake-qemu.pid')) as f:
            qemu = int(f.read())
        pids = {'dbus-daemon': h._bus_proc.pid, 'qsnapd': h.daemon_pid(), 'QEMU': qemu,
                'polkitd': h.client.name_owner_pid(q.POLKIT_NAME), 'peer': peer.pid, 'probe': h._probe.pid}
        rules = [r for r, _ in h._rules]
        root = h.root
        for what, pid in pids.items():
            self.assertTrue(pid and alive(pid), what)
        h.stop()
        for what, pid in pids.items():
            self.assertFalse(alive(pid), '%s (%d) survived teardown' % (what, pid))
        self.assertFalse(os.path.exists(root))
        for r in rules:
            self.assertFalse(os.path.exists(r))
        self.assertEqual(q._pids_mentioning(root), [])
        if no_other_harness():
            self.assertFalse(os.path.exists(q._ACTION_FILE))
            self.assertRaises(KeyError, pwd.getpwnam, q.TEST_USER)
        else:
            sys.stderr.write('another harness is running: host-wide files stay\n')

    def run_script(self, body, sig_after_marker=None):
        script = textwrap.dedent('''\
            import os, sys, time, unittest
            import qsnaptest as q
            os.environ['QSNAPD_BINARY'] = %r
            class T(q.QsnapTestCase):
                harness_options = {'daemon_args': ['--fake-qemu']}
                def test_it(self):
                    print('ROOT', self.h.root, flush=True)
            %s
            if __name__ == '__main__':
                q.main()
            ''') % (FAKE_QSNAPD, textwrap.indent(textwrap.dedent(body), ' ' * 8))
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(script)
        self.addCleanup(os.unlink, f.name)
        env = dict(os.environ, PYTHONPATH=os.path.dirname(FAKE_QSNAPD))
        p = subprocess.Popen(['/usr/bin/python3', f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        root = None
        if sig_after_marker:
            line = p.stdout.readline()
            root = line.split()[1] if line.startswith('ROOT') else None
            # ROOT is printed from inside the test: the harness (and its
            # SIGTERM handler) is up, the test is running.
            p.send_signal(sig_after_marker)
        out, err = p.communicate(timeout=60)
        if root is None:
            m = re.search(r'^ROOT (\S+)', out, re.M)
            root = m.group(1) if m else None
        self.assertIsNotNone(root, out + err)
        return p.returncode, out, err, root

    def test_failing_test_cleans_up_and_prints_logs(self):
        rc, out, err, root = self.run_script('''\
            self.h.grant()
            self.fail('on purpose')
            ''')
        self.assertNotEqual(rc, 0)
        self.assertIn('on purpose', err)
        self.assertIn('===== qsnapd log', err)
        self.assertIn('fake qsnapd', err)
        self.assertFalse(os.path.exists(root), root)
        self.assertEqual(q._pids_mentioning(root), [])

    def test_passing_test_is_quiet(self):
        rc, out, err, root = self.run_script('''\
            pass
            ''')
        self.assertEqual(rc, 0, err)
        self.assertNotIn('===== qsnapd log', err)
        self.assertFalse(os.path.exists(root), root)

    def test_sigterm_cleans_up(self):
        # What meson does on a timeout.
        rc, out, err, root = self.run_script('''\
            time.sleep(60)
            ''', sig_after_marker=signal.SIGTERM)
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(root), root + '\n' + err)
        self.assertEqual(q._pids_mentioning(root), [])


class ImageHelperTest(unittest.TestCase):
    """The harness's image verdicts fail loudly: qemu_img_check raises on
    an image qemu-img check finds broken, so a caller that ignores its
    return value still fails (issue #11: no check that cannot fail)."""

    def test_check_raises_on_a_corrupt_image(self):
        with tempfile.TemporaryDirectory() as d:
            img = os.path.join(d, 'a.qcow2')
            subprocess.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', img, '4M'], check=True)
            subprocess.run([q.QEMU_IO, '-c', 'write -P 0x5a 0 1M', img], check=True, stdout=subprocess.DEVNULL)
            self.assertIn('No errors', q.qemu_img_check(img))
            # Zero the refcount table's first entry (its offset is the
            # big-endian u64 at byte 48 of the header): every cluster's
            # refcount reads 0 while the clusters are in use.
            with open(img, 'r+b') as f:
                f.seek(48)
                table = int.from_bytes(f.read(8), 'big')
                f.seek(table)
                f.write(bytes(8))
            with self.assertRaisesRegex(AssertionError, 'qemu-img check %s: exit [1-9]' % re.escape(img)):
                q.qemu_img_check(img)

    def test_compare_raises_on_different_images(self):
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, 'a.qcow2'), os.path.join(d, 'b.qcow2')
            for img in (a, b):
                subprocess.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', img, '4M'], check=True)
            self.assertIn('identical', q.qemu_img_compare(a, b))
            subprocess.run([q.QEMU_IO, '-c', 'write -P 0x5a 1M 4k', b], check=True, stdout=subprocess.DEVNULL)
            with self.assertRaisesRegex(AssertionError, r'^then: qemu-img compare .*: exit 1: .*offset 1048576'):
                q.qemu_img_compare(a, b, what='then')


class ErrorNamesTest(unittest.TestCase):
    """An unnamed failure from one of our methods (sd-bus's
    org.freedesktop.DBus.Error.Failed or System.Error.* for a bare errno)
    fails the test that received it, like an undocumented named error."""

    def test_unnamed_errors_are_problems(self):
        q._begin_test('test_harness.ErrorNamesTest.none')
        try:
            for name in ('org.freedesktop.DBus.Error.Failed', 'System.Error.ELOOP'):
                q.note_error(q.DOMAIN_IFACE, 'CreateCheckpoint', name)
            q.note_error(q.DOMAIN_IFACE, 'CreateCheckpoint', q.ERROR_PREFIX + 'PathNotAllowed')
            q.note_error('org.freedesktop.DBus.Properties', 'Get', 'org.freedesktop.DBus.Error.Failed')
        finally:
            problems = q._end_test('test_harness.ErrorNamesTest.none')
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(all('answered the unnamed' in p for p in problems), problems)


if __name__ == '__main__':
    q.main()
