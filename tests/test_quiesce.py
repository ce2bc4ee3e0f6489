#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""CreateSnapshot's QUIESCE (flag 64) and Domain.AgentConnected (issue #14).

A domain with libvirt's guest agent <channel> gets a virtio-serial port
named org.qemu.guest_agent.0 whose host side is the socket
<runtime>/<uuid>.agent. These tests run a firmware-only guest (no OS, so
no qemu-ga) and, where an agent must answer, put a scripted fake qemu-ga
on that socket path in QEMU's place (qsnapd connects to the path when it
attaches, so a restarted qsnapd talks to the fake). The fake answers the
way the notes measured qemu-ga does: a GenericError for the 0xFF byte,
then 0xFF + the guest-sync-delimited answer.

- AgentConnected: false without a channel; false while nothing answers;
  true once the fake answered a sync (PropertiesChanged carries it).
- QUIESCE succeeds: the agent saw freeze then thaw, and qsnapd's log shows
  freeze answered, then the snapshot transaction, then the thaw; the data
  written before is in the snapshot's point in time (the old active file).
- The agent refuses the freeze: QemuFailed with its text verbatim, a thaw
  was sent, nothing changed (Disks, Snapshots, no overlay file).
- The agent hangs up during the freeze (QEMU runs on): AgentUnresponsive
  saying it went away, nothing changed.
- The agent never answers (freeze, or the sync before it): AgentUnresponsive
  within the agent timeout (--agent-timeout=2), guest still running, a
  thaw attempted, nothing changed.
- qsnapd killed at create:frozen: the next qsnapd thaws the guest at start
  and removes the intent; the snapshot is rolled back.
- Refusals: QUIESCE without DISK_ONLY (InvalidArgument), without a channel
  (Unsupported), of a shut-off domain (OperationInvalid).
