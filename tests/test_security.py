#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The attack suite, first part (docs/security.md): what a caller holding
per-domain rights only can try, on the real bus with the real polkitd.

The attacker is the test user, whom a rules.d rule grants manage-domains,
manage-snapshots and block-jobs for ONE domain, "mine", whose image lives
below the --image-root=. Another domain, "theirs", is root's. Every test
checksums victim files (/etc/shadow, /etc/passwd, a root-only file and an
image outside the roots) before and after, and checks that qsnapd answers
and "theirs" is as it was.

- QemuMonitorCommand (QMP and HMP, migrate to exec:) needs host-admin: refused,
  and the command never runs (its marker file stays absent; root's run of
  the same command creates it, so the marker works).
- DefineDomain naming an emulator, another domain's monitor socket,
  /etc/shadow as a disk, a disk outside the image roots: refused (host-admin),
  nothing defined or changed, and the emulator never runs.
- <graphics passwd=…> is left out of GetXMLDesc without SECURE (domain and
  snapshot), SECURE needs read-secure; the stored definition keeps it.
- FIFOs and device nodes: a backing file that is a FIFO (property reads),
  a REDEFINE'd memory file, overlay or image that is a FIFO or a device
  node (CheckDelete, Delete, CheckRevert, Revert): qsnapd answers another
  call within a second meanwhile, and the call gets PathNotAllowed (or the
  reason says "not a regular file").
- The polkit detail "disk" is the target also when the caller names the
  disk by its file: a rule refusing vda is not sidestepped by vda's path; a
  path that names no disk is NoSuchDisk without asking polkit.
- Abort (and the other controls) of a snapshot-delete job need
  manage-snapshots: block-jobs alone is refused.
- The other domain is untouchable.
- `qsnapd --system --polkit=no` refuses to start.
- The path gate (GateTest), with a root-only folder outside the roots as
  the protected folder, checksummed file by file: REDEFINE naming a memory
  file or overlay outside (refused, for root too); metadata naming files in
  a folder no longer allowed (CheckDelete/CheckRevert say so, Delete and
  Revert refuse, nothing there changes); a merge into a victim an overlay's
  header names; a header backing name into the protected folder (Disks
  shows the image alone, external snapshots refused, nothing created);
  json:, nbd: and file: backing names; one refusal text for an existing and
  a missing root-only folder; a folder swapped for a link in a loop while
  snapshots are created into it.
- No blocking (NoBlockingTest): another caller is answered while
  CheckDelete measures a chain with qemu-img; a caller's third concurrent
  dry run is LimitsExceeded.
