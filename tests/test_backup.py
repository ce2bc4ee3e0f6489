#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Backups end to end (DESIGN.md section 2 BackupBegin, BackupGetXMLDesc,
BlockJob1 of type backup; docs/checkpoints.md 2.10, 2.11, 3, 7), with the
real qsnapd, the real polkitd and real QEMU.

Every test runs one domain on a 32 MiB qcow2 disk vda holding pattern A
(0xa1 in [0, 8 MiB), 0xa2 in [16, 20 MiB)) written with qemu-io before
the domain starts. The reference is the guest's view at the backup's
start, taken from the host as a raw file. While a backup runs the guest
writes pattern B (0xb1) over parts of A; the backup must hold A, the live
disk B. Throttled tests slow QEMU's copy with the test hook
QSNAPD_TEST_BACKUP_SPEED (bytes/s per disk) so that the writes land while
the job runs (checked: State running, Cur < End, before the write).

- Push, full: BackupBegin returns a BlockJob1 (InterfacesAdded, Type
  backup, Disk vda); BackupGetXMLDesc names the default target
  (<active file>.<start time>, qcow2); a second BackupBegin is Busy and
  changes nothing; Progress signals; Completed('completed'); the target
  (mode 0600, standalone qcow2, qemu-img check clean) equals the reference
  (qemu-img compare) although the guest wrote B meanwhile, and the guest
  reads B; QEMU keeps no node on the target and no job; BackupGetXMLDesc is
  OperationInvalid afterwards.
- Push, Abort: canceled, the target qsnapd created is gone, no node left.
- Push targets: raw (<driver type='raw'/>) and REUSE_EXTERNAL (the same
  file, mode kept) equal the reference; a target through a symlink is
  PathNotAllowed with and without REUSE_EXTERNAL, nothing created.