- Without QUIESCE no fsfreeze is ever sent (libvirt's semantics).
- BackupBegin QUIESCE (flag 2, qsnapd's own): freeze, the backup's
  transaction, thaw in that order, the push completes and equals the idle
  disk; the agent refusing (QemuFailed, its text) or silent
  (AgentUnresponsive within the timeout): thawed, no target, no job, no
  journal; qsnapd killed at backup:frozen: the next one thaws and rolls
  back; refusals: shut off (OperationInvalid), no channel (Unsupported).

On the real Linux guest (tests/guest/build-guest.py: qemu-ga in the guest,
a writer fsync'ing checksummed files all the time):
- QUIESCE: the snapshot's point in time (the old active file) is a clean
  filesystem without journal replay (dumpe2fs shows no needs_recovery,
  e2fsck -fn finds nothing, every file verifies), and the writer goes on
  (the guest was thawed).
- qemu-ga killed in the guest (qsnap.kill_agent=thaw: after the first
  quiesced operation's thaw): QUIESCE fails with
  AgentUnresponsive within the agent timeout, the guest keeps writing,
  nothing changed.
- qsnapd killed (SIGKILL, crash point create:frozen) while the guest is
  frozen: the guest's writer stops; the next qsnapd thaws it at start and
  the writer resumes.
- One more boot: a QUIESCE push backup's target is a clean filesystem
  without journal replay; then qemu-ga dies in the guest and the next
  QUIESCE backup is AgentUnresponsive with nothing left behind.
"""

import json
import os
import socket
import threading
import time

import qsnapguest as g
import qsnaptest as q

D = q.DOMAIN_IFACE
E = q.ERROR_PREFIX
MiB = 1 << 20
DISK_ONLY, QUIESCE = 16, 64
AGENT_TIMEOUT = 2

CHANNEL = """    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
"""


class FakeAgent:
    """A scripted qemu-ga on a UNIX socket: answers guest-sync-delimited,
    and each other command per `answers` (command -> a JSON-able reply
    object, None for silence, 'hang up' to close the connection). Records
    the commands in order."""

    def __init__(self, path):
        self.path = path
        self.answers = {'guest-fsfreeze-freeze': {'return': 1}, 'guest-fsfreeze-thaw': {'return': 1}}
        self.silent_sync = False
        self.commands = []
        self.cond = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(path):
            os.unlink(path)
        self.sock.bind(path)
        self.sock.listen(4)
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn):
        buf = b''
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if b'\xff' in data:
                    # qemu-ga's parser reset answers the byte itself.
                    conn.sendall(b'{"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}\n')
                buf += data.replace(b'\xff', b'')
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if line.strip():
                        self._answer(conn, json.loads(line))

    def _answer(self, conn, msg):
        cmd = msg.get('execute')
        with self.cond:
            self.commands.append(cmd)
            self.cond.notify_all()
        if cmd == 'guest-sync-delimited':
            if not self.silent_sync:
                conn.sendall(b'\xff' + json.dumps({'return': msg['arguments']['id']}).encode() + b'\n')
            return
        reply = self.answers.get(cmd, {'error': {'class': 'CommandNotFound', 'desc': 'no ' + cmd}})
        if reply == 'hang up':
            conn.shutdown(socket.SHUT_RDWR)
        elif reply is not None:
            conn.sendall(json.dumps(reply).encode() + b'\n')

    def fs_commands(self):
        with self.cond:
            return [c for c in self.commands if c != 'guest-sync-delimited']

    def wait_for(self, cmd, count=1, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.commands.count(cmd) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError('the fake agent never got %s (got %s)' % (cmd, self.commands))
                self.cond.wait(left)

    def close(self):
        self.closing = True
        self.sock.close()


class QuiesceTestCase(q.QsnapTestCase):
    harness_options = {'daemon_args': ['--agent-timeout=%d' % AGENT_TIMEOUT]}

    def define(self, name, channel=True):
        img = self.h.create_image(name + '.qcow2')
        text = q.domain_xml(name, [q.Disk('vda', img)])
        if channel:
            text = text.replace('  </devices>', CHANNEL + '  </devices>')
        return self.h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (text, 0), 'st'), img

    def start(self, dom):
        self.h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'running')

    def agent_socket(self, dom):
        return os.path.join(self.h.runtime_dir, self.h.get_property(dom, D, 'UUID') + '.agent')

    def with_fake_agent(self, dom):
        """The fake in QEMU's place, and a qsnapd that connected to it."""
        path = self.agent_socket(dom)
        self.assertTrue(os.path.exists(path), 'QEMU made no agent socket at %s' % path)
        fake = FakeAgent(path)
        self.addCleanup(fake.close)
        self.h.restart_daemon(kill=False)
        q.wait_until(lambda: self.h.get_property(dom, D, 'AgentConnected'), 15, 'AgentConnected')
        return fake

    def snapshot(self, dom, name, flags):
        xml = "<domainsnapshot><name>%s</name></domainsnapshot>" % name
        return self.h.call(dom, D, 'CreateSnapshot', (xml, flags), 'st', timeout=60)

    def unchanged(self, dom, disks, img, name):
        self.assertEqual(self.h.get_property(dom, D, 'Disks'), disks)
        self.assertEqual(self.h.get_property(dom, D, 'Snapshots'), [])
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'running')
        overlay = os.path.splitext(img)[0] + '.' + name
        self.assertFalse(os.path.exists(overlay), 'overlay %s left behind' % overlay)
        ops = os.path.join(self.h.state_dir, 'ops')
        left = [f for f in (os.listdir(ops) if os.path.isdir(ops) else []) if f.endswith('.snapshot-create')]
        self.assertEqual(left, [], 'the snapshot intent is left behind')


class AgentConnectedTest(QuiesceTestCase):
    def test_property(self):
        plain, _ = self.define('plain', channel=False)
        dom, _ = self.define('agent')
        self.assertFalse(self.h.get_property(plain, D, 'AgentConnected'))
        self.assertFalse(self.h.get_property(dom, D, 'AgentConnected'))
        self.start(plain)
        self.start(dom)
        # The channel's socket is there, but no qemu-ga answers behind it.
        self.assertTrue(os.path.exists(self.agent_socket(dom)))
        self.assertFalse(os.path.exists(self.agent_socket(plain)))
        self.assertFalse(self.h.get_property(dom, D, 'AgentConnected'))
        rec = self.h.record_signals()
        fake = self.with_fake_agent(dom)
        self.assertIn('guest-sync-delimited', fake.commands)
        self.assertTrue(self.h.new_client().get_property(dom, D, 'AgentConnected'))
        self.assertFalse(self.h.get_property(plain, D, 'AgentConnected'))
        rec.close()
        # Stop: false again.
        rec = self.h.record_signals()
        self.h.call(dom, D, 'Stop', (0,), 't')
        rec.wait_for_property(dom, 'AgentConnected', False)
        self.assertFalse(self.h.get_property(dom, D, 'AgentConnected'))
        rec.close()


class QuiesceTest(QuiesceTestCase):
    def test_quiesce_freezes_around_the_transaction(self):
        dom, img = self.define('vm')
        self.start(dom)
        self.h.write_pattern_live(dom, 'vda', 0x5a, 0, MiB)
        fake = self.with_fake_agent(dom)
        mark = self.h.daemon_log_mark()
        snap = self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        self.assertNotEqual(snap, '/')
        self.assertEqual(fake.fs_commands(), ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw'])
        # Every command came right behind its own sync.
        self.assertEqual(fake.commands[-4:], ['guest-sync-delimited', 'guest-fsfreeze-freeze',
                                              'guest-sync-delimited', 'guest-fsfreeze-thaw'])
        log = self.h.daemon_log_since(mark)
        frozen = log.find('guest filesystems frozen')
        transaction = log.find('"execute":"transaction"')
        thaw = log.find('"execute":"guest-fsfreeze-thaw"')
        self.assertTrue(0 <= frozen < transaction < thaw, 'freeze, transaction, thaw out of order in:\n' + log)
        # The snapshot's point in time (the old active file) holds the data.
        disks = self.h.get_property(dom, D, 'Disks')
        self.assertNotEqual(disks[0][2], img)
        self.h.flush_live(dom, 'vda')
        self.assertTrue(q.qemu_io_read_pattern(img, 0x5a, 0, MiB), 'the old active file holds the data written before')
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'running')

        # Without QUIESCE, no fsfreeze, agent or not.
        before = len(fake.commands)
        self.snapshot(dom, 's2', DISK_ONLY)
        self.assertEqual(fake.commands[before:], [])

    def test_freeze_refused(self):
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        fake.answers['guest-fsfreeze-freeze'] = {
            'error': {'class': 'GenericError', 'desc': 'failed to freeze /mnt: Operation not supported'}}
        disks = self.h.get_property(dom, D, 'Disks')
        with self.assertDBusError(E + 'QemuFailed') as err:
            self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        self.assertIn('failed to freeze /mnt: Operation not supported', str(err.exception))
        fake.wait_for('guest-fsfreeze-thaw')
        self.unchanged(dom, disks, img, 's1')

    def test_agent_never_answers_the_freeze(self):
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        fake.answers['guest-fsfreeze-freeze'] = None
        disks = self.h.get_property(dom, D, 'Disks')
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive') as err:
            self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, AGENT_TIMEOUT - 0.2)
        self.assertLess(elapsed, AGENT_TIMEOUT + 5)
        self.assertIn('did not answer guest-fsfreeze-freeze', str(err.exception))
        fake.wait_for('guest-fsfreeze-thaw')
        self.unchanged(dom, disks, img, 's1')
        q.wait_until(lambda: self.h.get_property(dom, D, 'AgentConnected'), 15, 'AgentConnected after the thaw')

    def test_agent_goes_away_during_the_freeze(self):
        # The connection closes while QEMU runs on (qemu-ga died): the
        # agent's fault, not QEMU's.
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        fake.answers['guest-fsfreeze-freeze'] = 'hang up'
        disks = self.h.get_property(dom, D, 'Disks')
        with self.assertDBusError(E + 'AgentUnresponsive') as err:
            self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        self.assertIn('went away during guest-fsfreeze-freeze', str(err.exception))
        self.unchanged(dom, disks, img, 's1')
        self.assertFalse(self.h.get_property(dom, D, 'AgentConnected'))

    def test_no_agent_in_the_guest(self):
        # The real channel, nobody behind it (a guest without qemu-ga).
        dom, img = self.define('vm')
        self.start(dom)
        disks = self.h.get_property(dom, D, 'Disks')
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive'):
            self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        self.assertLess(time.monotonic() - t0, AGENT_TIMEOUT + 5)
        self.unchanged(dom, disks, img, 's1')
        self.assertFalse(self.h.get_property(dom, D, 'AgentConnected'))
        # The guest and qsnapd go on: an ordinary snapshot works.
        self.snapshot(dom, 's2', DISK_ONLY)

    def test_crash_while_frozen_thaws_at_next_start(self):
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        disks = self.h.get_property(dom, D, 'Disks')
        mark, outcome = self.h.crash_at('create:frozen', dom, D, 'CreateSnapshot',
                                        ("<domainsnapshot><name>s1</name></domainsnapshot>", DISK_ONLY | QUIESCE),
                                        'st')
        self.assertIsInstance(outcome, q.DBusCallError)
        # The next qsnapd thawed the guest before it took its bus name.
        self.assertEqual(fake.fs_commands(), ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw'])
        self.assertIn('thawed the guest a QUIESCE snapshot left frozen', self.h.daemon_log_since(mark))
        self.unchanged(dom, disks, img, 's1')

    def test_refusals(self):
        plain, _ = self.define('plain', channel=False)
        dom, _ = self.define('vm')
        with self.assertDBusError(E + 'OperationInvalid') as err:
            self.snapshot(dom, 's1', DISK_ONLY | QUIESCE)
        self.assertIn('running guest', str(err.exception))
        self.start(dom)
        self.start(plain)
        with self.assertDBusError(E + 'InvalidArgument') as err:
            self.snapshot(dom, 's1', QUIESCE)
        self.assertIn('DISK_ONLY', str(err.exception))
        with self.assertDBusError(E + 'Unsupported') as err:
            self.snapshot(plain, 's1', DISK_ONLY | QUIESCE)
        self.assertIn('guest agent', str(err.exception))
        self.assertEqual(self.h.get_property(dom, D, 'Snapshots'), [])


class CheckpointQuiesceTest(QuiesceTestCase):
    CP_QUIESCE = 2

    def checkpoint(self, dom, name):
        return self.h.call(dom, D, 'CreateCheckpoint',
                           ('<domaincheckpoint><name>%s</name></domaincheckpoint>' % name, self.CP_QUIESCE), 'st',
                           timeout=60)

    def test_checkpoint_quiesce(self):
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        mark = self.h.daemon_log_mark()
        self.assertNotEqual(self.checkpoint(dom, 'c1'), '/')
        self.assertEqual(fake.fs_commands(), ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw'])
        log = self.h.daemon_log_since(mark)
        frozen = log.find('← {"return": 1}')
        transaction = log.find('"execute":"transaction"')
        thaw = log.find('"execute":"guest-fsfreeze-thaw"')
        self.assertTrue(0 <= frozen < transaction < thaw, 'freeze, transaction, thaw out of order in:\n' + log)

        # Refused: QemuFailed with the agent's words, thawed, no bitmap.
        fake.answers['guest-fsfreeze-freeze'] = {'error': {'class': 'GenericError', 'desc': 'fsfreeze is disabled'}}
        with self.assertDBusError(E + 'QemuFailed') as err:
            self.checkpoint(dom, 'c2')
        self.assertIn('fsfreeze is disabled', str(err.exception))
        fake.wait_for('guest-fsfreeze-thaw', 2)
        # Silent: AgentUnresponsive within the timeout, thawed, no bitmap.
        fake.answers['guest-fsfreeze-freeze'] = None
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive'):
            self.checkpoint(dom, 'c3')
        self.assertLess(time.monotonic() - t0, AGENT_TIMEOUT + 5)
        fake.wait_for('guest-fsfreeze-thaw', 3)
        self.assertEqual(len(self.h.get_property(dom, D, 'Checkpoints')), 1)
        nodes = self.h.qmp(dom, 'query-block')['return']
        bitmaps = [b['name'] for n in nodes for b in n.get('inserted', {}).get('dirty-bitmaps', [])]
        self.assertEqual(bitmaps, ['c1'])

        # qsnapd killed while the guest is frozen: the next one thaws it.
        fake.answers['guest-fsfreeze-freeze'] = {'return': 1}
        mark, outcome = self.h.crash_at('checkpoint-create:frozen', dom, D, 'CreateCheckpoint',
                                        ('<domaincheckpoint><name>c4</name></domaincheckpoint>', self.CP_QUIESCE),
                                        'st')
        self.assertIsInstance(outcome, q.DBusCallError)
        fake.wait_for('guest-fsfreeze-thaw', 4)
        self.assertIn('thawed the guest a QUIESCE checkpoint left frozen', self.h.daemon_log_since(mark))

    def test_refusals(self):
        plain, _ = self.define('plain', channel=False)
        dom, _ = self.define('vm')
        with self.assertDBusError(E + 'OperationInvalid'):
            self.checkpoint(dom, 'c1')
        with self.assertDBusError(E + 'Unsupported'):
            self.checkpoint(plain, 'c1')
        with self.assertDBusError(E + 'InvalidArgument'):
            self.h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 1 | 2),
                        'st')


class BackupQuiesceHelpers:
    """BackupBegin's QUIESCE (flag 2, qsnapd's own): a push backup and its checks."""
    BK_QUIESCE = 2

    def backup(self, dom, target, flags=BK_QUIESCE):
        xml = ("<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='%s'/></disk></disks>"
               "</domainbackup>" % target)
        return self.h.call(dom, D, 'BackupBegin', (xml, '', flags), 'sst', timeout=60)

    def wait_job_end(self, job, timeout=120):
        state = q.spin(lambda: (lambda s: s if s in ('completed', 'failed', 'cancelled') else None)(
            self.h.get_property(job, q.JOB_IFACE, 'State')), timeout)
        self.assertEqual(state, 'completed', 'backup job %s' % job)

    def nothing_left(self, dom, target, jobs=()):
        """No target, no new job (jobs: those there before), no QEMU job,
        no backup, no journal; the guest runs."""
        self.assertFalse(os.path.exists(target), 'backup target %s left behind' % target)
        self.assertEqual(self.h.get_property(dom, D, 'Jobs'), list(jobs))
        with self.assertDBusError(E + 'OperationInvalid'):
            self.h.call(dom, D, 'BackupGetXMLDesc')
        self.assertEqual(self.h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has a job')
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'running')
        ops = os.path.join(self.h.state_dir, 'ops')
        left = [f for f in (os.listdir(ops) if os.path.isdir(ops) else []) if f.endswith('.backup')]
        self.assertEqual(left, [], 'the backup journal is left behind')


class BackupQuiesceTest(BackupQuiesceHelpers, QuiesceTestCase):
    def test_backup_quiesce(self):
        dom, img = self.define('vm')
        self.start(dom)
        fake = self.with_fake_agent(dom)
        target = self.h.image_path('b1.qcow2')
        mark = self.h.daemon_log_mark()
        job = self.backup(dom, target)
        # The thaw went out on the transaction's answer (the reply does not wait for the agent's).
        fake.wait_for('guest-fsfreeze-thaw')
        self.assertEqual(fake.fs_commands(), ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw'])
        log = self.h.daemon_log_since(mark)
        frozen = log.find('← {"return": 1}')
        transaction = log.find('"execute":"transaction"')
        thaw = log.find('"execute":"guest-fsfreeze-thaw"')
        self.assertTrue(0 <= frozen < transaction < thaw, 'freeze, transaction, thaw out of order in:\n' + log)
        self.wait_job_end(job)
        jobs = self.h.get_property(dom, D, 'Jobs')
        q.qemu_img_check(target)
        r = q.run([q.QEMU_IMG, 'compare', '-U', img, target])
        self.assertEqual(r.returncode, 0, 'the backup differs from the idle disk: %s' % r.stdout)

        # Refused: QemuFailed with the agent's words, thawed, nothing left.
        target = self.h.image_path('b2.qcow2')
        fake.answers['guest-fsfreeze-freeze'] = {'error': {'class': 'GenericError', 'desc': 'fsfreeze is disabled'}}
        with self.assertDBusError(E + 'QemuFailed') as err:
            self.backup(dom, target)
        self.assertIn('fsfreeze is disabled', str(err.exception))
        fake.wait_for('guest-fsfreeze-thaw', 2)
        self.nothing_left(dom, target, jobs)
        # Silent: AgentUnresponsive within the timeout, thawed, nothing left.
        fake.answers['guest-fsfreeze-freeze'] = None
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive'):
            self.backup(dom, target)
        self.assertLess(time.monotonic() - t0, AGENT_TIMEOUT + 5)
        fake.wait_for('guest-fsfreeze-thaw', 3)
        self.nothing_left(dom, target, jobs)

        # qsnapd killed while the guest is frozen: the next one thaws it and
        # rolls the backup back.
        fake.answers['guest-fsfreeze-freeze'] = {'return': 1}
        xml = ("<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='%s'/></disk></disks>"
               "</domainbackup>" % target)
        mark, outcome = self.h.crash_at('backup:frozen', dom, D, 'BackupBegin', (xml, '', self.BK_QUIESCE), 'sst')
        self.assertIsInstance(outcome, q.DBusCallError)
        fake.wait_for('guest-fsfreeze-thaw', 4)
        self.assertIn('thawed the guest a QUIESCE backup left frozen', self.h.daemon_log_since(mark))
        self.nothing_left(dom, target)

    def test_refusals(self):
        plain, _ = self.define('plain', channel=False)
        dom, _ = self.define('vm')
        target = self.h.image_path('b.qcow2')
        # Offline backups cannot quiesce.
        with self.assertDBusError(E + 'OperationInvalid'):
            self.backup(dom, target)
        with self.assertDBusError(E + 'Unsupported'):
            self.backup(plain, target)
        self.start(plain)
        with self.assertDBusError(E + 'Unsupported'):
            self.backup(plain, target)
        self.assertFalse(os.path.exists(target))
        self.assertEqual(self.h.get_property(plain, D, 'Jobs'), [])


class RealGuestTest(BackupQuiesceHelpers, QuiesceTestCase):
    def guest(self, **kw):
        gu = g.Guest(self.h, 'rg', devices=g.agent_channel_xml(), **kw)
        self.addCleanup(gu.close)
        gu.start()
        q.wait_until(lambda: self.h.get_property(gu.path, D, 'AgentConnected'), g.BOOT_TIMEOUT, 'AgentConnected')
        gu.wait_count((gu.count or 0) + 2)
        return gu

    def test_qsnapd_killed_while_frozen_then_quiesced_snapshot_is_clean(self):
        """One boot (a boot is the cost here): qsnapd killed while the guest
        is frozen, the next one thaws it; then a QUIESCE snapshot is a clean
        filesystem without journal replay and the writer goes on."""
        gu = self.guest()
        disks = self.h.get_property(gu.path, D, 'Disks')
        mark, outcome = self.h.crash_at('create:frozen', gu.path, D, 'CreateSnapshot',
                                        ("<domainsnapshot><name>q1</name></domainsnapshot>", DISK_ONLY | QUIESCE),
                                        'st', start_again=False)
        self.assertIsInstance(outcome, q.DBusCallError)
        # Frozen, and nobody to thaw it: the writer's sync blocks.
        frozen_at = gu.count
        with self.assertRaises(TimeoutError):
            gu.wait_count(frozen_at + 3, timeout=6)
        self.h.start_daemon()
        self.assertIn('thawed the guest a QUIESCE snapshot left frozen', self.h.daemon_log_since(mark))
        gu.wait_count(gu.count + 3)   # the writer resumes
        self.unchanged(gu.path, disks, gu.disk, 'q1')

        # The agent answers again: a quiesced snapshot needs no journal replay.
        q.wait_until(lambda: self.h.get_property(gu.path, D, 'AgentConnected'), g.BOOT_TIMEOUT, 'AgentConnected')
        snap = self.snapshot(gu.path, 'q2', DISK_ONLY | QUIESCE)
        self.assertNotEqual(snap, '/')
        # Thawed: the writer goes on.
        gu.wait_count(gu.count + 3)
        disks = self.h.get_property(gu.path, D, 'Disks')
        self.assertNotEqual(disks[0][2], gu.disk)
        r = g.verify_image(gu.disk)
        self.assertFalse(r['journal_replayed'], 'a quiesced snapshot needs no journal replay')
        self.assertEqual(r['fsck_rc'], 0, r['fsck_output'])
        self.assertTrue(r['files'])
        self.assertEqual([n for n, ok in r['files'].items() if not ok], [])

    def test_quiesced_backup_is_clean_then_agent_killed(self):
        """One boot: a QUIESCE push backup of the writing guest is a clean
        filesystem without journal replay; then qemu-ga dies in the guest
        (once its thaw for that backup was done) and the next QUIESCE
        snapshot and backup are AgentUnresponsive with nothing changed or
        left behind."""
        gu = self.guest(cmdline_extra='qsnap.kill_agent=thaw')
        target = self.h.image_path('rg-backup.qcow2')
        job = self.backup(gu.path, target)
        self.wait_job_end(job)
        r = g.verify_image(target)
        self.assertFalse(r['journal_replayed'], 'a quiesced backup needs no journal replay')
        self.assertEqual(r['fsck_rc'], 0, r['fsck_output'])
        self.assertTrue(r['files'])
        self.assertEqual([n for n, ok in r['files'].items() if not ok], [])
        os.unlink(target)
        jobs = self.h.get_property(gu.path, D, 'Jobs')

        gu.serial.wait_for(r'^QSNAP-GUEST-AGENT-KILLED', what='qemu-ga killed in the guest')
        # A QUIESCE snapshot: AgentUnresponsive within the agent timeout,
        # nothing changed, the guest keeps writing.
        disks = self.h.get_property(gu.path, D, 'Disks')
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive'):
            self.snapshot(gu.path, 'q1', DISK_ONLY | QUIESCE)
        self.assertLess(time.monotonic() - t0, 2 * AGENT_TIMEOUT + 5)
        self.unchanged(gu.path, disks, gu.disk, 'q1')
        gu.wait_count(gu.count + 3)
        # A QUIESCE backup: the same, and nothing left behind.
        t0 = time.monotonic()
        with self.assertDBusError(E + 'AgentUnresponsive'):
            self.backup(gu.path, target)
        self.assertLess(time.monotonic() - t0, 2 * AGENT_TIMEOUT + 5)
        self.nothing_left(gu.path, target, jobs)
        gu.wait_count(gu.count + 3)   # the guest keeps running and writing
        self.assertFalse(self.h.get_property(gu.path, D, 'AgentConnected'))

if __name__ == '__main__':
    q.main()