"""

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time

import qsnaptest as q
from test_authorization import PolkitMonitor, call_as, observe

USER = q.TEST_USER
NOBODY = q.NOBODY_UID
D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE
J = q.JOB_IFACE
HOST_ADMIN = q.ACTION_HOST_ADMIN
ADMIN_NEEDED = q.INTERACTIVE_AUTH_REQUIRED    # host-admin is auth_admin: polkit would ask a password
PATH_NOT_ALLOWED = q.ERROR_PREFIX + 'PathNotAllowed'
MiB = 1024 * 1024


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


class AttackTestCase(q.QsnapTestCase):
    harness_options = {'image_root': True}
    maxDiff = None

    def setUp(self):
        super().setUp()
        h = self.h
        self.outside = os.path.join(h.root, 'outside')
        os.mkdir(self.outside, 0o700)
        secret = os.path.join(h.root, 'root-only-secret')
        with open(secret, 'w') as f:
            f.write('the root-only secret\n')
        os.chmod(secret, 0o600)
        self.victims = ['/etc/shadow', '/etc/passwd', secret,
                        q.qemu_img_create(os.path.join(self.outside, 'victim.qcow2'), '16M')]
        self.sums = {v: sha256(v) for v in self.victims}
        self.marker = os.path.join(h.root, 'pwned')

        self.base = h.create_image('mine.qcow2')
        self.mine = h.define_domain('mine', [q.Disk('vda', self.base)])
        self.theirs_image = q.qemu_img_create(os.path.join(self.outside, 'theirs.qcow2'))
        self.theirs = h.define_domain('theirs', [q.Disk('vda', self.theirs_image)])
        h.grant([q.ACTION_MANAGE_DOMAINS, q.ACTION_MANAGE_SNAPSHOTS, q.ACTION_BLOCK_JOBS], user=USER, domain='mine')
        self.theirs_before = self.theirs_state()
        self.fifos = []
        self.addCleanup(self.unjam_fifos)

    # ---- helpers

    def theirs_state(self):
        h = self.h
        uuid = h.get_property(self.theirs, D, 'UUID')
        with open(os.path.join(h.state_dir, 'domains', uuid + '.xml'), 'rb') as f:
            stored = f.read()
        return (h.get_all(self.theirs, D), stored, sha256(self.theirs_image))

    def make_fifo(self, name):
        path = self.h.image_path(name)
        os.mkfifo(path, 0o600)
        self.fifos.append(path)
        return path

    def unjam_fifos(self):
        """Should qsnapd be stuck in open() of a FIFO (the fix undone), a
        writer lets it go, so that teardown does not hang too."""
        for path in self.fifos:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass

    def assertAnswering(self, what):
        """qsnapd's loop is not stuck (on a FIFO, a hung open): another
        client's call is answered. A blocked loop never answers, so the
        generous timeout tells the two apart without timing anything."""
        client = self.h.new_client()
        try:
            client.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains', timeout=10.0)
        except q.DBusCallError as e:
            self.fail('qsnapd did not answer ListDomains (%s): %s' % (what, e))
        finally:
            client.close()

    def assertFinished(self):
        """What every attack must leave: the victims, a responsive qsnapd,
        the other domain."""
        for v in self.victims:
            self.assertEqual(sha256(v), self.sums[v], '%s changed' % v)
        self.assertFalse(os.path.exists(self.marker), 'a command of the attacker ran')
        self.assertAnswering('at the end')
        self.assertEqual(self.theirs_state(), self.theirs_before, 'the other domain changed')

    def as_user(self, path, iface, method, args=(), user=USER, interactive=False):
        return call_as(self.h, user, path, iface, method, args, interactive=interactive)

    def during(self, path, iface, method, args, sig):
        """Calls method (as root, asynchronously); while it is in flight
        another call must be answered within a second; returns its result
        or raises its D-Bus error."""
        pending = self.h.call_async(path, iface, method, args, sig, timeout=20)
        self.assertAnswering('during %s' % method)
        return pending.wait()

    def monitor(self):
        m = PolkitMonitor(self.h)
        self.addCleanup(m.close)
        return m


class MonitorPassthroughTest(AttackTestCase):
    def test_qemu_monitor_command_needs_host_admin(self):
        h = self.h
        h.call(self.mine, D, 'Start', (0,), 't')
        pid = h.qemu_pid(self.mine)
        exec_uri = 'exec:touch %s' % self.marker
        qmp = json.dumps({'execute': 'migrate', 'arguments': {'uri': exec_uri}})
        hmp = 'migrate "%s"' % exec_uri
        for interactive in (False, True):
            for command, flags in ((qmp, 0), (hmp, 1), ('{"execute": "query-status"}', 0), ('info status', 1)):
                with self.subTest(command=command, interactive=interactive):
                    err, message = self.as_user(self.mine, D, 'QemuMonitorCommand', [('s', command), ('t', flags)],
                                                interactive=interactive)
                    self.assertEqual(err, ADMIN_NEEDED, message)
                    self.assertIn(HOST_ADMIN, message)
        err, message = self.as_user(self.mine, D, 'QemuMonitorCommand', [('s', qmp), ('t', 0)], user=NOBODY)
        self.assertEqual(err, ADMIN_NEEDED, message)
        # No migration was ever started (query-migrate shows one from the
        # moment QEMU accepts the command), so no exec: command was spawned.
        self.assertEqual(h.qmp(self.mine, 'query-migrate')['return'], {})
        self.assertFalse(os.path.exists(self.marker), 'migrate to exec: ran')
        self.assertEqual(h.qmp(self.mine, 'query-status')['return']['status'], 'running')
        self.assertEqual(h.qemu_pid(self.mine), pid)
        self.assertFinished()

        # The marker works: root may do this, and then the command runs.
        h.qmp(self.mine, 'migrate', {'uri': exec_uri})
        self.assertTrue(q.spin(lambda: os.path.exists(self.marker), 10), "root's migrate to exec: did not run")
        os.unlink(self.marker)


class UnprivilegedQemuTest(q.UnprivilegedQemu, AttackTestCase):
    """QEMU as its own user (--qemu-user=, the system bus's default),
    sandboxed, with no capability (docs/security.md §4): a guest escape or
    the monitor passthrough gets an unprivileged process that cannot spawn
    anything, and QEMU still opens no image itself."""
    harness_options = {'image_root': True, 'daemon_args': ['--qemu-user=' + q.QEMU_USER]}

    def status(self, pid):
        with open('/proc/%d/status' % pid) as f:
            return dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)

    def test_no_qemu_of_ours_as_root(self):
        h = self.h
        h.call(self.mine, D, 'Start', (0,), 't')
        pid = h.qemu_pid(self.mine)
        pw = q.pwd.getpwnam(q.QEMU_USER)
        st = self.status(pid)
        self.assertEqual(st['Uid'].split(), [str(pw.pw_uid)] * 4, st['Uid'])
        self.assertEqual(st['Gid'].split(), [str(pw.pw_gid)] * 4, st['Gid'])
        self.assertNotIn('0', st['Groups'].split(), 'root\'s group kept')
        for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'):
            self.assertEqual(int(st[cap], 16), 0, '%s %s' % (cap, st[cap]))
        self.assertEqual(st['NoNewPrivs'], '1')
        self.assertEqual(st['Seccomp'], '2', 'no seccomp filter: -sandbox is missing')
        # ps: every QEMU of ours (it holds our files) runs as QEMU's user.
        ours = [p for p in q._pids_mentioning(h.root) if 'qemu-system' in (q._proc_cmdline(p) or '')]
        self.assertEqual(ours, [pid])
        self.assertEqual([p for p in ours if os.stat('/proc/%d' % p).st_uid == 0], [], 'a QEMU of ours runs as root')
        # It works as before: an external snapshot with memory (the memory
        # through a descriptor, no exec:), a pull, the data where it belongs.
        h.write_pattern_live(self.mine, 'vda', 0x5a, 0, 1 << 20)
        h.call(self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name><memory snapshot=\'external\' '
                                                "file='%s'/></domainsnapshot>" % h.image_path('mine.mem'), 0), 'st')
        self.assertGreater(os.path.getsize(h.image_path('mine.mem')), 0)
        h.write_pattern_live(self.mine, 'vda', 0x5b, 1 << 20, 1 << 20)
        h.verify_pattern_live(self.mine, 'vda', 0x5a, 0, 1 << 20)
        h.flush_live(self.mine, 'vda')
        self.assertTrue(q.qemu_io_read_pattern(self.base, 0x5a, 0, 1 << 20))
        # A pull backup: QEMU binds its NBD socket in the folder its user
        # owns (qsnapd's runtime folder is root's alone), the scratch file
        # qsnapd made reaches QEMU as a descriptor; the export reads the disk.
        job = h.call(self.mine, D, 'BackupBegin', ("<domainbackup mode='pull'><disks><disk name='vda'/></disks>"
                                                   "</domainbackup>", '', 0), 'sst')
        socket = re.search(r"socket='([^']+)'", h.call(self.mine, D, 'BackupGetXMLDesc')).group(1)
        self.assertEqual(os.path.dirname(socket), os.path.join(h.runtime_dir, 'qemu'))
        self.assertEqual(os.stat(os.path.dirname(socket)).st_uid, pw.pw_uid)
        r = q.run([q.QEMU_IO, '-r', '-f', 'raw', '-c', 'read -P 0x5a 0 1M', 'nbd+unix:///vda?socket=%s' % socket])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn('Pattern verification failed', r.stdout)
        h.call(job, q.JOB_IFACE, 'Abort', (0,), 't')
        self.assertEqual(h.qemu_pid(self.mine), pid)
        self.assertFinished()

    def test_offline_backup_qemu_is_unprivileged(self):
        # A shut-off domain's backup runs in a paused QEMU of qsnapd's own:
        # as QEMU's user, sandboxed, images by descriptor, read-only.
        h = self.h
        pw = q.pwd.getpwnam(q.QEMU_USER)
        q.qemu_io_write_pattern(self.base, 0x5c, 0, 1 << 20)
        job = h.call(self.mine, D, 'BackupBegin', ("<domainbackup mode='pull'><disks><disk name='vda'/></disks>"
                                                   "</domainbackup>", '', 0), 'sst')
        daemon = h.daemon_pid()
        pids = [p for p in q._pids_mentioning('-offline') if q._proc_stat(p) and q._proc_stat(p)[1] == daemon]
        self.assertEqual(len(pids), 1, 'the paused QEMU: %s' % pids)
        pid = pids[0]
        self.assertIn('-machine none', q._proc_cmdline(pid))
        st = self.status(pid)
        self.assertEqual(st['Uid'].split(), [str(pw.pw_uid)] * 4, st['Uid'])
        for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'):
            self.assertEqual(int(st[cap], 16), 0, '%s %s' % (cap, st[cap]))
        self.assertEqual(st['Seccomp'], '2', 'no seccomp filter: -sandbox is missing')
        self.assertEqual(h.get_property(self.mine, D, 'State'), 'shutoff')
        socket = re.search(r"socket='([^']+)'", h.call(self.mine, D, 'BackupGetXMLDesc')).group(1)
        self.assertEqual(os.path.dirname(socket), os.path.join(h.runtime_dir, 'qemu'))
        r = q.run([q.QEMU_IO, '-r', '-f', 'raw', '-c', 'read -P 0x5c 0 1M', 'nbd+unix:///vda?socket=%s' % socket])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn('Pattern verification failed', r.stdout)
        h.call(job, q.JOB_IFACE, 'Abort', (0,), 't')
        self.assertTrue(q.spin(lambda: not q._alive(pid), 10), 'the paused QEMU outlived its backup')
        self.assertFinished()

    def test_migrate_to_exec_kills_qemu_not_the_host(self):
        h = self.h
        h.call(self.mine, D, 'Start', (0,), 't')
        pid = h.qemu_pid(self.mine)
        exec_uri = 'exec:touch %s' % self.marker
        # root (host-admin) may pass it on; QEMU's sandbox refuses to spawn
        # and QEMU dies of it (SIGSYS): no shell ran, qsnapd reports a crash.
        try:
            h.call(self.mine, D, 'QemuMonitorCommand',
                   (json.dumps({'execute': 'migrate', 'arguments': {'uri': exec_uri}}), 0), 'st')
        except q.DBusCallError:
            pass    # QEMU may be gone before it answers
        q.wait_until(lambda: h.get_property(self.mine, D, 'State') == 'crashed', 30, 'the domain is crashed')
        self.assertFalse(q._alive(pid), 'QEMU lives on')
        self.assertFalse(os.path.exists(self.marker), 'migrate to exec: ran a command')
        self.assertFinished()


class PerDomainUidTest(q.UnprivilegedQemu, AttackTestCase):
    """--qemu-uid-range=: each domain's QEMU runs as a uid of its own from
    the range, with QEMU's user's groups (docs/security.md §4): one QEMU
    broken into cannot signal or trace another. The uids in use survive a
    restart of qsnapd (the runtime record), a full range refuses Start."""
    BASE = 2001000000
    harness_options = {'image_root': True,
                       'daemon_args': ['--qemu-user=' + q.QEMU_USER, '--qemu-uid-range=%d:2' % BASE]}

    def uid_of(self, pid):
        with open('/proc/%d/status' % pid) as f:
            st = dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)
        uids, gids = st['Uid'].split(), st['Gid'].split()
        self.assertEqual(len(set(uids)), 1, st['Uid'])
        self.assertEqual(gids, [str(q.pwd.getpwnam(q.QEMU_USER).pw_gid)] * 4, st['Gid'])
        self.assertNotIn('0', st['Groups'].split())
        self.assertEqual(st['Seccomp'], '2')
        return int(uids[0])

    def kill0_as(self, uid, pid):
        gid = q.pwd.getpwnam(q.QEMU_USER).pw_gid
        return q.run(['setpriv', '--reuid=%d' % uid, '--regid=%d' % gid, '--clear-groups', 'kill', '-0', str(pid)],
                     timeout=10).returncode

    def test_one_uid_per_qemu(self):
        h = self.h
        third = h.define_domain('third', [q.Disk('vda', h.create_image('third.qcow2'))])
        h.call(self.mine, D, 'Start', (0,), 't')
        h.call(self.theirs, D, 'Start', (0,), 't')
        mine, theirs = h.qemu_pid(self.mine), h.qemu_pid(self.theirs)
        uids = {self.uid_of(mine), self.uid_of(theirs)}
        self.assertEqual(uids, {self.BASE, self.BASE + 1})
        # Each reaches itself, not the other (the check can fail: its own works).
        self.assertEqual(self.kill0_as(self.uid_of(mine), mine), 0)
        self.assertNotEqual(self.kill0_as(self.uid_of(mine), theirs), 0, 'one QEMU\'s uid signals another')
        self.assertNotEqual(self.kill0_as(self.uid_of(theirs), mine), 0, 'one QEMU\'s uid signals another')
        qemu_dir = os.path.join(h.runtime_dir, 'qemu')
        st = os.stat(qemu_dir)
        self.assertEqual((st.st_uid, st.st_mode & 0o7777), (0, 0o1770))
        # A pull backup: QEMU binds its NBD socket in that folder; the export reads the disk.
        job = h.call(self.mine, D, 'BackupBegin', ("<domainbackup mode='pull'><disks><disk name='vda'/></disks>"
                                                   "</domainbackup>", '', 0), 'sst')
        socket = re.search(r"socket='([^']+)'", h.call(self.mine, D, 'BackupGetXMLDesc')).group(1)
        self.assertEqual(os.path.dirname(socket), qemu_dir)
        r = q.run([q.QEMU_IO, '-r', '-f', 'raw', '-c', 'read 0 1M', 'nbd+unix:///vda?socket=%s' % socket])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        h.call(job, q.JOB_IFACE, 'Abort', (0,), 't')
        # The range is full, also for a restarted qsnapd.
        for restart in (False, True):
            if restart:
                h.restart_daemon()
            with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed'):
                h.call(third, D, 'Start', (0,), 't')
            self.assertEqual(h.get_property(third, D, 'State'), 'shutoff')
        freed = self.uid_of(mine)
        h.call(self.mine, D, 'Stop', (0,), 't')
        h.call(third, D, 'Start', (0,), 't')
        self.assertEqual(self.uid_of(h.qemu_pid(third)), freed)
        self.assertEqual(self.uid_of(h.qemu_pid(self.theirs)), ({self.BASE, self.BASE + 1} - {freed}).pop())
        h.call(third, D, 'Stop', (0,), 't')
        h.call(self.theirs, D, 'Stop', (0,), 't')
        self.theirs_before = self.theirs_state()
        self.assertFinished()


class DefineBeyondTheRootsTest(AttackTestCase):
    def test_define_needs_host_admin(self):
        h = self.h
        evil = os.path.join(h.root, 'evil-emulator')
        with open(evil, 'w') as f:
            f.write('#!/bin/sh\ntouch %s\nexec %s "$@"\n' % (self.marker, q.QEMU_SYSTEM))
        os.chmod(evil, 0o755)
        h.call(self.theirs, D, 'Start', (0,), 't')
        theirs_monitor = os.path.join(h.runtime_dir, h.get_property(self.theirs, D, 'UUID') + '.qmp')
        self.assertTrue(os.path.exists(theirs_monitor))
        self.theirs_before = self.theirs_state()
        victim_copy = os.path.join(self.outside, 'victim.qcow2')
        cases = {
            'emulator': dict(disks=[q.Disk('vda', self.base)], emulator=evil),
            'monitor': dict(disks=[q.Disk('vda', self.base)], monitor=theirs_monitor),
            'shadow': dict(disks=[q.Disk('vda', '/etc/shadow', 'raw', False, True)]),
            'outside': dict(disks=[q.Disk('vda', victim_copy)]),
            'second disk outside': dict(disks=[q.Disk('vda', self.base), q.Disk('vdb', victim_copy)]),
        }
        before = observe(h)
        for name in ('mine', 'newdomain'):
            for what, kw in cases.items():
                with self.subTest(domain=name, what=what):
                    err, message = self.as_user(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                                                [('s', q.domain_xml(name, **kw)), ('t', 0)])
                    self.assertEqual(err, ADMIN_NEEDED, message)
                    self.assertIn(HOST_ADMIN, message)
        after = observe(h)
        # theirs runs (started above): its runtime files are as they were too.
        self.assertEqual(after, before, 'a refused DefineDomain changed something')
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [self.mine, self.theirs])
        # The stored definition is the old one: Start runs the default QEMU.
        err, out = self.as_user(self.mine, D, 'Start', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertIn(q.QEMU_SYSTEM, q._proc_cmdline(h.qemu_pid(self.mine)))
        self.assertFinished()


class SecretsTest(AttackTestCase):
    def test_graphics_password_hidden(self):
        h = self.h
        graphics = "    <graphics type='vnc' port='-1' autoport='yes' passwd='vnc-secret-42'/>"
        xml = q.domain_xml('mine', [q.Disk('vda', self.base)]).replace('  </devices>', graphics + '\n  </devices>')
        h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')
        uuid = h.get_property(self.mine, D, 'UUID')
        with open(os.path.join(h.state_dir, 'domains', uuid + '.xml')) as f:
            self.assertIn('vnc-secret-42', f.read(), 'the stored definition lost the password')
        snap = h.call(self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>s</name></domainsnapshot>', 16), 'st')
        for user in (USER, NOBODY):
            for path, iface, flags in ((self.mine, D, 0), (self.mine, D, 2), (snap, S, 0)):
                with self.subTest(user=user, path=path, flags=flags):
                    err, out = self.as_user(path, iface, 'GetXMLDesc', [('t', flags)], user=user)
                    self.assertIsNone(err, out)
                    self.assertIn('<graphics type=', out)
                    self.assertNotIn('vnc-secret-42', out)
                    self.assertNotIn('passwd=', out)
            for path, iface, flags in ((self.mine, D, 1), (self.mine, D, 3), (snap, S, 1)):
                with self.subTest(user=user, path=path, flags=flags):
                    err, out = self.as_user(path, iface, 'GetXMLDesc', [('t', flags)], user=user)
                    self.assertEqual(err, q.ACCESS_DENIED, out)
                    self.assertIn(q.ACTION_READ_SECURE, out)
        rc, out, err = h.busctl_as(NOBODY, 'call', q.BUS_NAME, self.mine, D, 'GetXMLDesc', 't', '0')
        self.assertEqual(rc, 0, err)
        self.assertNotIn('vnc-secret-42', out)
        # With read-secure: the password.
        h.grant([q.ACTION_READ_SECURE], user=USER, domain='mine')
        for path, iface in ((self.mine, D), (snap, S)):
            err, out = self.as_user(path, iface, 'GetXMLDesc', [('t', 1)])
            self.assertIsNone(err, out)
            self.assertIn('vnc-secret-42', out)
        self.assertFinished()


class FifoTest(AttackTestCase):
    """FIFOs and device nodes named by an image header or by REDEFINE'd
    metadata: qsnapd never blocks on them, and refuses them by name."""

    def redefine(self, name, memory='', source=None, state='shutoff'):
        """REDEFINE (as the attacker) a snapshot of "mine" that froze the
        base image with the overlay `source`."""
        h = self.h
        disks = "<disks><disk name='vda' snapshot='external'><driver type='qcow2'/><source file='%s'/></disk></disks>" \
            % (source or h.image_path('%s.overlay' % name))
        xml = ('<domainsnapshot><name>%s</name><state>%s</state>%s%s%s</domainsnapshot>'
               % (name, state, memory, disks, q.domain_xml('mine', [q.Disk('vda', self.base)])))
        err, out = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', 1)])
        self.assertIsNone(err, out)
        return self.mine + '/snapshot/' + name

    def test_fifo_as_backing_file(self):
        h = self.h
        fifo = self.make_fifo('backing-fifo')
        dev = h.image_path('backing-dev')
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))    # /dev/null's numbers
        # -u: qemu-img itself would open the FIFO (and wait for a writer).
        on_fifo, on_dev = h.image_path('on-fifo.qcow2'), h.image_path('on-dev.qcow2')
        for image, backing in ((on_fifo, fifo), (on_dev, dev)):
            q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'raw', image, '64M'],
                  check=True, timeout=30)
        err, out = self.as_user(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                                [('s', q.domain_xml('mine', [q.Disk('vda', self.base), q.Disk('vdb', on_fifo),
                                                             q.Disk('vdc', on_dev)])), ('t', 0)])
        self.assertIsNone(err, out)
        disks = self.during(self.mine, q.PROPERTIES_IFACE, 'Get', (D, 'Disks'), 'ss')
        chains = {d[0]: d[3] for d in disks}
        self.assertEqual(chains, {'vda': self.base, 'vdb': on_fifo, 'vdc': on_dev})
        xml = self.during(self.mine, D, 'GetXMLDesc', (0,), 't')
        self.assertIn(on_fifo, xml)
        # as the attacker, through another client library
        rc, out, err = h.busctl_as(USER, 'get-property', q.BUS_NAME, self.mine, D, 'Disks')
        self.assertEqual(rc, 0, err)
        self.assertIn(on_fifo, out)
        self.assertFinished()

    def test_fifo_and_device_in_metadata(self):
        h = self.h
        fifo = self.make_fifo('memory-fifo')
        dev = h.image_path('overlay-dev')
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        overlay = h.create_image('mem.overlay', backing=self.base)
        mem = self.redefine('mem', memory="<memory snapshot='external' file='%s'/>" % fifo, source=overlay,
                            state='running')
        src_fifo = self.redefine('srcfifo', source=self.make_fifo('overlay-fifo'))
        src_dev = self.redefine('srcdev', source=dev)
        cases = [
            (mem, 'CheckDelete', 'The memory state file %s is not a regular file (a FIFO)' % fifo),
            (mem, 'CheckRevert', 'The memory state file %s is not a regular file (a FIFO)' % fifo),
            (src_fifo, 'CheckDelete', 'is not a regular file (a FIFO)'),
            (src_dev, 'CheckDelete', 'The overlay %s is not a regular file (a device)' % dev),
        ]
        for snap, method, why in cases:
            with self.subTest(snapshot=snap, method=method):
                sig_out = self.during(snap, S, method, (0,), 't')
                self.assertFalse(sig_out[0], '%s said yes' % method)
                self.assertIn(why, sig_out[1])
                # the attacker needs no right for the dry run, nor does nobody
                err, out = self.as_user(snap, S, method, [('t', 0)], user=NOBODY)
                self.assertIsNone(err, out)
                self.assertIn('not a regular file', out)
        for snap, method, flags in ((mem, 'Delete', 0), (mem, 'Revert', 0), (src_fifo, 'Delete', 0),
                                    (src_dev, 'Delete', 0)):
            with self.subTest(snapshot=snap, method=method):
                err, message = self.as_user(snap, S, method, [('t', flags)])
                self.assertEqual(err, PATH_NOT_ALLOWED, message)
                self.assertIn('not a regular file', message)
                self.assertAnswering('after %s' % method)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        self.assertTrue(stat.S_ISCHR(os.stat(dev).st_mode), 'the device node was removed')
        self.assertEqual(sorted(os.path.basename(p) for p in h.call(self.mine, D, 'ListSnapshots', (0,), 't')),
                         ['mem', 'srcdev', 'srcfifo'])
        self.assertEqual(h.get_property(self.mine, D, 'State'), 'shutoff')
        self.assertFinished()


class DiskDetailTest(AttackTestCase):
    def test_disk_detail_is_the_target(self):
        h = self.h
        vdb = h.create_image('mine-b.qcow2')
        h.define_domain('mine', [q.Disk('vda', self.base), q.Disk('vdb', vdb)])
        # nobody may run block jobs on mine, except on its system disk vda.
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id == %s && subject.user == "nobody" && action.lookup("domain") == "mine") {\n'
                          '        if (action.lookup("disk") == "vda")\n'
                          '            return polkit.Result.NO;\n'
                          '        return polkit.Result.YES;\n'
                          '    }\n'
                          '});\n' % json.dumps(q.ACTION_BLOCK_JOBS))
        mon = self.monitor()
        before = observe(h)
        for disk in ('vda', self.base):
            err, message = self.as_user(self.mine, D, 'BlockPull', [('s', disk), ('t', 0), ('t', 0)], user=NOBODY)
            self.assertEqual(err, q.ACCESS_DENIED, '%s: %s' % (disk, message))
        # vdb, by name or by file, is the rule's business: granted, then the
        # call fails on its own merits (the domain is shut off).
        for disk in ('vdb', vdb):
            err, message = self.as_user(self.mine, D, 'BlockPull', [('s', disk), ('t', 0), ('t', 0)], user=NOBODY)
            self.assertEqual(err, q.ERROR_PREFIX + 'NotRunning', '%s: %s' % (disk, message))
        checks = [(c['action'], c['details']) for c in mon.from_daemon()]
        want = [(q.ACTION_BLOCK_JOBS, {'domain': 'mine', 'disk': t}) for t in ('vda', 'vda', 'vdb', 'vdb')]
        self.assertEqual(checks, want)
        # A path that is no disk: NoSuchDisk, and polkit is not asked.
        for disk in (os.path.join(self.outside, 'victim.qcow2'), '/etc/shadow', 'vdz'):
            err, message = self.as_user(self.mine, D, 'BlockPull', [('s', disk), ('t', 0), ('t', 0)], user=NOBODY)
            self.assertEqual(err, q.ERROR_PREFIX + 'NoSuchDisk', message)
        self.assertEqual(len(mon.from_daemon()), len(want))
        self.assertEqual(observe(h), before)
        self.assertFinished()


class SnapshotDeleteJobTest(AttackTestCase):
    def test_abort_needs_manage_snapshots(self):
        h = self.h
        h.call(self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>s1</name></domainsnapshot>', 16), 'st')
        o1 = h.get_property(self.mine, D, 'Disks')[0][2]
        h.call(self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>s2</name></domainsnapshot>', 16), 'st')
        q.qemu_io_write_pattern(o1, 0x5a, 0, 16 * MiB)
        os.environ['QSNAPD_TEST_DELETE_SPEED'] = str(MiB)
        try:
            h.restart_daemon(kill=False)
        finally:
            del os.environ['QSNAPD_TEST_DELETE_SPEED']
        # nobody holds block-jobs on mine, not manage-snapshots.
        h.grant([q.ACTION_BLOCK_JOBS], user='nobody', domain='mine')
        mon = self.monitor()
        err, out = self.as_user(self.mine + '/snapshot/s1', S, 'Delete', [('t', 0)])
        self.assertIsNone(err, out)
        job = re.search(r"objectpath '([^']+)'", out).group(1)
        self.assertEqual(h.get_property(job, J, 'Type'), 'snapshot-delete')
        self.assertTrue(q.spin(lambda: 0 < h.get_property(job, J, 'Cur'), 10), 'the merge did not move')
        for method, args in (('Abort', [('t', 0)]), ('Abort', [('t', 1)]), ('SetSpeed', [('t', 0)]),
                             ('Pause', []), ('Resume', []), ('Pivot', [])):
            with self.subTest(method=method, args=args):
                err, message = self.as_user(job, J, method, args, user=NOBODY)
                self.assertEqual(err, q.ACCESS_DENIED, message)
                self.assertIn(q.ACTION_MANAGE_SNAPSHOTS, message)
        self.assertEqual(h.get_property(job, J, 'State'), 'running')
        actions = {(c['action'], c['details'].get('domain')) for c in mon.from_daemon()}
        self.assertIn((q.ACTION_MANAGE_SNAPSHOTS, 'mine'), actions)
        self.assertNotIn(q.ACTION_BLOCK_JOBS, {a for a, _ in actions})
        # The attacker holds manage-snapshots: allowed.
        err, out = self.as_user(job, J, 'Abort', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        self.assertIn(self.mine + '/snapshot/s1', h.call(self.mine, D, 'ListSnapshots', (0,), 't'))
        self.assertFinished()


class OtherDomainTest(AttackTestCase):
    def test_other_domain_untouchable(self):
        h = self.h
        before = observe(h)
        cases = [
            (self.theirs, D, 'Start', [('t', 0)]),
            (self.theirs, D, 'Undefine', [('t', 1)]),
            (self.theirs, D, 'GetXMLDesc', [('t', 1)]),
            (self.theirs, D, 'CreateSnapshot', [('s', '<domainsnapshot><name>x</name></domainsnapshot>'), ('t', 16)]),
            (self.theirs, D, 'CreateSnapshot', [('s', '<domainsnapshot><name>x</name></domainsnapshot>'), ('t', 1)]),
            (q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
             [('s', q.domain_xml('theirs', [q.Disk('vda', self.theirs_image)], description='mine now')), ('t', 0)]),
        ]
        for path, iface, method, args in cases:
            with self.subTest(method=method, args=args):
                err, message = self.as_user(path, iface, method, args)
                self.assertEqual(err, q.ACCESS_DENIED, message)
        h.call(self.theirs, D, 'Start', (0,), 't')
        self.theirs_before = self.theirs_state()
        running = observe(h)
        for path, iface, method, args in [
                (self.theirs, D, 'Stop', [('t', 0)]),
                (self.theirs, D, 'Pause', []),
                (self.theirs, D, 'BlockPull', [('s', 'vda'), ('t', 0), ('t', 0)]),
                (self.theirs, D, 'BlockCommit', [('s', 'vda'), ('s', ''), ('s', ''), ('t', 0), ('t', 4)])]:
            with self.subTest(method=method, args=args):
                err, message = self.as_user(path, iface, method, args)
                self.assertEqual(err, q.ACCESS_DENIED, message)
        err, message = self.as_user(self.theirs, D, 'QemuMonitorCommand', [('s', 'info status'), ('t', 1)])
        self.assertEqual(err, ADMIN_NEEDED, message)
        self.assertEqual(observe(h), running)
        self.assertEqual(before['stored definitions'], running['stored definitions'])
        self.assertFinished()


def tree_state(folder):
    """Every name below folder with its type and, for files, checksum."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (stat.S_IFMT(st.st_mode),
                                               sha256(p) if stat.S_ISREG(st.st_mode) else None)
    return out


