# SPDX-License-Identifier: LGPL-2.1-or-later
"""qsnapd --user: an unprivileged user's own VMs on their session bus.

Everything runs as uid 65534: a session dbus-daemon, qsnapd --user, the
client (busctl) and so QEMU. There is no polkitd on that bus at all, so a
call that worked did not ask polkit. State and runtime files must land in
$XDG_STATE_HOME/qsnap and $XDG_RUNTIME_DIR/qsnap."""

import os
import shutil
import subprocess
import tempfile
import unittest

import qsnaptest as q

UID = q.NOBODY_UID
AS_NOBODY = ['setpriv', '--reuid=%d' % UID, '--regid=%d' % q.NOBODY_GID, '--clear-groups']


class UserModeTest(unittest.TestCase):
    def setUp(self):
        q.check_requirements(daemon=True)
        self.dir = tempfile.mkdtemp(prefix='qsnap-user-')
        os.chmod(self.dir, 0o755)
        self.home = os.path.join(self.dir, 'home')
        self.xdg_runtime = os.path.join(self.dir, 'xdg-run')
        for d in (self.home, self.xdg_runtime):
            os.mkdir(d, 0o700)
            os.chown(d, UID, q.NOBODY_GID)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.bus_sock = os.path.join(self.xdg_runtime, 'bus')
        self.address = 'unix:path=' + self.bus_sock
        self.env = dict(os.environ, HOME=self.home, XDG_RUNTIME_DIR=self.xdg_runtime,
                        XDG_STATE_HOME=os.path.join(self.home, 'state'),
                        DBUS_SESSION_BUS_ADDRESS=self.address)
        self.env.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
        self.procs = []
        self.addCleanup(self.stop_all)

        self.spawn(['dbus-daemon', '--session', '--address=' + self.address, '--nofork', '--nopidfile'],
                   'bus.log')
        self.assertTrue(q.spin(lambda: os.path.exists(self.bus_sock), 10), 'session bus did not start')
        self.daemon = self.spawn(q.qsnapd_command() + ['--user', '--idle-timeout=0', '--log-level=debug'],
                                 'qsnapd.log')
        self.assertTrue(q.spin(lambda: self.busctl('status', 'org.example.Snapshot1').returncode == 0, 20),
                        'qsnapd --user did not take its name:\n' + self.log('qsnapd.log'))

    def spawn(self, argv, log):
        with open(os.path.join(self.dir, log), 'w') as f:
            p = subprocess.Popen(AS_NOBODY + argv, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.dir, name), errors='replace') as f:
            return f.read()

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10 * q.TIMEOUT_FACTOR)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(['pkill', '-KILL', '-f', self.dir], check=False)
        self.assertEqual(self.daemon.returncode, 0, 'qsnapd --user did not exit cleanly:\n' + self.log('qsnapd.log'))
        self.assertNotRegex(self.log('qsnapd.log'), r'ERROR: (Address|Leak)Sanitizer|runtime error:')

    def busctl(self, *args):
        return subprocess.run(AS_NOBODY + ['busctl', '--user', '--json=short'] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=60)

    def call(self, path, iface, method, sig='', *args):
        r = self.busctl('call', 'org.example.Snapshot1', path, iface, method, *([sig] + list(args) if sig else []))
        self.assertEqual(r.returncode, 0, '%s failed: %s\nqsnapd log:\n%s' % (method, r.stderr, self.log('qsnapd.log')))
        return r.stdout

    def prop(self, path, name):
        r = self.busctl('get-property', 'org.example.Snapshot1', path, q.DOMAIN_IFACE, name)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_user_vm_lifecycle_without_polkit(self):
        img = os.path.join(self.home, 'vm.qcow2')
        subprocess.run(AS_NOBODY + [q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', img, '64M'], check=True)
        # The user's QEMU runs with what the user may open: KVM only when
        # /dev/kvm is theirs to open (here it often is root's alone).
        kvm = subprocess.run(AS_NOBODY + ['test', '-r', '/dev/kvm', '-a', '-w', '/dev/kvm']).returncode == 0
        xml = q.domain_xml('my vm', [q.Disk('vda', img)], domain_type='kvm' if kvm else 'qemu')
        out = self.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', 'st', xml, '0')
        path = '/org/example/Snapshot1/domain/my_20vm'
        self.assertIn(path, out)

        self.call(path, q.DOMAIN_IFACE, 'Start', 't', '0')
        self.assertIn('"running"', self.prop(path, 'State'))
        uuid = self.prop(path, 'UUID').split('"data":"')[1].split('"')[0]
        run_dir = os.path.join(self.xdg_runtime, 'qsnap')
        with open(os.path.join(run_dir, uuid + '.pid')) as f:
            pid = int(f.read())
        self.assertEqual(os.stat('/proc/%d' % pid).st_uid, UID, 'QEMU must run as the user')
        self.assertTrue(os.path.exists(os.path.join(self.home, 'state', 'qsnap', 'domains', uuid + '.xml')))
        self.assertTrue(os.path.exists(os.path.join(self.home, 'state', 'qsnap', 'log', uuid + '.log')))
        self.assertTrue(os.path.exists(os.path.join(run_dir, uuid + '.qmp')))

        self.call(path, q.DOMAIN_IFACE, 'QemuMonitorCommand', 'st',
                  'qemu-io -d /machine/peripheral/vda/virtio-backend "write -P 0x5a 0 64k"', '1')
        self.call(path, q.DOMAIN_IFACE, 'Stop', 't', '0')
        self.assertIn('"shutoff"', self.prop(path, 'State'))
        self.assertTrue(q.qemu_io_read_pattern(img, 0x5a, 0, 65536))
        self.assertIn('polkit off', self.log('qsnapd.log'))

    def test_user_mode_needs_xdg_runtime_dir(self):
        env = dict(self.env)
        del env['XDG_RUNTIME_DIR']
        r = subprocess.run(AS_NOBODY + q.qsnapd_command() + ['--user'], env=env, capture_output=True, text=True,
                           timeout=30 * q.TIMEOUT_FACTOR)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('XDG_RUNTIME_DIR', r.stderr)


if __name__ == '__main__':
    unittest.main()