- Push onto an 8 MiB tmpfs: Completed('failed', QEMU's "No space left on
  device"), the partial target removed, the guest runs on.
- Pull, full: the NBD export on the default socket (in the runtime dir)
  converted with qemu-img while the guest writes B equals the reference;
  BackupGetXMLDesc names socket, scratch file and export; the pushed-aside
  bytes show as Progress signals; Abort ends it
  'completed', the scratch file and the socket are gone, no node left.
- kill -9 of qsnapd during a throttled push: the next qsnapd shows the same
  job path running on its first answer, the job completes, the target
  equals the reference. During a pull: the export keeps serving while no
  qsnapd runs and after, the job is adopted, Abort cleans up. With QEMU
  killed too: the job is reported failed under its path and the files
  qsnapd created are gone.
- Crash points (QSNAPD_TEST_CRASH_AT) before QEMU runs the jobs: the next
  qsnapd rolls back (no job, node, file, NBD server); from "running" on it
  adopts (a push's journal still says "transaction" there: QEMU's jobs
  tell); at "pending" the push completes under the next qsnapd. Killed at
  "running" with QEMU killed too: no job (the caller had no reply), no
  file, no journal.
- Stop of the domain during a push and a pull: failed, files removed.
- Two disks: one job (Disk "", End over both); a pull with the caller's
  socket, scratch files and export name; a pull of vda alongside a
  BlockPull of vdb (vda is Busy for block jobs, vdb is not).
- Incremental since a checkpoint (made by CreateCheckpoint or by
  checkpoint_xml in the backup's own transaction): the incremental target
  holds exactly the changed clusters (qemu-img map), full + incremental
  equal the disk (qemu-img rebase -u, compare); a pull exports the changed
  extents as qemu:dirty-bitmap:backup-vda; a missing checkpoint is
  NoSuchCheckpoint, a bitmap removed by hand OperationInvalid; a failed
  backup creates no checkpoint; no temporary bitmap stays.
- Offline (shut-off domain), by a paused -machine none QEMU of qsnapd's
  own: full push equals the disk; incremental push holds exactly the
  changed clusters and full + incremental equal the disk; checkpoint_xml
  creates the checkpoint (its bitmap added after the backup, c1's left as
  it was); pull over a UNIX socket exports the disk's own node with the
  dirty bitmap (qemu-img map, convert == the disk); Start is Busy
  meanwhile, the domain stays shut off; Abort and kill -9 at every
  backup-offline:* crash point leave no target, bitmap, checkpoint, QEMU
  or journal (a backup that ran is shown failed under its path); its QEMU
  killed: failed, target removed, the domain starts. A
  shut-off domain attached through <qsnap:monitor> is NotRunning.
- TCP: a free port chosen, shown by BackupGetXMLDesc; TLS with client
  certificates of a CA made with openssl: plain NBD refused, the
  certificate's client reads the point in time; missing credentials
  OperationInvalid. The same for a shut-off domain's paused QEMU: a full
  pull over TCP and an incremental pull over TLS read back equal to the
  disk, the dirty extents over TLS exactly the writes since c1.
- Refusals change nothing and create no file: InvalidXML, NoSuchDisk,
  InvalidArgument, AlreadyExists, PathNotAllowed, Unsupported, NotRunning;
  uid 65534 → AccessDenied.
"""

import json
import os
import re
import stat
import time
import xml.etree.ElementTree as ET

import qsnaptest as q
from test_blockjobs import BlockJobTestCase, D, J, E, MiB, variant_text

A1, A2, B = 0xa1, 0xa2, 0xb1
DISK_SIZE = '32M'
REUSE_EXTERNAL = 1
SPEED = 2 * MiB


def push_xml(target=None, fmt=None, disk='vda'):
    inner = ''
    if target:
        inner = "<target file='%s'/>" % target
    if fmt:
        inner += "<driver type='%s'/>" % fmt
    return ("<domainbackup mode='push'><disks><disk name='%s' type='file'>%s</disk></disks></domainbackup>"
            % (disk, inner))


def pull_xml(socket=None, scratch=None):
    server = "<server transport='unix' socket='%s'/>" % socket if socket else ''
    disk = "<disk name='vda' type='file'><scratch file='%s'/></disk>" % scratch if scratch else "<disk name='vda'/>"
    return "<domainbackup mode='pull'>%s<disks>%s</disks></domainbackup>" % (server, disk)


class BackupTestCase(BlockJobTestCase):
    speed = 0   # QSNAPD_TEST_BACKUP_SPEED for the test's qsnapd

    def setUp(self):
        old = os.environ.get('QSNAPD_TEST_BACKUP_SPEED')
        if self.speed:
            os.environ['QSNAPD_TEST_BACKUP_SPEED'] = str(self.speed)
        else:
            os.environ.pop('QSNAPD_TEST_BACKUP_SPEED', None)

        def restore():
            if old is None:
                os.environ.pop('QSNAPD_TEST_BACKUP_SPEED', None)
            else:
                os.environ['QSNAPD_TEST_BACKUP_SPEED'] = old
        self.addCleanup(restore)
        super().setUp()

    def make_domain(self, start=True):
        h = self.h
        self.filler_mib = 0
        img = h.create_image('disk.qcow2', size=DISK_SIZE)
        q.qemu_io_write_pattern(img, A1, 0, 8 * MiB)
        q.qemu_io_write_pattern(img, A2, 16 * MiB, 4 * MiB)
        dom = h.define_domain('vm', [q.Disk('vda', img)])
        if start:
            h.call(dom, D, 'Start', (0,), 't')
        self.img = img
        return dom, img

    def begin(self, dom, xml, checkpoint_xml='', flags=0):
        return self.h.call(dom, D, 'BackupBegin', (xml, checkpoint_xml, flags), 'sst')

    def backup_xml(self, dom):
        return ET.fromstring(self.h.call(dom, D, 'BackupGetXMLDesc'))

    def reference(self, dom, name='reference.raw'):
        """The guest's view now, as a raw file (after a flush)."""
        self.flush(dom)
        return self.raw_copy(self.img, name)

    def write_b_while_running(self, dom, job):
        """Pattern B over parts of A while the job still runs."""
        self.assertEqual(self.jprop(job, 'State'), 'running', 'the backup ended before the guest wrote')
        self.h.write_pattern_live(dom, 'vda', B, 0, MiB)
        self.h.write_pattern_live(dom, 'vda', B, 17 * MiB, MiB)
        self.assertEqual(self.jprop(job, 'State'), 'running', 'the backup ended while the guest wrote')

    def unthrottle(self, dom):
        """What had to happen while the backup runs has happened: the rest
        of the copy at full speed, rather than waiting out SPEED over the
        whole disk (16 s of 32 MiB at 2 MiB/s). qsnapd's backup job takes
        no SetSpeed (Unsupported), so QEMU's own backup jobs are told
        directly (block-job-set-speed through the monitor passthrough)."""
        jobs = [j['id'] for j in self.h.qmp(dom, 'query-jobs')['return'] if j['type'] == 'backup']
        self.assertTrue(jobs, 'QEMU runs no backup job to unthrottle')
        for job_id in jobs:
            r = self.h.qmp(dom, 'block-job-set-speed', {'device': job_id, 'speed': 0})
            self.assertIn('return', r, 'block-job-set-speed %s: %s' % (job_id, r))

    def assert_guest_has_b(self, dom):
        self.h.verify_pattern_live(dom, 'vda', B, 0, MiB, 'guest after the backup')
        self.h.verify_pattern_live(dom, 'vda', B, 17 * MiB, MiB, 'guest after the backup')

    def assert_equal_images(self, raw, img, fmt='qcow2', what=''):
        r = q.run([q.QEMU_IMG, 'compare', '-U', '-f', 'raw', '-F', fmt, raw, img])
        self.assertEqual(r.returncode, 0, '%s: qemu-img compare %s %s: %s' % (what, raw, img,
                                                                           (r.stdout + r.stderr).strip()))

    def assert_no_backup_left(self, dom, files):
        h = self.h
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has a job')
        nodes = h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
        left = sorted(n['node-name'] for n in nodes if n['node-name'].startswith('bk'))
        self.assertEqual(left, [], 'QEMU still has backup nodes')
        # QEMU got the targets as descriptors: none of them is still open
        # (no node, no fd set left; /proc/PID/fd says so).
        held = sorted((fd, f) for fd, f in h.qemu_open_files(dom).items() if f in files)
        self.assertEqual(held, [], 'QEMU still holds backup files')
        with self.assertDBusError(E + 'OperationInvalid'):
            h.call(dom, D, 'BackupGetXMLDesc')

    def qemu_dead(self, pid):
        def gone():
            try:
                with open('/proc/%d/stat' % pid) as f:
                    return f.read().split(')')[1].split()[0] == 'Z'
            except OSError:
                return True
        self.assertTrue(q.spin(gone, 10), 'QEMU %d still runs' % pid)

    def nbd_convert(self, socket, export, out):
        r = q.run([q.QEMU_IMG, 'convert', '-f', 'raw', '-O', 'raw',
                   'nbd+unix:///%s?socket=%s' % (export, socket), out], timeout=120)
        self.assertEqual(r.returncode, 0, 'qemu-img convert from NBD: %s' % r.stderr)
        return out

    def default_target(self, dom, job):
        t = self.backup_xml(dom).find("disks/disk[@name='vda']/target")
        return t.get('file')


# --------------------------------------------------------------------------

class PushTest(BackupTestCase):
    speed = SPEED

    def test_push_full_while_guest_writes(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        rec = q.TimedRecorder(h.client)
        t0 = time.time()
        job = self.begin(dom, push_xml())
        self.assertTrue(job.startswith(dom + '/job/backup'), job)
        added = rec.wait_for(lambda s: s.member == 'InterfacesAdded' and s.args[0] == job)
        self.assertEqual(added.args[1][J]['Type'], 'backup')
        self.assertEqual(added.args[1][J]['Disk'], 'vda')
        self.assertEqual(self.dprop(dom, 'Jobs'), [job])

        desc = self.backup_xml(dom)
        self.assertEqual(desc.get('mode'), 'push')
        disk = desc.find("disks/disk[@name='vda']")
        self.assertEqual(disk.get('backup'), 'yes')
        target = disk.find('target').get('file')
        self.assertEqual(disk.find('driver').get('type'), 'qcow2')
        m = re.fullmatch(re.escape(img) + r'\.(\d+)', target)
        self.assertTrue(m, 'default target %s' % target)
        self.assertLessEqual(abs(int(m.group(1)) - t0), 5)
        st = os.lstat(target)
        self.assertEqual(st.st_mode & 0o777, 0o600)

        # A second backup: Busy, and nothing of it appears (the first one's
        # target grows meanwhile, so no whole fingerprint here).
        qemu_jobs = [j['id'] for j in h.qmp(dom, 'query-jobs')['return']]
        with self.assertDBusError(E + 'Busy'):
            self.begin(dom, push_xml(h.image_path('second.qcow2')))
        self.assertFalse(os.path.exists(h.image_path('second.qcow2')))
        self.assertEqual(self.dprop(dom, 'Jobs'), [job])
        self.assertEqual([j['id'] for j in h.qmp(dom, 'query-jobs')['return']], qemu_jobs)
        self.assertEqual(self.backup_xml(dom).find("disks/disk[@name='vda']/target").get('file'), target)

        self.write_b_while_running(dom, job)
        self.unthrottle(dom)
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        self.assert_one_end(rec, dom, job, 'backup', 'completed')
        self.assert_progress(rec, job, 'push')
        props = h.get_all(job, J)
        self.assertEqual(props['Cur'], props['End'])
        self.assertGreater(props['End'], 0)

        self.assertTrue(os.path.exists(target), 'the completed target is gone')
        self.assertIsNone(self.backing_of(target))
        self.assert_equal_images(ref, target, what='the backup against the disk at its start')
        q.qemu_img_check(target)
        self.assert_guest_has_b(dom)
        self.assert_no_backup_left(dom, [target])
        # the backup really differs from the live disk now
        self.flush(dom)
        r = q.run([q.QEMU_IMG, 'compare', '-U', img, target])
        self.assertEqual(r.returncode, 1, 'the live disk should differ from the backup: %s' % r.stdout)

    def test_push_abort_removes_target(self):
        h = self.h
        dom, img = self.make_domain()
        target = h.image_path('abort.qcow2')
        rec = h.record_signals()
        job = self.begin(dom, push_xml(target))
        self.assertTrue(os.path.exists(target))
        self.wait_cur(job, 1)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'canceled')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        self.assertFalse(os.path.exists(target), 'the aborted target was left behind')
        self.assert_no_backup_left(dom, [target])
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        # a new backup can start
        job2 = self.begin(dom, push_xml(target))
        h.call(job2, J, 'Abort', (0,), 't')
        self.assertFalse(os.path.exists(target))


class PushTargetTest(BackupTestCase):
    """Issue #12's push targets beyond the default qcow2: <driver
    type='raw'/>, REUSE_EXTERNAL into a file that exists (used as it is,
    not recreated), and a target through a symlink (PathNotAllowed,
    nothing created at either end)."""
    speed = SPEED

    def push_and_check(self, dom, xml, target, fmt, flags=0):
        h = self.h
        ref = self.reference(dom)
        rec = h.record_signals()
        job = self.begin(dom, xml, '', flags)
        self.assertEqual(self.backup_xml(dom).find("disks/disk[@name='vda']/driver").get('type'), fmt)
        self.write_b_while_running(dom, job)
        self.unthrottle(dom)
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        self.assert_equal_images(ref, target, fmt=fmt, what='the %s backup against the disk at its start' % fmt)
        self.assertEqual(q.qemu_img_info(target)['format'], fmt)
        self.assert_no_backup_left(dom, [target])

    def test_raw_target(self):
        h = self.h
        dom, img = self.make_domain()
        target = h.image_path('full.raw')
        self.push_and_check(dom, push_xml(target, 'raw'), target, 'raw')
        self.assertEqual(os.stat(target).st_mode & 0o777, 0o600)

    def test_reuse_external(self):
        h = self.h
        dom, img = self.make_domain()
        target = h.create_image('reused.qcow2', size=DISK_SIZE)
        q.qemu_io_write_pattern(target, 0xee, 28 * MiB, MiB)   # stale data where the disk has none
        os.chmod(target, 0o640)
        ino = os.stat(target).st_ino
        self.push_and_check(dom, push_xml(target), target, 'qcow2', REUSE_EXTERNAL)
        self.assertEqual(os.stat(target).st_ino, ino, 'REUSE_EXTERNAL recreated the target')
        self.assertEqual(os.stat(target).st_mode & 0o777, 0o640)

    def test_symlink_target_refused(self):
        h = self.h
        dom, img = self.make_domain()
        behind = h.image_path('behind.qcow2')
        link = h.image_path('link.qcow2')
        os.symlink(behind, link)
        for flags in (0, REUSE_EXTERNAL):
            with self.assertDBusError(E + 'PathNotAllowed'):
                self.begin(dom, push_xml(link), '', flags)
            self.assertTrue(os.path.islink(link))
            self.assertEqual(self.dprop(dom, 'Jobs'), [])
            self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
            if flags == 0:
                self.assertFalse(os.path.exists(behind), 'a file was created through the symlink')
                # then with a file behind the link, REUSE_EXTERNAL
                q.qemu_img_create(behind, DISK_SIZE)
                before = q.qemu_img_info(behind)
        self.assertEqual(q.qemu_img_info(behind), before)
        # the folder itself is allowed: a plain file there is taken
        plain = h.image_path('plain.qcow2')
        job = self.begin(dom, push_xml(plain))
        self.assertTrue(os.path.exists(plain))
        h.call(job, J, 'Abort', (0,), 't')
        self.assertFalse(os.path.exists(plain))


class NoSpaceTest(BackupTestCase):
    def test_push_onto_full_tmpfs(self):
        h = self.h
        tiny = h.image_path('tiny')
        os.mkdir(tiny)
        r = q.run(['mount', '-t', 'tmpfs', '-o', 'size=8M,mode=0700', 'qsnapt-tiny', tiny])
        self.assertEqual(r.returncode, 0, 'mount tmpfs: %s' % r.stderr)
        self.addCleanup(lambda: q.run(['umount', '-l', tiny]))
        h.daemon_args.append('--image-root=' + tiny)
        h.restart_daemon(kill=False)
        dom, img = self.make_domain()
        target = os.path.join(tiny, 'full.qcow2')
        rec = h.record_signals()
        job = self.begin(dom, push_xml(target), '<domaincheckpoint><name>c9</name></domaincheckpoint>')
        status, error = self.wait_end(rec, job, timeout=60)
        self.assertEqual(status, 'failed')
        self.assertIn('No space left on device', error)
        props = self.assert_one_end(rec, dom, job, 'backup', 'failed', error)
        self.assertEqual(props['Error'], error)
        self.assertFalse(os.path.exists(target), 'the partial target was left behind')
        self.assertEqual(os.listdir(tiny), [])
        self.assert_no_backup_left(dom, [target])
        # the checkpoint of a failed backup is not created, its bitmap not left
        with self.assertDBusError(E + 'NoSuchCheckpoint'):
            h.call(dom, D, 'LookupCheckpoint', ('c9',), 's')
        nodes = h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
        self.assertEqual([b for n in nodes for b in n.get('dirty-bitmaps', [])
                          if not b.get('name', '').startswith('qsnap-size-')], [])
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        h.verify_pattern_live(dom, 'vda', A1, 0, 8 * MiB, 'guest after the failed backup')


class PullTest(BackupTestCase):
    def test_pull_full_while_guest_writes(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        rec = h.record_signals()
        job = self.begin(dom, pull_xml())
        desc = self.backup_xml(dom)
        self.assertEqual(desc.get('mode'), 'pull')
        server = desc.find('server')
        self.assertEqual(server.get('transport'), 'unix')
        socket = server.get('socket')
        self.assertEqual(os.path.dirname(socket), h.runtime_dir)
        self.assertTrue(stat.S_ISSOCK(os.lstat(socket).st_mode), 'no socket at %s' % socket)
        disk = desc.find("disks/disk[@name='vda']")
        self.assertEqual(disk.get('exportname'), 'vda')
        scratch = disk.find('scratch').get('file')
        self.assertEqual(os.path.dirname(scratch), h.runtime_dir)
        self.assertTrue(os.path.exists(scratch))

        # The guest overwrites A; the export still shows A.
        self.write_b_while_running(dom, job)
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the export against the disk at backup start: %s' % r.stdout)
        # Cur follows QEMU's counters at the poll's pace: the old data the writes pushed aside.
        self.wait_cur(job, 2 * MiB)
        # ... and reaches the bus as Progress signals (issue #12: the
        # fleecing job's counters), not only as the Cur property.
        q.wait_until(lambda: any(c >= 2 * MiB for c, e in self.progress(rec, job)), 10,
                     'a Progress signal for the pushed-aside 2 MiB')
        self.assert_progress(rec, job, 'pull')
        self.assertEqual(self.jprop(job, 'State'), 'running', 'a pull runs until Abort')
        # read-only: writing into the export fails
        r = q.run([q.QEMU_IO, '-f', 'raw', '-c', 'write -P 0xcc 0 4k', 'nbd+unix:///vda?socket=%s' % socket])
        self.assertNotEqual(r.returncode, 0, 'the export took a write')

        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertFalse(os.path.exists(scratch), 'the scratch file was left behind')
        self.assertFalse(os.path.exists(socket), 'the socket was left behind')
        self.assert_no_backup_left(dom, [scratch])
        self.assert_guest_has_b(dom)


class RestartTest(BackupTestCase):
    speed = SPEED

    def first_get_all(self, path):
        client = self.h.new_client()
        try:
            return client.get_all(path, J)
        finally:
            client.close()

    def test_kill9_during_push(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        # with a checkpoint created by the backup: stored by the adopting qsnapd at the end
        job = self.begin(dom, push_xml(), '<domaincheckpoint><name>k1</name></domaincheckpoint>')
        target = self.default_target(dom, job)
        self.wait_cur(job, 1)
        before = h.get_all(job, J)
        h.restart_daemon()
        after = self.first_get_all(job)
        self.assertEqual(after['State'], 'running', 'State of the adopted backup')
        for p in ('Type', 'Disk', 'Domain', 'StartTime'):
            self.assertEqual(after[p], before[p], 'adopted backup: %s' % p)
        self.assertEqual(self.dprop(dom, 'Jobs'), [job])
        self.assertEqual(self.backup_xml(dom).find("disks/disk[@name='vda']/target").get('file'), target)
        rec = h.record_signals()
        self.write_b_while_running(dom, job)
        self.unthrottle(dom)
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        self.assert_equal_images(ref, target, what='the adopted backup against the disk at its start')
        self.assert_guest_has_b(dom)
        self.assert_no_backup_left(dom, [target])
        self.assertTrue(target.endswith('.k1'), target)
        h.call(dom, D, 'LookupCheckpoint', ('k1',), 's')

    def test_kill9_during_push_then_abort(self):
        h = self.h
        dom, img = self.make_domain()
        job = self.begin(dom, push_xml())
        target = self.default_target(dom, job)
        self.wait_cur(job, 1)
        h.restart_daemon()
        rec = h.record_signals()
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        self.assertFalse(os.path.exists(target), 'the aborted target was left behind')
        self.assert_no_backup_left(dom, [target])

    def test_kill9_during_pull(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        job = self.begin(dom, pull_xml())
        desc = self.backup_xml(dom)
        socket = desc.find('server').get('socket')
        scratch = desc.find("disks/disk[@name='vda']/scratch").get('file')
        h.kill_daemon()
        # The export serves while no qsnapd runs.
        out = self.nbd_convert(socket, 'vda', h.image_path('while-away.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the export while qsnapd was away: %s' % r.stdout)
        h.start_daemon()
        self.assertEqual(self.first_get_all(job)['State'], 'running')
        self.write_b_while_running(dom, job)
        out = self.nbd_convert(socket, 'vda', h.image_path('after.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the export after the restart: %s' % r.stdout)
        rec = h.record_signals()
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertFalse(os.path.exists(scratch), 'the scratch file was left behind')
        self.assertFalse(os.path.exists(socket), 'the socket was left behind')
        self.assert_no_backup_left(dom, [scratch])

    def test_qemu_gone_too(self):
        h = self.h
        dom, img = self.make_domain()
        for mode in ('push', 'pull'):
            h.call(dom, D, 'Start', (0,), 't') if self.dprop(dom, 'State') != 'running' else None
            job = self.begin(dom, push_xml() if mode == 'push' else pull_xml())
            desc = self.backup_xml(dom)
            files = [e.get('file') for e in desc.iter() if e.tag in ('target', 'scratch')]
            self.assertEqual(len(files), 1)
            self.wait_cur(job, 1) if mode == 'push' else None
            pid = h.qemu_pid(dom)
            h.kill_daemon()
            os.kill(pid, 9)
            self.qemu_dead(pid)
            h.start_daemon()
            props = self.first_get_all(job)
            self.assertEqual(props['State'], 'failed', mode)
            self.assertIn('QEMU went away', props['Error'])
            self.assertFalse(os.path.exists(files[0]), '%s: %s was left behind' % (mode, files[0]))
            self.assertNotEqual(self.dprop(dom, 'State'), 'running')
            self.assertEqual([f for f in os.listdir(h.runtime_dir) if 'scratch' in f or f.endswith('.sock')], [])
            h.call(dom, D, 'Stop', (0,), 't') if self.dprop(dom, 'State') != 'shutoff' else None

    def test_stop_during_backup(self):
        h = self.h
        dom, img = self.make_domain()
        for xml in (push_xml(), pull_xml()):
            rec = h.record_signals()
            job = self.begin(dom, xml)
            files = [e.get('file') for e in self.backup_xml(dom).iter() if e.tag in ('target', 'scratch')]
            h.call(dom, D, 'Stop', (0,), 't')
            status, error = self.wait_end(rec, job)
            self.assertEqual(status, 'failed')
            self.assertTrue('stopped before the backup' in error or 'QEMU went away' in error, error)
            self.assertFalse(os.path.exists(files[0]), '%s was left behind' % files[0])
            with self.assertDBusError(E + 'OperationInvalid'):
                h.call(dom, D, 'BackupGetXMLDesc')
            h.call(dom, D, 'Start', (0,), 't')


class TwoDiskTest(BackupTestCase):
    """vda (32 MiB, pattern A) and vdb (16 MiB, 0xc1 in its first 4 MiB):
    one job for both, Disk "", Cur/End over both."""

    def make_two(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        vdb = h.create_image('vdb.qcow2', size='16M')
        q.qemu_io_write_pattern(vdb, 0xc1, 0, 4 * MiB)
        xml = q.domain_xml('vm', [q.Disk('vda', img), q.Disk('vdb', vdb)])
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st'), dom)
        h.call(dom, D, 'Start', (0,), 't')
        h.flush_live(dom, 'vdb')
        return dom, img, vdb

    def test_push_two_disks(self):
        h = self.h
        dom, img, vdb = self.make_two()
        ref_a = self.reference(dom, 'ref-a.raw')
        ref_b = self.raw_copy(vdb, 'ref-b.raw')
        rec = h.record_signals()
        job = self.begin(dom, "<domainbackup/>")
        self.assertEqual(self.jprop(job, 'Disk'), '')
        desc = self.backup_xml(dom)
        targets = {d.get('name'): d.find('target').get('file') for d in desc.findall('disks/disk')}
        self.assertEqual(sorted(targets), ['vda', 'vdb'])
        self.assertEqual(self.wait_end(rec, job, timeout=60), ('completed', ''))
        self.assertEqual(self.jprop(job, 'End'), 48 * MiB, 'End adds up both disks')
        self.assertEqual(self.jprop(job, 'Cur'), 48 * MiB)
        self.assert_equal_images(ref_a, targets['vda'], what='vda')
        self.assert_equal_images(ref_b, targets['vdb'], what='vdb')
        self.assert_no_backup_left(dom, list(targets.values()))

    def test_alongside_a_block_job_on_the_other_disk(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        bbase = h.create_image('b-base.qcow2', size='16M')
        q.qemu_io_write_pattern(bbase, 0xc1, 0, 8 * MiB)
        btop = h.create_image('b-top.qcow2', size='16M', backing=bbase)
        xml = q.domain_xml('vm', [q.Disk('vda', img), q.Disk('vdb', btop)])
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st'), dom)
        h.call(dom, D, 'Start', (0,), 't')
        ref = self.reference(dom)
        rec = h.record_signals()
        pull = h.call(dom, D, 'BlockPull', ('vdb', MiB, 0), 'stt')
        job = self.begin(dom, "<domainbackup mode='pull'><disks><disk name='vda'/></disks></domainbackup>")
        self.assertEqual(self.jprop(pull, 'State'), 'running')
        # the backed-up disk is Busy for block jobs, the other one is not
        with self.assertDBusError(E + 'Busy'):
            h.call(dom, D, 'BlockPull', ('vda', 0, 0), 'stt')
        socket = self.backup_xml(dom).find('server').get('socket')
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, r.stdout)
        h.call(pull, J, 'SetSpeed', (0,), 't')
        self.assertEqual(self.wait_end(rec, pull), ('completed', ''))
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assert_no_backup_left(dom, [])

    def test_pull_two_disks_own_socket_and_scratch(self):
        h = self.h
        dom, img, vdb = self.make_two()
        ref_a = self.reference(dom, 'ref-a.raw')
        ref_b = self.raw_copy(vdb, 'ref-b.raw')
        socket = h.image_path('pull.sock')
        sa, sb = h.image_path('a.scratch'), h.image_path('b.scratch')
        xml = ("<domainbackup mode='pull'><server transport='unix' socket='%s'/><disks>"
               "<disk name='vda' exportname='first'><scratch file='%s'/></disk>"
               "<disk name='vdb'><scratch file='%s'/></disk></disks></domainbackup>" % (socket, sa, sb))
        job = self.begin(dom, xml)
        self.assertTrue(os.path.exists(sa) and os.path.exists(sb))
        self.assertEqual(os.lstat(sa).st_mode & 0o777, 0o600)
        desc = self.backup_xml(dom)
        self.assertEqual(desc.find('server').get('socket'), socket)
        self.assertEqual(desc.find("disks/disk[@name='vdb']").get('exportname'), 'vdb')
        self.write_b_while_running(dom, job)
        h.write_pattern_live(dom, 'vdb', B, 0, MiB)
        out_a = self.nbd_convert(socket, 'first', h.image_path('a.raw'))
        out_b = self.nbd_convert(socket, 'vdb', h.image_path('b.raw'))
        for ref, out in ((ref_a, out_a), (ref_b, out_b)):
            r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
            self.assertEqual(r.returncode, 0, '%s: %s' % (out, r.stdout))
        h.call(job, J, 'Abort', (0,), 't')
        for f in (socket, sa, sb):
            self.assertFalse(os.path.exists(f), '%s left behind' % f)
        self.assert_no_backup_left(dom, [sa, sb])


class CrashTest(BackupTestCase):
    """qsnapd killed at each crash point of a backup (QSNAPD_TEST_CRASH_AT):
    before QEMU runs the jobs the next qsnapd rolls the backup back (no job,
    no node, no file, no NBD server; a new backup starts); from "running"
    on it adopts it under its path and the backup ends as it would have."""
    speed = SPEED
    ROLLED_BACK = ('backup:prepared', 'backup:transaction')

    def wait_state(self, job, states, timeout=60):
        state = q.spin(lambda: (lambda s: s if s in states else None)(self.jprop(job, 'State')), timeout)
        self.assertIsNotNone(state, '%s did not reach %s (now %s)' % (job, states, self.jprop(job, 'State')))
        return state

    def test_crash_before_the_jobs_run_rolls_back(self):
        h = self.h
        dom, img = self.make_domain()
        for point in self.ROLLED_BACK:
            for mode in ('push', 'pull'):
                what = '%s at %s' % (mode, point)
                target = h.image_path('crash.qcow2')
                scratch = h.image_path('crash.scratch')
                socket = h.image_path('crash.sock')
                xml = push_xml(target) if mode == 'push' else pull_xml(socket, scratch)
                mark, outcome = h.crash_at(point, dom, D, 'BackupBegin', (xml, '', 0), 'sst')
                self.assertIsInstance(outcome, q.DBusCallError, what)
                self.assertEqual(self.dprop(dom, 'Jobs'), [], what)
                for f in (target, scratch, socket):
                    self.assertFalse(os.path.exists(f), '%s: %s left behind' % (what, f))
                self.assert_no_backup_left(dom, [target, scratch])
                self.assertEqual(h.qmp(dom, 'nbd-server-stop').get('error', {}).get('class'), 'GenericError',
                                 '%s: an NBD server is still running' % what)
                job = self.begin(dom, xml)
                h.call(job, J, 'Abort', (0,), 't')
                for f in (target, scratch, socket):
                    self.assertFalse(os.path.exists(f), '%s: %s left behind by the next backup' % (what, f))

    def test_crash_when_running_push_is_adopted(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        target = h.image_path('crash.qcow2')
        mark, outcome = h.crash_at('backup:running', dom, D, 'BackupBegin', (push_xml(target), '', 0), 'sst')
        jobs = self.dprop(dom, 'Jobs')
        self.assertEqual(len(jobs), 1, 'the adopted backup job')
        job = jobs[0]
        self.assertEqual(self.jprop(job, 'Type'), 'backup')
        self.write_b_while_running(dom, job)
        self.unthrottle(dom)
        self.assertEqual(self.wait_state(job, ('completed', 'failed', 'canceled'), 120), 'completed')
        self.assert_equal_images(ref, target, what='the adopted backup')
        self.assert_no_backup_left(dom, [target])

    def test_crash_when_running_pull_is_adopted(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        mark, outcome = h.crash_at('backup:running', dom, D, 'BackupBegin', (pull_xml(), '', 0), 'sst')
        job = self.dprop(dom, 'Jobs')[0]
        desc = self.backup_xml(dom)
        socket = desc.find('server').get('socket')
        scratch = desc.find("disks/disk[@name='vda']/scratch").get('file')
        self.write_b_while_running(dom, job)
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the adopted export: %s' % r.stdout)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertFalse(os.path.exists(scratch))
        self.assert_no_backup_left(dom, [scratch])

    def test_crash_before_the_reply_with_qemu_gone_leaves_nothing(self):
        """A live push's journal says "transaction" until after the reply
        (docs/decisions.md, Restart): qsnapd killed before the reply, with
        QEMU gone too, leaves no job (its caller never heard of one) and no
        file. With QEMU there, the same point is adopted
        (test_crash_when_running_push_is_adopted)."""
        h = self.h
        dom, img = self.make_domain()
        uuid = self.dprop(dom, 'UUID')
        target = h.image_path('crash.qcow2')
        mark, outcome = h.crash_at('backup:running', dom, D, 'BackupBegin', (push_xml(target), '', 0), 'sst',
                                   start_again=False)
        self.assertIsInstance(outcome, q.DBusCallError)
        with open(os.path.join(h.state_dir, 'ops', uuid + '.backup')) as f:
            self.assertEqual(json.load(f)['phase'], 'transaction')
        self.assertTrue(os.path.exists(target))
        with open(os.path.join(h.runtime_dir, uuid + '.pid')) as f:
            pid = int(f.read().strip())
        os.kill(pid, 9)
        self.qemu_dead(pid)
        h.start_daemon()
        self.assertEqual(self.dprop(dom, 'Jobs'), [])
        self.assertFalse(os.path.exists(target), 'the target was left behind')
        self.assertFalse(os.path.exists(os.path.join(h.state_dir, 'ops', uuid + '.backup')), 'the journal stayed')
        self.assertNotEqual(self.dprop(dom, 'State'), 'running')

    def test_crash_when_pending_completes(self):
        h = self.h
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_BACKUP_SPEED': '0'})
        dom, img = self.make_domain()
        ref = self.reference(dom)
        target = h.image_path('crash.qcow2')
        os.environ['QSNAPD_TEST_BACKUP_SPEED'] = '0'
        mark, job = h.crash_at('backup:pending', dom, D, 'BackupBegin', (push_xml(target), '', 0), 'sst')
        self.assertTrue(job.startswith(dom + '/job/backup'), job)
        self.assertEqual(self.wait_state(job, ('completed', 'failed', 'canceled')), 'completed')
        self.assert_equal_images(ref, target, what='the backup finished by the next qsnapd')
        self.assert_no_backup_left(dom, [target])


def offline_qemus(daemon_pid=None, root=None):
    """{pid: argv} of the paused QEMUs qsnapd runs for shut-off domains
    (-machine none, named "<domain>-offline"): the children of daemon_pid,
    or those holding a file under root (ours, not a parallel run's)."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().decode('utf-8', 'replace').split('\0')
        except (OSError, ValueError, IndexError):
            continue
        if (daemon_pid in (None, ppid) and (root is None or q._holds_file_in(int(entry), root))
                and '-machine' in argv and argv[argv.index('-machine') + 1] == 'none'
                and any(a.startswith('guest=') and ',' in a and a.split(',')[0].endswith('-offline') for a in argv)):
            found[int(entry)] = argv
    return found


class OfflineTest(BackupTestCase):
    """A shut-off domain's backup (docs/checkpoints.md 5): a paused
    -machine none QEMU of qsnapd's own runs the same steps as for a running
    domain with the images read-only: push full and incremental, pull
    (the disk's own node exported, no scratch), checkpoint_xml; the
    domain stays shut off and cannot start meanwhile; the images' bitmaps
    are untouched; Abort and every crash point leave nothing behind."""
    speed = SPEED
    CHANGED = [(4 * MiB, MiB), (24 * MiB, MiB)]
    # crash point -> whether the next qsnapd shows the backup failed under
    # its path (it ran), besides removing the target and any bitmap it added
    CRASH_POINTS = {
        'backup-offline:prepared': False,
        'backup-offline:transaction': False,
        'backup-offline:running': True,
        'backup-offline:pending': True,
        'backup-offline:checkpoint': True,
    }

    def assert_paused_qemu(self, what):
        """Exactly one paused QEMU of ours, with no guest; returns its pid."""
        found = offline_qemus(self.h.daemon_pid())
        self.assertEqual(len(found), 1, '%s: paused QEMUs %s' % (what, found))
        pid, argv = next(iter(found.items()))
        self.assertIn('-S', argv)
        self.assertNotIn('-device', argv, 'a paused QEMU with a device')
        return pid

    def assert_offline_done(self, dom, what):
        self.assertEqual(offline_qemus(self.h.daemon_pid()), {}, '%s: the paused QEMU is still there' % what)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff', what)
        with self.assertDBusError(E + 'OperationInvalid'):
            self.h.call(dom, D, 'BackupGetXMLDesc')
        ops = os.path.join(self.h.state_dir, 'ops')
        self.assertEqual([f for f in os.listdir(ops) if 'backup' in f] if os.path.isdir(ops) else [], [],
                         '%s: a backup journal was left' % what)

    def bitmaps(self, img):
        info = q.qemu_img_info(img)
        return {b['name']: sorted(b.get('flags', [])) for b in info.get('format-specific', {}).get('data', {})
                .get('bitmaps', [])}

    def write_c_and_stop(self, dom):
        h = self.h
        h.call(dom, D, 'Start', (0,), 't')
        for off, n in self.CHANGED:
            h.write_pattern_live(dom, 'vda', 0xc3, off, n)
        h.call(dom, D, 'Stop', (0,), 't')

    def test_push_shut_off(self):
        h = self.h
        # The checks below that need the backup running take well under a
        # second; 8 MiB/s keeps it running 4 s (not 16 s at SPEED).
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_BACKUP_SPEED': str(8 * MiB)})
        dom, img = self.make_domain(start=False)
        ref = self.raw_copy(img, 'reference.raw')
        rec = h.record_signals()
        job = self.begin(dom, push_xml())
        self.assertEqual(self.jprop(job, 'Type'), 'backup')
        target = self.default_target(dom, job)
        self.assert_paused_qemu('full push')
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        with self.assertDBusError(E + 'Busy'):
            h.call(dom, D, 'Start', (0,), 't')
        with self.assertDBusError(E + 'Busy'):
            self.begin(dom, push_xml(h.image_path('second.qcow2')))
        self.assertFalse(os.path.exists(h.image_path('second.qcow2')))
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        self.assert_progress(rec, job, 'offline push')
        self.assertEqual(self.jprop(job, 'Cur'), 32 * MiB)
        self.assert_equal_images(ref, target, what='the offline backup')
        q.qemu_img_check(target)
        self.assertIsNone(self.backing_of(target))
        self.assert_offline_done(dom, 'full push')
        h.call(dom, D, 'Start', (0,), 't')

    def test_incremental_push_and_checkpoint_xml(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        rec = h.record_signals()
        # A full backup that creates checkpoint c1 (qemu-img adds its bitmap
        # once the backup succeeded); its default target is named after it.
        # Nothing races it: a qsnapd that does not throttle runs it (not 16 s
        # of 32 MiB at SPEED); the incremental below is throttled again.
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_BACKUP_SPEED': '0'})
        job = self.begin(dom, "<domainbackup/>", '<domaincheckpoint><name>c1</name></domaincheckpoint>')
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        h.restart_daemon(kill=False)
        full = img + '.c1'
        c1 = h.call(dom, D, 'LookupCheckpoint', ('c1',), 's')
        self.assertEqual(self.bitmaps(img), {'c1': ['auto']})
        self.assert_offline_done(dom, 'full push with c1')
        self.write_c_and_stop(dom)
        ref2 = self.raw_copy(img, 'ref2.raw')
        inc = h.image_path('inc.qcow2')
        xml = ("<domainbackup mode='push'><incremental>c1</incremental><disks><disk name='vda' type='file'>"
               "<target file='%s'/></disk></disks></domainbackup>" % inc)
        job = self.begin(dom, xml, '<domaincheckpoint><name>c2</name></domaincheckpoint>')
        self.assert_paused_qemu('incremental push')
        self.assertEqual(self.wait_end(rec, job, timeout=120), ('completed', ''))
        self.assertEqual(self.jprop(job, 'End'), 2 * MiB, 'an incremental copies the dirty bytes only')
        m = q.run([q.QEMU_IMG, 'map', '--output=json', '-U', inc])
        self.assertEqual(m.returncode, 0, m.stderr)
        import json
        self.assertEqual(merged_ranges(json.loads(m.stdout), lambda e: e['data']), self.CHANGED,
                         'the incremental holds other clusters than the changed ones')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', full, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_images(ref2, inc, what='full + offline incremental against the disk')
        # c1 as it was (enabled, consistent), c2 new; no temporary bitmap.
        self.assertEqual(self.bitmaps(img), {'c1': ['auto'], 'c2': ['auto']})
        c2 = h.call(dom, D, 'LookupCheckpoint', ('c2',), 's')
        self.assertEqual(h.get_property(c2, q.CHECKPOINT_IFACE, 'Parent'), c1)
        self.assertEqual(h.get_property(c1, q.CHECKPOINT_IFACE, 'Problems'), [])
        self.assert_offline_done(dom, 'incremental push')

    def test_incremental_pull(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'st')
        self.write_c_and_stop(dom)
        before = self.bitmaps(img)
        ref2 = self.raw_copy(img, 'ref2.raw')
        socket = h.image_path('off.sock')
        job = self.begin(dom, "<domainbackup mode='pull'><incremental>c1</incremental><server transport='unix' "
                              "socket='%s'/><disks><disk name='vda'/></disks></domainbackup>" % socket)
        self.assert_paused_qemu('incremental pull')
        self.assertEqual(self.jprop(job, 'State'), 'running')
        # nothing writes: the disk itself is exported, no scratch file
        desc = self.backup_xml(dom)
        self.assertIsNone(desc.find('disks/disk/scratch'), ET.tostring(desc))
        self.assertEqual(desc.find('server').get('socket'), socket)
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if 'scratch' in f], [])
        with self.assertDBusError(E + 'Busy'):
            h.call(dom, D, 'Start', (0,), 't')
        opts = ('driver=nbd,export=vda,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:backup-vda'
                % socket)
        m = q.run([q.QEMU_IMG, 'map', '--output=json', '--image-opts', opts])
        self.assertEqual(m.returncode, 0, m.stderr)
        import json
        self.assertEqual(merged_ranges(json.loads(m.stdout), lambda e: not e['data']), self.CHANGED,
                         'the exported dirty bitmap')
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref2, out])
        self.assertEqual(r.returncode, 0, 'the offline export against the disk: %s' % r.stdout)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertFalse(os.path.exists(socket), 'the socket was left behind')
        self.assertEqual(self.bitmaps(img), before, 'the images\' bitmaps changed')
        self.assert_offline_done(dom, 'pull')
        h.call(dom, D, 'Start', (0,), 't')

    def test_paused_qemu_killed(self):
        # Its QEMU dies under a push: failed with what QEMU said, the target
        # removed, the domain shut off as before and free to start.
        h = self.h
        dom, img = self.make_domain(start=False)
        target = h.image_path('killed.qcow2')
        rec = h.record_signals()
        job = self.begin(dom, push_xml(target))
        self.wait_cur(job, 1)
        os.kill(self.assert_paused_qemu('push'), 9)
        status, error = self.wait_end(rec, job)
        self.assertEqual(status, 'failed')
        self.assertIn('paused QEMU', error)
        self.assertFalse(os.path.exists(target), 'the incomplete target was left behind')
        self.assert_offline_done(dom, 'QEMU killed')
        h.call(dom, D, 'Start', (0,), 't')

    def test_abort_and_crash(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        target = h.image_path('off.qcow2')
        rec = h.record_signals()
        job = self.begin(dom, push_xml(target), '<domaincheckpoint><name>never</name></domaincheckpoint>')
        self.wait_cur(job, 1)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        self.assertFalse(os.path.exists(target), 'the aborted target was left behind')
        self.assertEqual(self.bitmaps(img), {}, 'an aborted backup added a bitmap')
        self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [])
        self.assert_offline_done(dom, 'abort')
        # qsnapd killed at each step: its paused QEMU dies with it, the next
        # qsnapd removes the target (and the checkpoint's bitmaps it may have
        # added), and reports a backup that ran failed under its path.
        os.environ['QSNAPD_TEST_BACKUP_SPEED'] = '0'    # setUp's cleanup restores it
        for point, shown in self.CRASH_POINTS.items():
            mark, outcome = h.crash_at(point, dom, D, 'BackupBegin',
                                       (push_xml(target), '<domaincheckpoint><name>cx</name></domaincheckpoint>', 0),
                                       'sst')
            jobs = self.dprop(dom, 'Jobs')
            if shown:
                self.assertEqual(len(jobs), 1, point)
                props = h.get_all(jobs[0], J)
                self.assertEqual(props['State'], 'failed', point)
                self.assertIn('did not finish', props['Error'], point)
            else:
                self.assertEqual(jobs, [], point)
            self.assertFalse(os.path.exists(target), '%s: the incomplete target was left behind' % point)
            self.assertEqual(self.bitmaps(img), {}, '%s: a bitmap was left' % point)
            self.assertEqual(h.get_property(dom, D, 'Checkpoints'), [], point)
            # it died with the qsnapd that ran it
            self.assertTrue(q.spin(lambda: not offline_qemus(root=h.root), 10),
                            '%s: %s' % (point, offline_qemus(root=h.root)))
            self.assert_offline_done(dom, point)
        h.call(dom, D, 'Start', (0,), 't')


def merged_ranges(entries, pred):
    """(start, length) of the qemu-img map entries pred accepts, neighbours joined."""
    out = []
    for e in entries:
        if not pred(e):
            continue
        if out and out[-1][0] + out[-1][1] == e['start']:
            out[-1] = (out[-1][0], out[-1][1] + e['length'])
        else:
            out.append((e['start'], e['length']))
    return out


class IncrementalTest(BackupTestCase):
    """Incremental backups since a checkpoint (docs/checkpoints.md 2.10,
    2.11): the checkpoint's bitmap merged into a temporary one. After c1
    the guest writes C (0xc3) at 4 MiB and 24 MiB (1 MiB each); the
    incremental holds exactly those clusters, full + incremental equal the
    disk, and a pull's export shows them as its dirty bitmap."""
    CHANGED = [(4 * MiB, MiB), (24 * MiB, MiB)]

    def checkpoint(self, dom, name='c1'):
        return self.h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>%s</name></domaincheckpoint>' % name,
                                                        0), 'st')

    def write_c(self, dom):
        for off, n in self.CHANGED:
            self.h.write_pattern_live(dom, 'vda', 0xc3, off, n)

    def node_bitmaps(self, dom):
        nodes = self.h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        # qsnap-size-*: the checkpoints' Size measurement, there for a moment
        # (QEMU knows the image as /dev/fdset/N: the real file behind it)
        return sorted(b.get('name', '') for n in nodes if self.h.qemu_file_name(dom, n.get('file'), fdsets) == self.img
                      for b in n.get('dirty-bitmaps', []) if not b.get('name', '').startswith('qsnap-size-'))

    def test_incremental_push(self):
        h = self.h
        dom, img = self.make_domain()
        rec = h.record_signals()
        # The full backup creates checkpoint c1 in its own transaction; its
        # default target is named after it (libvirt).
        job = self.begin(dom, "<domainbackup/>", '<domaincheckpoint><name>c1</name></domaincheckpoint>')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        full = img + '.c1'
        self.assertTrue(os.path.exists(full), 'the default target named after the checkpoint')
        c1 = h.call(dom, D, 'LookupCheckpoint', ('c1',), 's')
        self.assertEqual(self.node_bitmaps(dom), ['c1'])
        self.write_c(dom)
        ref2 = self.reference(dom, 'ref2.raw')
        inc = h.image_path('inc.qcow2')
        xml = ("<domainbackup mode='push'><incremental>c1</incremental><disks><disk name='vda' type='file'>"
               "<target file='%s'/></disk></disks></domainbackup>" % inc)
        job = self.begin(dom, xml, '<domaincheckpoint><name>c2</name></domaincheckpoint>')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        c2 = h.call(dom, D, 'LookupCheckpoint', ('c2',), 's')
        self.assertEqual(h.get_property(c2, q.CHECKPOINT_IFACE, 'Parent'), c1)
        self.assertEqual(self.jprop(job, 'End'), 2 * MiB, 'an incremental copies the dirty bytes only')
        m = q.run([q.QEMU_IMG, 'map', '--output=json', '-U', inc])
        self.assertEqual(m.returncode, 0, m.stderr)
        import json
        self.assertEqual(merged_ranges(json.loads(m.stdout), lambda e: e['data']), self.CHANGED,
                         'the incremental holds other clusters than the changed ones')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', full, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_images(ref2, inc, what='full + incremental against the disk at the second point')
        self.assertEqual(self.node_bitmaps(dom), ['c1', 'c2'], 'a temporary bitmap was left on the disk')
        self.assert_no_backup_left(dom, [full, inc])

    def test_incremental_pull(self):
        h = self.h
        dom, img = self.make_domain()
        self.checkpoint(dom)
        self.write_c(dom)
        ref2 = self.reference(dom, 'ref2.raw')
        job = self.begin(dom, "<domainbackup mode='pull'><incremental>c1</incremental></domainbackup>",
                         '<domaincheckpoint><name>c2</name></domaincheckpoint>')
        # c2's metadata comes when the pull ends well (its bitmap records already)
        with self.assertDBusError(E + 'NoSuchCheckpoint'):
            h.call(dom, D, 'LookupCheckpoint', ('c2',), 's')
        desc = self.backup_xml(dom)
        socket = desc.find('server').get('socket')
        disk = desc.find("disks/disk[@name='vda']")
        self.assertEqual(disk.get('exportbitmap'), 'backup-vda')
        self.assertEqual((disk.get('backupmode'), disk.get('incremental')), ('incremental', 'c1'))
        h.write_pattern_live(dom, 'vda', B, 10 * MiB, MiB)    # after the point in time: in no view
        opts = ('driver=nbd,export=vda,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:backup-vda'
                % socket)
        m = q.run([q.QEMU_IMG, 'map', '--output=json', '--image-opts', opts])
        self.assertEqual(m.returncode, 0, m.stderr)
        import json
        self.assertEqual(merged_ranges(json.loads(m.stdout), lambda e: not e['data']), self.CHANGED,
                         'the exported dirty bitmap')
        out = self.nbd_convert(socket, 'vda', h.image_path('pulled.raw'))
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref2, out])
        self.assertEqual(r.returncode, 0, 'the export against the disk at backup start: %s' % r.stdout)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        c2 = h.call(dom, D, 'LookupCheckpoint', ('c2',), 's')
        self.assertEqual(h.get_property(c2, q.CHECKPOINT_IFACE, 'Parent'),
                         h.call(dom, D, 'LookupCheckpoint', ('c1',), 's'))
        self.assertEqual(self.node_bitmaps(dom), ['c1', 'c2'])
        self.assert_no_backup_left(dom, [])

    def test_unusable_checkpoint_is_refused(self):
        h = self.h
        dom, img = self.make_domain()
        self.checkpoint(dom)
        xml = "<domainbackup mode='push'><incremental>nope</incremental></domainbackup>"
        self.assert_refused(dom, E + 'NoSuchCheckpoint', 'BackupBegin', (xml, '', 0), 'sst')
        # The bitmap removed behind qsnapd's back: no silent full copy.
        fdsets = h.qmp(dom, 'query-fdsets')['return']
        node = [n['node-name'] for n in h.qmp(dom, 'query-named-block-nodes', {'flat': True})['return']
                if n['drv'] == 'qcow2' and h.qemu_file_name(dom, n.get('file'), fdsets) == img][0]
        self.assertEqual(h.qmp(dom, 'block-dirty-bitmap-remove', {'node': node, 'name': 'c1'}), {'return': {}})
        target = h.image_path('inc.qcow2')
        with self.assertDBusError(E + 'OperationInvalid') as cm:
            self.begin(dom, "<domainbackup mode='push'><incremental>c1</incremental><disks><disk name='vda' "
                            "type='file'><target file='%s'/></disk></disks></domainbackup>" % target)
        self.assertIn('missing', cm.exception.message)
        self.assertFalse(os.path.exists(target))
        self.assertEqual(self.dprop(dom, 'Jobs'), [])


def make_x509(folder):
    """A CA, a server certificate for localhost and a client certificate,
    as QEMU's tls-creds-x509 reads them: folder/server holds ca-cert.pem,
    server-cert.pem, server-key.pem; folder/client ca-cert.pem,
    client-cert.pem, client-key.pem."""
    server, client = os.path.join(folder, 'server'), os.path.join(folder, 'client')
    for d in (server, client):
        os.makedirs(d, exist_ok=True)
    ca_key, ca_cert = os.path.join(folder, 'ca-key.pem'), os.path.join(folder, 'ca-cert.pem')

    def ossl(*args):
        r = q.run(['openssl'] + list(args))
        if r.returncode != 0:
            raise RuntimeError('openssl %s: %s' % (' '.join(args), r.stderr))
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca_cert, '-days', '2',
         '-subj', '/CN=qsnaptest CA', '-addext', 'basicConstraints=critical,CA:TRUE',
         '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    for who, usage in (('server', 'serverAuth'), ('client', 'clientAuth')):
        d = os.path.join(folder, who)
        key, csr, cert = os.path.join(d, who + '-key.pem'), os.path.join(folder, who + '.csr'), \
            os.path.join(d, who + '-cert.pem')
        ext = os.path.join(folder, who + '.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n'
                    'extendedKeyUsage=%s\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' % usage)
        ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost')
        ossl('x509', '-req', '-in', csr, '-CA', ca_cert, '-CAkey', ca_key, '-CAcreateserial', '-out', cert,
             '-days', '2', '-extfile', ext)
        with open(ca_cert) as src, open(os.path.join(d, 'ca-cert.pem'), 'w') as dst:
            dst.write(src.read())
    return server, client


class TcpTest(BackupTestCase):
    """Pull over TCP: a port chosen when none is given (shown by
    BackupGetXMLDesc), and with tls='yes' a tls-creds-x509 object on the
    documented folder ($QSNAPD_NBD_TLS_DIR here): plain NBD is refused, a
    client with a certificate of the same CA reads the point in time."""

    def convert_tcp(self, port, out, tls_dir=None):
        args = [q.QEMU_IMG, 'convert', '-O', 'raw']
        opts = 'driver=nbd,host=localhost,port=%d,export=vda' % port
        if tls_dir:
            args += ['--object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=client' % tls_dir]
            opts += ',tls-creds=tls0'
        return q.run(args + ['--image-opts', opts, out], timeout=120)

    def assert_tls_export(self, dom, ref, client_dir, what):
        """The running backup's export is TLS-only: BackupGetXMLDesc shows
        tls='yes' and its port, plain NBD cannot read it, a client with the
        credentials reads exactly ref. Returns the port."""
        h = self.h
        server = self.backup_xml(dom).find('server')
        self.assertEqual(server.get('tls'), 'yes')
        port = int(server.get('port'))
        r = self.convert_tcp(port, h.image_path('plain.raw'))
        self.assertNotEqual(r.returncode, 0, 'plain NBD read a TLS export')
        out = h.image_path('tls.raw')
        r = self.convert_tcp(port, out, client_dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, '%s: %s' % (what, r.stdout))
        return port

    def test_pull_over_tcp(self):
        h = self.h
        dom, img = self.make_domain()
        ref = self.reference(dom)
        job = self.begin(dom, "<domainbackup mode='pull'><server transport='tcp' name='localhost'/></domainbackup>")
        server = self.backup_xml(dom).find('server')
        self.assertEqual(server.get('transport'), 'tcp')
        port = int(server.get('port'))
        self.assertGreater(port, 0)
        self.write_b_while_running(dom, job)
        out = h.image_path('tcp.raw')
        r = self.convert_tcp(port, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, r.stdout)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertNotEqual(self.convert_tcp(port, h.image_path('after.raw')).returncode, 0,
                            'the export still serves after Abort')
        self.assert_no_backup_left(dom, [])

    def test_pull_over_tls(self):
        h = self.h
        server_dir, client_dir = make_x509(os.path.join(h.root, 'pki'))
        xml = "<domainbackup mode='pull'><server transport='tcp' name='localhost' tls='yes'/></domainbackup>"
        # without credentials in the folder: refused, nothing started
        h.restart_daemon(kill=False, env={'QSNAPD_NBD_TLS_DIR': os.path.join(h.root, 'nothing')})
        dom, img = self.make_domain()
        self.assert_refused(dom, E + 'OperationInvalid', 'BackupBegin', (xml, '', 0), 'sst')
        h.restart_daemon(kill=False, env={'QSNAPD_NBD_TLS_DIR': server_dir})
        ref = self.reference(dom)
        job = self.begin(dom, xml)
        self.write_b_while_running(dom, job)
        self.assert_tls_export(dom, ref, client_dir, 'the TLS export against the disk at the start')
        h.call(job, J, 'Abort', (0,), 't')
        objects = [o['name'] for o in h.qmp(dom, 'qom-list', {'path': '/objects'})['return']]
        self.assertEqual([o for o in objects if o.startswith('tls-')], [], 'the credentials object stayed')
        self.assert_no_backup_left(dom, [])


class OfflineTcpTest(BackupTestCase):
    """A shut-off domain pulled over TCP and over TLS (docs/checkpoints.md
    5, 2.11): the paused -machine none QEMU serves its read-only top on a
    port of its own (shown by BackupGetXMLDesc), with TLS on the documented
    folder's credentials; a client reads back exactly the disk, and over
    TLS also the dirty extents since c1; Abort stops the server, removes
    the credentials object with that QEMU, and changes no bitmap."""
    CHANGED = OfflineTest.CHANGED
    convert_tcp = TcpTest.convert_tcp
    assert_tls_export = TcpTest.assert_tls_export
    assert_paused_qemu = OfflineTest.assert_paused_qemu
    assert_offline_done = OfflineTest.assert_offline_done
    bitmaps = OfflineTest.bitmaps
    write_c_and_stop = OfflineTest.write_c_and_stop

    def end_pull(self, dom, job, port, img, before, tls_dir=None):
        h = self.h
        pid = self.assert_paused_qemu('pull over TCP')
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertTrue(q.spin(lambda: not q._alive(pid), 30), 'the paused QEMU is still there')
        self.assertNotEqual(self.convert_tcp(port, h.image_path('after.raw'), tls_dir).returncode, 0,
                            'the export still serves after Abort')
        self.assertEqual(self.bitmaps(img), before, 'the images\' bitmaps changed')
        q.qemu_img_check(img)
        self.assert_offline_done(dom, 'pull over TCP')
        h.call(dom, D, 'Start', (0,), 't')

    def test_offline_pull_over_tcp(self):
        h = self.h
        dom, img = self.make_domain(start=False)
        ref = self.raw_copy(img, 'reference.raw')
        job = self.begin(dom, "<domainbackup mode='pull'><server transport='tcp' name='localhost'/></domainbackup>")
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        server = self.backup_xml(dom).find('server')
        self.assertEqual(server.get('transport'), 'tcp')
        self.assertIsNone(server.get('tls'))
        port = int(server.get('port'))
        self.assertGreater(port, 0)
        out = h.image_path('tcp.raw')
        r = self.convert_tcp(port, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, out])
        self.assertEqual(r.returncode, 0, 'the offline TCP export against the disk: %s' % r.stdout)
        self.end_pull(dom, job, port, img, {})

    def test_offline_incremental_pull_over_tls(self):
        h = self.h
        server_dir, client_dir = make_x509(os.path.join(h.root, 'pki'))
        h.restart_daemon(kill=False, env={'QSNAPD_NBD_TLS_DIR': server_dir})
        dom, img = self.make_domain(start=False)
        h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'st')
        self.write_c_and_stop(dom)
        before = self.bitmaps(img)
        ref = self.raw_copy(img, 'ref2.raw')
        job = self.begin(dom, "<domainbackup mode='pull'><incremental>c1</incremental><server transport='tcp' "
                              "name='localhost' tls='yes'/></domainbackup>")
        port = self.assert_tls_export(dom, ref, client_dir, 'the offline TLS export against the disk')
        opts = ('driver=nbd,host=localhost,port=%d,export=vda,tls-creds=tls0,'
                'x-dirty-bitmap=qemu:dirty-bitmap:backup-vda' % port)
        m = q.run([q.QEMU_IMG, 'map', '--output=json', '--object',
                   'tls-creds-x509,id=tls0,dir=%s,endpoint=client' % client_dir, '--image-opts', opts])
        self.assertEqual(m.returncode, 0, m.stderr)
        import json
        self.assertEqual(merged_ranges(json.loads(m.stdout), lambda e: not e['data']), self.CHANGED,
                         'the dirty extents read over TLS')
        self.end_pull(dom, job, port, img, before, client_dir)


class RefusalTest(BackupTestCase):
    def test_refusals_change_nothing(self):
        h = self.h
        dom, img = self.make_domain()
        existing = h.create_image('existing.qcow2', size=DISK_SIZE)
        new = h.image_path('new.qcow2')
        outside = '/var/tmp/qsnapt-backup-%d.qcow2' % os.getpid()
        cases = [
            (E + 'InvalidXML', (push_xml(new)[:-5], '', 0)),
            (E + 'NoSuchDisk', (push_xml(new, disk='vdz'), '', 0)),
            (E + 'InvalidArgument', (push_xml(new), '', 4)),
            (E + 'AlreadyExists', (push_xml(existing), '', 0)),
            (E + 'PathNotAllowed', (push_xml(outside), '', 0)),
            (E + 'InvalidXML', (push_xml(new), '<domaincheckpoint>', 0)),
            (E + 'Unsupported', ("<domainbackup><disks><disk name='vda' type='file'><target file='%s'>"
                                 "<encryption format='luks'/></target></disk></disks></domainbackup>" % new, '', 0)),
            (E + 'InvalidArgument', (push_xml(h.image_path('missing.qcow2')), '', REUSE_EXTERNAL)),
        ]
        for error, args in cases:
            self.assert_refused(dom, error, 'BackupBegin', args, 'sst')
        self.assertFalse(os.path.exists(new))
        self.assertFalse(os.path.exists(outside))
        with self.assertDBusError(E + 'OperationInvalid'):
            h.call(dom, D, 'BackupGetXMLDesc')
        h.call(dom, D, 'Stop', (0,), 't')
        # A shut-off domain whose QEMU is started elsewhere (attached through
        # a monitor socket nobody serves): no paused QEMU of ours for it.
        other = h.create_image('attached.qcow2', size=DISK_SIZE)
        att = h.define_domain('att', [q.Disk('vda', other)], monitor=h.image_path('nobody.sock'))
        self.assertEqual(self.dprop(att, 'State'), 'shutoff')
        self.assert_refused(att, E + 'NotRunning', 'BackupBegin', (pull_xml(), '', 0), 'sst')
        self.assert_refused(att, E + 'NotRunning', 'BackupBegin', (push_xml(new), '', 0), 'sst')
        self.assertFalse(os.path.exists(new))
        self.assertEqual(os.listdir(h.runtime_dir) and [f for f in os.listdir(h.runtime_dir) if 'scratch' in f], [])

    def test_access_denied(self):
        h = self.h
        dom, img = self.make_domain()
        target = h.image_path('denied.qcow2')
        before = self.fingerprint(dom)
        argv = ['--dest', q.BUS_NAME, '--object-path', dom, '--method', D + '.BackupBegin', '--timeout', '30',
                variant_text('s', push_xml(target)), variant_text('s', ''), variant_text('t', 0)]
        rc, out, err = h.gdbus_as(q.NOBODY_UID, 'call', *argv, timeout=40)
        self.assertNotEqual(rc, 0)
        self.assertIn(q.ACCESS_DENIED, err)
        self.assertEqual(self.fingerprint(dom), before)
        self.assertFalse(os.path.exists(target))


if __name__ == '__main__':
    q.main()