def ext_snapshot_xml(name, overlay=None, memory_file=None):
    disk = "<disk name='vda' snapshot='external'>%s</disk>" % (
        "<source file='%s'/>" % overlay if overlay else '')
    memory = "<memory snapshot='external' file='%s'/>" % memory_file if memory_file else ''
    return '<domainsnapshot><name>%s</name>%s<disks>%s</disks></domainsnapshot>' % (name, memory, disk)


class GateTest(AttackTestCase):
    """The path gate (docs/security.md §2, §3): no file outside the domain's
    allowed folders — the image root and its disks' folders, never one
    learned from an image header or from snapshot metadata — whatever
    names it. A root-only folder outside the roots plays the protected
    folder; it must stay exactly as it was."""

    def setUp(self):
        super().setUp()
        self.protected = os.path.join(self.h.root, 'protected')
        os.mkdir(self.protected, 0o700)
        q.qemu_img_create(os.path.join(self.protected, 'base.qcow2'), '16M')
        self.protected_before = tree_state(self.protected)

    def assertFinished(self):
        self.assertEqual(tree_state(self.protected), self.protected_before, 'the protected folder changed')
        super().assertFinished()

    def snapshot_names(self):
        return sorted(os.path.basename(p) for p in self.h.call(self.mine, D, 'ListSnapshots', (0,), 't'))

    def redefine_xml(self, name, overlay, memory_file=None, recorded=None, state='shutoff'):
        memory = "<memory snapshot='external' file='%s'/>" % memory_file if memory_file else ''
        disks = ("<disks><disk name='vda' snapshot='external'><driver type='qcow2'/><source file='%s'/></disk>"
                 "</disks>" % overlay)
        recorded = recorded or q.domain_xml('mine', [q.Disk('vda', self.base)])
        return ('<domainsnapshot><name>%s</name><state>%s</state>%s%s%s</domainsnapshot>'
                % (name, state, memory, disks, recorded))

    def test_json_backing_name_is_not_followed(self):
        """A header whose backing name is json:{…"filename": <host file>}
        once let the guest read that file (QEMU followed it as root). Now
        qsnapd reads the chain through the gate and hands QEMU descriptors:
        Start refuses it by name, QEMU never runs."""
        h = self.h
        secret = self.victims[2]
        top = h.image_path('json-top.qcow2')
        spec = 'json:' + json.dumps({'driver': 'raw', 'file': {'driver': 'file', 'filename': secret}})
        r = q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-u', '-b', spec, '-F', 'raw', top, '16M'])
        self.assertEqual(r.returncode, 0, r.stderr)
        dom = h.define_domain('jsonb', [q.Disk('vda', top)])
        with self.assertDBusError(q.ERROR_PREFIX + 'PathNotAllowed'):
            h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(h.get_property(dom, D, 'State'), 'shutoff')
        self.assertEqual([p for p in q._pids_mentioning(h.root) if 'qemu-system' in (q._proc_cmdline(p) or '')], [])
        self.assertFinished()

    def test_qemu_reopens_the_files_qsnapd_opened(self):
        """Once running, what a path names no longer matters to QEMU: with
        the base swapped for a decoy under the same name, a commit into it
        (QEMU reopens the base read-write; by name it would open the
        decoy) writes into the file qsnapd opened at Start."""
        h = self.h
        base = h.create_image('swap-base.qcow2')
        q.qemu_io_write_pattern(base, 0x61, 0, 1 << 20)
        mid = h.create_image('swap-mid.qcow2', backing=base)
        q.qemu_io_write_pattern(mid, 0x63, 1 << 20, 1 << 20)
        top = h.create_image('swap-top.qcow2', backing=mid)
        dom = h.define_domain('swap', [q.Disk('vda', top)])
        h.call(dom, D, 'Start', (0,), 't')
        os.rename(base, base + '.away')
        decoy = q.qemu_img_create(base, '64M')
        q.qemu_io_write_pattern(decoy, 0x62, 0, 1 << 20)
        decoy_sum = sha256(decoy)
        job = h.call(dom, D, 'BlockCommit', ('vda', base, mid, 0, 0), 'ssstt')
        q.wait_until(lambda: h.get_property(job, q.JOB_IFACE, 'State') in ('completed', 'failed', 'canceled'), 60,
                     'the commit ends')
        self.assertEqual(h.get_property(job, q.JOB_IFACE, 'State'), 'completed')
        h.verify_pattern_live(dom, 'vda', 0x61, 0, 1 << 20, 'the backing data qsnapd opened')
        h.verify_pattern_live(dom, 'vda', 0x63, 1 << 20, 1 << 20, 'the committed data')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(sha256(decoy), decoy_sum, "QEMU wrote into the file now under the base's name")
        self.assertTrue(q.qemu_io_read_pattern(base + '.away', 0x63, 1 << 20, 1 << 20), 'the commit missed the base')
        self.assertFinished()

    def test_redefine_outside_paths_refused(self):
        h = self.h
        secret = self.victims[2]
        victim = self.victims[3]
        overlay = h.create_image('inside.overlay', backing=self.base)
        cases = {
            'memory file outside': self.redefine_xml('m', overlay, memory_file=secret, state='running'),
            'memory file in the protected folder': self.redefine_xml(
                'p', overlay, memory_file=os.path.join(self.protected, 'base.qcow2'), state='running'),
            'overlay outside': self.redefine_xml('o', victim),
            'overlay through ..': self.redefine_xml('d', os.path.join(h.images_dir, '..', 'outside', 'victim.qcow2')),
            'overlay in the protected folder': self.redefine_xml('q', os.path.join(self.protected, 'base.qcow2')),
        }
        for what, xml in cases.items():
            for user in (USER, 'root'):
                with self.subTest(what=what, user=user):
                    if user == 'root':
                        with self.assertDBusError(PATH_NOT_ALLOWED) as cm:
                            h.call(self.mine, D, 'CreateSnapshot', (xml, 1), 'st')
                        message = str(cm.exception)
                    else:
                        err, message = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', 1)])
                        self.assertEqual(err, PATH_NOT_ALLOWED, message)
                    self.assertIn('is not in an allowed folder', message)
        self.assertEqual(self.snapshot_names(), [])
        self.assertFinished()

    def test_old_metadata_outside_refused_by_delete_and_revert(self):
        """Metadata stored while its files were in an allowed folder (or
        before the gate existed) that no longer is: Delete and Revert refuse
        instead of unlinking or merging into them."""
        h = self.h
        old = os.path.join(h.root, 'old')
        os.mkdir(old, 0o700)
        old_base = q.qemu_img_create(os.path.join(old, 'base.qcow2'), '16M')
        q.qemu_io_write_pattern(old_base, 0x11, 0, MiB)
        old_overlay = q.qemu_img_create(os.path.join(old, 'overlay.qcow2'), '16M', backing=old_base)
        q.qemu_io_write_pattern(old_overlay, 0x22, 0, MiB)
        memory = os.path.join(old, 'memory')
        with open(memory, 'w') as f:
            f.write('not a memory state, a file of root\'s\n')
        # root (host-admin) put mine's disk in `old` and recorded snapshots there ...
        h.define_domain('mine', [q.Disk('vda', old_base)])
        old_def = q.domain_xml('mine', [q.Disk('vda', old_base)])
        h.call(self.mine, D, 'CreateSnapshot',
               (self.redefine_xml('ext', old_overlay, recorded=old_def), 1), 'st')
        h.call(self.mine, D, 'CreateSnapshot',
               (self.redefine_xml('mem', old_overlay, memory_file=memory, recorded=old_def, state='running'), 1), 'st')
        # ... then moved it back below the image root: `old` is allowed no more.
        h.define_domain('mine', [q.Disk('vda', self.base)])
        old_before = tree_state(old)
        for snap in ('ext', 'mem'):
            path = self.mine + '/snapshot/' + snap
            for method in ('CheckDelete', 'CheckRevert'):
                with self.subTest(snapshot=snap, method=method):
                    err, out = self.as_user(path, S, method, [('t', 0)], user=NOBODY)
                    self.assertIsNone(err, out)
                    self.assertIn('false', out)
                    self.assertIn('is not in an allowed folder', out)
            for method, flags in (('Delete', 0), ('Delete', 4), ('Revert', 0), ('Revert', 4)):
                with self.subTest(snapshot=snap, method=method, flags=flags):
                    err, message = self.as_user(path, S, method, [('t', flags)])
                    if method == 'Delete' and flags == 4:
                        self.assertIsNone(err, message)    # CHILDREN_ONLY: there are none, nothing is touched
                    else:
                        self.assertEqual(err, PATH_NOT_ALLOWED, message)
                        self.assertIn('is not in an allowed folder', message)
        self.assertEqual(tree_state(old), old_before, 'a file in the old folder changed')
        self.assertEqual(self.snapshot_names(), ['ext', 'mem'])
        # METADATA_ONLY touches no file: allowed.
        err, message = self.as_user(self.mine + '/snapshot/mem', S, 'Delete', [('t', 2)])
        self.assertIsNone(err, message)
        self.assertEqual(tree_state(old), old_before)
        self.assertFinished()

    def test_forward_merge_into_victim_refused(self):
        """An overlay whose header names a file outside as its backing file,
        REDEFINE'd as a snapshot's overlay: Delete never commits into it."""
        h = self.h
        victim = self.victims[3]
        evil = h.image_path('evil.overlay')
        q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-u', '-b', victim, '-F', 'qcow2', evil, '16M'],
              check=True, timeout=30)
        q.qemu_io_write_pattern(evil, 0x66, 0, MiB)
        for name, recorded in (('v', q.domain_xml('mine', [q.Disk('vda', victim)])), ('f', None)):
            with self.subTest(recorded='victim' if recorded else 'base'):
                err, message = self.as_user(self.mine, D, 'CreateSnapshot',
                                            [('s', self.redefine_xml(name, evil, recorded=recorded)), ('t', 1)])
                if recorded:
                    # the recorded <domain> names a disk outside the roots: host-admin
                    self.assertEqual(err, ADMIN_NEEDED, message)
                    continue
                self.assertIsNone(err, message)
                path = self.mine + '/snapshot/f'
                err, out = self.as_user(path, S, 'CheckDelete', [('t', 0)])
                self.assertIsNone(err, out)
                self.assertIn('false', out)
                err, message = self.as_user(path, S, 'Delete', [('t', 0)])
                self.assertIsNotNone(err, 'Delete merged a chain that leaves the allowed folders')
                self.assertTrue(os.path.exists(evil))
        self.assertFinished()

    def test_header_backing_into_protected_folder(self):
        h = self.h
        target = os.path.join(self.protected, 'base.qcow2')
        evil = h.image_path('evil.qcow2')
        q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-u', '-b', target, '-F', 'qcow2', evil, '16M'],
              check=True, timeout=30)
        err, out = self.as_user(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                                [('s', q.domain_xml('mine', [q.Disk('vda', evil)])), ('t', 0)])
        self.assertIsNone(err, out)
        # The chain is not followed: Disks shows the image alone.
        disks = h.get_property(self.mine, D, 'Disks')
        self.assertEqual([(d[0], d[3]) for d in disks], [('vda', evil)])
        for what, xml in (('overlay in the protected folder',
                           ext_snapshot_xml('s1', os.path.join(self.protected, 'o.qcow2'))),
                          ('overlay next to the disk', ext_snapshot_xml('s2')),
                          ('overlay named by the caller, next to the disk',
                           ext_snapshot_xml('s3', h.image_path('s3.qcow2')))):
            with self.subTest(what=what):
                err, message = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', 16)])
                self.assertEqual(err, PATH_NOT_ALLOWED, message)
        # Nor does QEMU get to follow it.
        err, message = self.as_user(self.mine, D, 'Start', [('t', 0)])
        self.assertEqual(err, PATH_NOT_ALLOWED, message)
        self.assertIn(target, message)
        self.assertEqual(h.get_property(self.mine, D, 'State'), 'shutoff')
        self.assertEqual(self.snapshot_names(), [])
        self.assertFalse(os.path.exists(h.image_path('evil.s2')))
        self.assertFalse(os.path.exists(h.image_path('s3.qcow2')))
        self.assertFinished()

    def test_json_and_protocol_backing_names(self):
        h = self.h
        names = {
            'vdb': 'json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}' % self.victims[2],
            'vdc': 'nbd:localhost:10809',
            'vdd': 'file:%s' % self.victims[3],
        }
        disks = [q.Disk('vda', self.base)]
        for target, name in names.items():
            image = h.image_path('%s.qcow2' % target)
            q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-u', '-b', name, '-F', 'raw', image, '16M'],
                  check=True, timeout=30)
            disks.append(q.Disk(target, image))
        err, out = self.as_user(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                                [('s', q.domain_xml('mine', disks)), ('t', 0)])
        self.assertIsNone(err, out)
        chains = {d[0]: d[3] for d in h.get_property(self.mine, D, 'Disks')}
        self.assertEqual(chains, {d.target: d.path for d in disks}, 'a json:/protocol backing was followed')
        for target, name in names.items():
            with self.subTest(target=target):
                others = ''.join('<disk name="%s" snapshot="no"/>' % d.target for d in disks if d.target != target)
                xml = ('<domainsnapshot><name>%s</name><disks><disk name="%s" snapshot="external"/>%s</disks>'
                       '</domainsnapshot>' % (target, target, others))
                err, message = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', 16)])
                self.assertEqual(err, PATH_NOT_ALLOWED, message)
                self.assertIn('json: or protocol name', message)
                self.assertIn(name, message)
        # QEMU would open /etc/shadow-like files for the guest: no start.
        err, message = self.as_user(self.mine, D, 'Start', [('t', 0)])
        self.assertEqual(err, PATH_NOT_ALLOWED, message)
        self.assertIn('json: or protocol name', message)
        self.assertEqual(h.get_property(self.mine, D, 'State'), 'shutoff')
        self.assertEqual(self.snapshot_names(), [])
        self.assertFinished()

    def test_no_oracle_before_authorization(self):
        """The same words whether a root-only folder exists or not, for the
        attacker and for a caller holding no right at all."""
        h = self.h
        os.mkdir(os.path.join(self.protected, 'exists'), 0o700)
        self.protected_before = tree_state(self.protected)
        texts = {}
        for user in (USER, NOBODY):
            for which in ('exists', 'missing'):
                folder = os.path.join(self.protected, which)
                for what, xml, flags in (
                        ('overlay', ext_snapshot_xml('x', os.path.join(folder, 'o.qcow2')), 16),
                        ('redefine', self.redefine_xml('x', os.path.join(folder, 'o.qcow2')), 1)):
                    with self.subTest(user=user, which=which, what=what):
                        err, message = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', flags)],
                                                    user=user)
                        self.assertEqual(err, PATH_NOT_ALLOWED, message)
                        texts.setdefault((user, what), set()).add(message.replace(folder, '<F>'))
        for key, variants in texts.items():
            self.assertEqual(len(variants), 1, '%s: the texts differ: %s' % (key, variants))
            self.assertIn('is not in an allowed folder', next(iter(variants)))
        # The domain running: a memory file and BlockCopy's destination.
        h.call(self.mine, D, 'Start', (0,), 't')
        running = {}
        for which in ('exists', 'missing'):
            folder = os.path.join(self.protected, which)
            dest = "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>" % os.path.join(folder, 'c')
            memory = ext_snapshot_xml('x', h.image_path('x.o'), os.path.join(folder, 'm'))
            for user, what, method, args in (
                    (NOBODY, 'memory', 'CreateSnapshot', [('s', memory), ('t', 0)]),
                    (USER, 'copy', 'BlockCopy', [('s', 'vda'), ('s', dest), ('t', 0), ('t', 0)])):
                err, message = self.as_user(self.mine, D, method, args, user=user)
                self.assertEqual(err, PATH_NOT_ALLOWED, message)
                running.setdefault(what, set()).add(message.replace(folder, '<F>'))
        for what, variants in running.items():
            self.assertEqual(len(variants), 1, '%s: the texts differ: %s' % (what, variants))
        self.assertFinished()

    def test_symlink_race(self):
        """A folder below the root swapped for a link to the protected
        folder, in a loop, while the attacker creates snapshots into it:
        every file qsnapd writes lands in the real folder or nowhere."""
        h = self.h
        sub, real, link = h.image_path('sub'), h.image_path('sub.real'), h.image_path('sub.link')
        os.mkdir(real)
        os.symlink(self.protected, link)
        os.rename(real, sub)
        stop = threading.Event()
        swaps = [0]

        def swapper():
            # sub is the folder, then the link, then the folder ...
            # (the folder stays a little longer, so that some snapshots get
            # through between the swaps and the race is run both ways)
            while not stop.is_set():
                os.rename(sub, real)
                os.rename(link, sub)
                os.rename(sub, link)
                os.rename(real, sub)
                swaps[0] += 1
                stop.wait(0.003)

        t = threading.Thread(target=swapper)
        t.start()
        results = []
        try:
            for i in range(24):
                xml = ext_snapshot_xml('r%d' % i, os.path.join(sub, 'o%d.qcow2' % i))
                err, message = self.as_user(self.mine, D, 'CreateSnapshot', [('s', xml), ('t', 16)])
                results.append(err)
                self.assertIn(err, (None, PATH_NOT_ALLOWED, q.ERROR_PREFIX + 'QemuFailed'), message)
        finally:
            stop.set()
            t.join()
        self.assertGreater(swaps[0], 10, 'the swapper did not run')
        self.assertIn(None, results, 'no snapshot got through: the race was not run')
        created = [n for n in os.listdir(sub) if n.endswith('.qcow2')]
        self.assertTrue(created)
        self.assertFinished()


class NoBlockingTest(AttackTestCase):
    """CheckDelete (no right needed) measures what the merges take with
    qemu-img as asynchronous children: another caller's call is answered
    while it runs, and the dry runs of one caller are limited."""

    def test_check_delete_does_not_block(self):
        h = self.h
        n = 20
        for i in range(n):
            h.call(self.mine, D, 'CreateSnapshot',
                   ('<domainsnapshot><name>s%02d</name></domainsnapshot>' % i, 16), 'st')
        first = self.mine + '/snapshot/s00'
        other = h.new_client()
        self.addCleanup(other.close)
        # CHILDREN: every overlay of the chain is measured, one qemu-img each.
        pending = h.call_async(first, S, 'CheckDelete', (1,), 't', timeout=120)
        t = time.monotonic()
        other.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains', timeout=5.0)
        answered = time.monotonic() - t
        self.assertFalse(pending.done(), 'CheckDelete ended before another call was answered: nothing measured '
                         'in the background (or the chain is too short to tell)')
        ok, reason, needed = pending.wait()
        total = time.monotonic() - t
        print('CheckDelete of %d overlays: another call answered after %.2f s, CheckDelete after %.2f s'
              % (n, answered, total), file=sys.stderr)
        self.assertTrue(ok, reason)
        self.assertGreater(needed, 0)
        # Measured once: the same question is answered from the cache, with
        # the same number, and Delete (before polkit) says the same.
        t = time.monotonic()
        self.assertEqual(h.call(first, S, 'CheckDelete', (1,), 't', timeout=30), (True, '', needed))
        cached = time.monotonic() - t
        print('again, from the cache: %.2f s' % cached, file=sys.stderr)
        self.assertLess(cached, total)
        self.assertFinished()

    def test_dry_runs_limited_per_caller(self):
        h = self.h
        for i in range(12):
            h.call(self.mine, D, 'CreateSnapshot',
                   ('<domainsnapshot><name>s%02d</name></domainsnapshot>' % i, 16), 'st')
        # Three dry runs at once from one caller: the third is refused while
        # two measure (CHILDREN, CHILDREN_ONLY and the plain one differ in
        # what they measure, but each notes unmeasured files).
        calls = [h.call_async(self.mine + '/snapshot/s%02d' % k, S, 'CheckDelete', (f,), 't', timeout=60)
                 for k, f in ((0, 1), (1, 4), (2, 0))]
        results = []
        for c in calls:
            try:
                results.append(c.wait())
            except q.DBusCallError as e:
                results.append(e.name)
        self.assertEqual(results[2], 'org.freedesktop.DBus.Error.LimitsExceeded', results)
        self.assertTrue(results[0][0] and results[1][0], results)
        # Once they are answered, the caller may ask again.
        self.assertTrue(h.call(self.mine + '/snapshot/s02', S, 'CheckDelete', (0,), 't')[0])
        self.assertFinished()


class StartupTest(q.QsnapTestCase):
    harness_options = {'daemon': False}

    def test_system_bus_without_polkit_refused(self):
        h = self.h
        state = os.path.join(h.root, 'system-state')
        env = dict(os.environ, LC_ALL='C',
                   DBUS_SYSTEM_BUS_ADDRESS='unix:path=' + os.path.join(h.root, 'no-such-bus'))
        for argv in (['--system', '--polkit=no'], ['--polkit=no']):
            with self.subTest(argv=argv):
                r = subprocess.run([q.qsnapd_binary()] + argv + ['--state-dir=' + state,
                                                                 '--runtime-dir=' + state + '-run'],
                                   env=env, capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn('--polkit=no is refused with --system', r.stderr)
                self.assertFalse(os.path.exists(state), 'it set up its state before refusing')
        # --user and --address may run without polkit (the harness does).
        r = subprocess.run([q.qsnapd_binary(), '--address=unix:path=' + os.path.join(h.root, 'no-such-bus'),
                            '--polkit=no', '--state-dir=' + state, '--runtime-dir=' + state + '-run'],
                           env=env, capture_output=True, text=True, timeout=30)
        self.assertNotIn('refused', r.stderr)
        self.assertIn('Failed to connect to the bus', r.stderr)


if __name__ == '__main__':
    q.main()
