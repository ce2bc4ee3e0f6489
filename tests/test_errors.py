#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Documented errors that no other test provoked, each provoked for real
(tests/errors_matrix.py names, for every documented error of every
method, the test that provokes it; the harness fails a test named there
whose calls did not answer that error, and any test that receives an
error its method does not document). After every refusal the state is
checked unchanged where the docs promise "a refused call changes
nothing": Disks, Jobs, snapshots, QEMU's own jobs, the files.

- QEMU refuses, for real: a block job QEMU runs behind qsnapd's back on
  the disk's node (started through QemuMonitorCommand) makes BlockPull,
  BlockRebase (pull and COPY), BlockCommit and BlockCopy fail with
  QemuFailed and QEMU's words, leaving no job and no destination file; a
  job paused behind qsnapd's back makes BlockJob1.Pause fail with QEMU's
  "Job is already paused"; qemu-img refuses an image another process holds
  open (Snapshot.Delete of an internal snapshot, offline).
- Refusals a real QEMU rarely shows (tests/lib/qsnaptest.py QmpProxy
  between qsnapd and the real QEMU answers one command with QEMU's error
  form): Pivot, SetSpeed, Resume and Abort → QemuFailed with that text,
  and the job goes on as before.
- QEMU killed while a call waits for it (SIGSTOP, the call sent — qsnapd's
  debug log shows the command queued —, then SIGKILL): Domain.Pause and
  Resume → QemuFailed; QemuMonitorCommand and BlockJob1's Abort, Pivot,
  SetSpeed, Pause and Resume → NotRunning; while QEMU is stopped a second
  Pivot or Abort of the job, or Pause or Resume of the domain → Busy.
- BlockJob1: unknown Abort flags and SetSpeed above 2^63-1 →
  InvalidArgument; every method of an ended job → OperationInvalid.
- While an offline merge (Snapshot.Delete, throttled by the test hook
  QSNAPD_TEST_DELETE_SPEED) runs: its job (qsnapd's own, qemu-img) answers
  Pivot, SetSpeed, Pause, Resume and Abort(PIVOT) with Unsupported; Start,
  Stop, Undefine and DefineDomain (a redefinition) of the domain → Busy.
- BlockPull, BlockRebase, BlockCommit and BlockCopy of a transient disk →
  Unsupported.
- BlockRebase: an unknown disk (NoSuchDisk), a shut-off domain
  (NotRunning), a disk a job holds (Busy), COPY outside the allowed
  folders (PathNotAllowed) and onto an existing file (AlreadyExists).
- On a full tmpfs: Revert (its new overlay), BlockCopy and BlockRebase COPY
  (the destination) → NoSpace.
"""

import os
import re
import signal
import subprocess

import qsnaptest as q

D = q.DOMAIN_IFACE
J = q.JOB_IFACE
S = q.SNAPSHOT_IFACE
M = q.MANAGER_IFACE
E = q.ERROR_PREFIX
MiB = 1 << 20

ACTIVE = 4                     # BlockCommit
COPY = 8                       # BlockRebase
DISK_ONLY = 16                 # CreateSnapshot
ABORT_ASYNC, ABORT_PIVOT = 1, 2
FORCE = 4                      # Revert
METADATA = 1                   # Undefine SNAPSHOTS_METADATA


def dest_xml(path, fmt='qcow2'):
    return "<disk type='file'><source file='%s'/><driver type='%s'/></disk>" % (path, fmt)


class ErrorsTestCase(q.QsnapTestCase):
    maxDiff = None

    def chain(self, name='vm', data_mib=8, start=True, extra_disks=()):
        """base <- mid <- top (data_mib MiB of 0x22 in mid), a domain on top,
        started. Returns (dom, base, mid, top)."""
        h = self.h
        base = h.create_image('%s-base.qcow2' % name)
        mid = h.create_image('%s-mid.qcow2' % name, backing=base)
        top = h.create_image('%s-top.qcow2' % name, backing=mid)
        q.qemu_io_write_pattern(mid, 0x22, 0, data_mib * MiB)
        dom = h.define_domain(name, [q.Disk('vda', top)] + list(extra_disks))
        if start:
            h.call(dom, D, 'Start', (0,), 't')
        return dom, base, mid, top

    def ready_job(self, dom, disk='vda'):
        """An active commit of disk, throttled, waited for until READY."""
        job = self.h.call(dom, D, 'BlockCommit', (disk, '', '', MiB, ACTIVE), 'ssstt')
        q.wait_until(lambda: self.h.get_property(job, J, 'State') == 'ready', 60, '%s READY' % job)
        return job

    @staticmethod
    def qemu_id(job):
        """QEMU's job id: the path's last element, sd_bus_path_encode()d."""
        return re.sub(r'_([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), job.rsplit('/', 1)[1])

    def top_node(self, dom, disk='vda'):
        for b in self.h.qmp(dom, 'query-block')['return']:
            if b.get('qdev', '').startswith('/machine/peripheral/%s/' % disk) and 'inserted' in b:
                return b['inserted']['node-name']
        raise AssertionError('no node for %s in query-block' % disk)

    def observe(self, dom):
        """What a refused call must leave as it was."""
        h = self.h
        props = h.get_all(dom, D)
        seen = {k: props[k] for k in ('State', 'Disks', 'Jobs', 'Snapshots', 'CurrentSnapshot')}
        seen['job states'] = {j: h.get_property(j, J, 'State') for j in props['Jobs']}
        seen['files'] = sorted(n for n in os.listdir(h.images_dir) if not n.startswith('.'))
        if props['State'] in ('running', 'paused'):
            seen['QEMU jobs'] = sorted((j['id'], j['type']) for j in h.qmp(dom, 'query-jobs')['return'])
        return seen

    def assertRefused(self, error, path, iface, method, args=None, sig=None, dom=None, contains=None):
        """The call fails with error (a name without the prefix of ours) and,
        when dom is given, changes nothing there. Returns the message."""
        before = self.observe(dom) if dom else None
        with self.assertDBusError(error if error.startswith('org.') else E + error) as caught:
            self.h.call(path, iface, method, args, sig)
        if contains is not None:
            self.assertIn(contains, caught.exception.message)
        if dom:
            self.assertEqual(self.observe(dom), before, '%s.%s changed something' % (iface, method))
        return caught.exception.message

    def wait_queued(self, mark, command, timeout=20):
        """qsnapd has queued QMP command (its debug log: "→ {...}")."""
        self.h.wait_for_log(r'→ \{[^\n]*"execute": ?"%s"' % command, mark, timeout)

    def kill_stopped_qemu(self, pid):
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)

    def assertFails(self, pending, error):
        with self.assertDBusError(E + error if not error.startswith('org.') else error):
            pending.wait()


class QemuRefusesTest(ErrorsTestCase):
    """A real QEMU (or qemu-img) refuses."""

    def test_block_jobs_on_a_node_busy_with_a_job_of_its_own(self):
        h = self.h
        dom, base, mid, top = self.chain()
        node = self.top_node(dom)
        # A job qsnapd knows nothing of (QemuMonitorCommand, root): qsnapd's
        # own locks are free, QEMU's node is not.
        reply = h.qmp(dom, 'block-stream', {'job-id': 'theirs', 'device': node, 'speed': 1})
        self.assertEqual(reply, {'return': {}})
        dest = h.image_path('copy.qcow2')
        cases = [
            ('BlockPull', ('vda', 0, 0), 'stt'),
            ('BlockRebase', ('vda', base, 0, 0), 'sstt'),
            ('BlockRebase', ('vda', dest, 0, COPY), 'sstt'),
            ('BlockCommit', ('vda', '', '', 0, ACTIVE), 'ssstt'),
            ('BlockCommit', ('vda', base, mid, 0, 0), 'ssstt'),
            ('BlockCopy', ('vda', dest_xml(dest), 0, 0), 'sstt'),
        ]
        for method, args, sig in cases:
            with self.subTest(method=method, args=args):
                message = self.assertRefused('QemuFailed', dom, D, method, args, sig, dom=dom)
                self.assertTrue(message.startswith('QEMU refused the job: '), message)
                self.assertFalse(os.path.exists(dest), 'the destination was left behind')
        self.assertEqual([j['id'] for j in h.qmp(dom, 'query-jobs')['return']], ['theirs'])
        h.qmp(dom, 'block-job-cancel', {'device': 'theirs'})
        # Free again: qsnapd's pull goes through.
        q.wait_until(lambda: not h.qmp(dom, 'query-jobs')['return'], 20, 'their job gone')
        rec = h.record_signals()
        job = h.call(dom, D, 'BlockPull', ('vda', 0, 0), 'stt')
        self.assertEqual(rec.wait_for(lambda s: s.path == job and s.member == 'Completed', 60).args,
                         ('completed', ''))

    def test_job_paused_behind_qsnapds_back(self):
        h = self.h
        dom, _, _, _ = self.chain()
        job = self.ready_job(dom)
        self.assertEqual(h.qmp(dom, 'job-pause', {'id': self.qemu_id(job)}), {'return': {}})
        message = self.assertRefused('QemuFailed', job, J, 'Pause')
        self.assertIn('Job is already paused', message)
        self.assertNotEqual(h.get_property(job, J, 'State'), 'paused', 'qsnapd took a refused pause for done')
        h.qmp(dom, 'job-resume', {'id': self.qemu_id(job)})
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')

    def test_delete_of_an_image_another_process_holds(self):
        h = self.h
        img = h.create_image('held.qcow2')
        q.qemu_io_write_pattern(img, 0x33, 0, MiB)
        dom = h.define_domain('held', [q.Disk('vda', img)])
        snap = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>i1</name></domainsnapshot>', 0), 'st')
        # qemu-io keeps the image open (and write-locked) until its stdin
        # closes; its answer to a read says it has opened it. (No polling
        # with qemu-img info: its shared lock, taken at the wrong moment,
        # makes qemu-io fail to open.)
        holder = subprocess.Popen([q.QEMU_IO, '-f', 'qcow2', img], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        self.addCleanup(holder.stdout.close)
        holder.stdin.write(b'read 0 512\n')
        holder.stdin.flush()
        answer = holder.stdout.readline().decode()
        self.assertIn('read 512/512 bytes', answer, 'qemu-io did not open the image')
        self.assertNotEqual(q.run([q.QEMU_IMG, 'info', img]).returncode, 0, 'qemu-io holds no lock')
        message = self.assertRefused('QemuFailed', snap, S, 'Delete', (0,), 't', dom=dom)
        self.assertIn('lock', message)
        holder.stdin.close()
        holder.wait(10)
        listing = q.run([q.QEMU_IMG, 'snapshot', '-l', img]).stdout
        self.assertIn('i1', listing, 'the internal snapshot went although Delete failed')
        self.assertEqual(h.call(snap, S, 'Delete', (0,), 't'), '/')
        self.assertNotIn('i1', q.run([q.QEMU_IMG, 'snapshot', '-l', img]).stdout)


class InjectedRefusalTest(ErrorsTestCase):
    """QEMU refusals of job controls that a real QEMU 7.2 does not show on
    demand, answered by a QmpProxy between qsnapd and the real QEMU."""

    def test_job_controls_refused(self):
        h = self.h
        dom, _, _, _ = self.chain()
        job = self.ready_job(dom)
        proxy = h.proxy_monitor(dom)
        # The new qsnapd adopted the job through the proxy.
        self.assertEqual(h.get_property(job, J, 'State'), 'ready')
        cases = [
            ('block-job-set-speed', 'SetSpeed', (5 * MiB,), 't', 'Bandwidth'),
            ('job-complete', 'Pivot', None, None, 'State'),
            ('block-job-cancel', 'Abort', (0,), 't', 'State'),
        ]
        for command, method, args, sig, prop in cases:
            with self.subTest(method=method):
                proxy.refuse(command, 'refused by the test: %s' % command)
                before = h.get_property(job, J, prop)
                message = self.assertRefused('QemuFailed', job, J, method, args, sig)
                self.assertIn('refused by the test: %s' % command, message)
                self.assertIn(command, proxy.refused)
                self.assertEqual(h.get_property(job, J, prop), before)
                proxy.allow(command)
        h.call(job, J, 'Pause')
        self.assertEqual(h.get_property(job, J, 'State'), 'paused')
        proxy.refuse('job-resume', 'refused by the test: job-resume')
        message = self.assertRefused('QemuFailed', job, J, 'Resume')
        self.assertIn('refused by the test: job-resume', message)
        self.assertEqual(h.get_property(job, J, 'State'), 'paused')
        proxy.allow('job-resume')
        h.call(job, J, 'Resume')
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')


class QemuKilledMidCallTest(ErrorsTestCase):
    """The call is sent and waits for QEMU (stopped with SIGSTOP); QEMU is
    killed; the call answers."""

    def test_killed_while_calls_wait(self):
        h = self.h
        dom, _, _, _ = self.chain()
        job = self.ready_job(dom)
        pid = h.qemu_pid(dom)
        mark = h.daemon_log_mark()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: q._alive(pid) and os.kill(pid, signal.SIGKILL))
        pending = {
            'SetSpeed': h.call_async(job, J, 'SetSpeed', (2 * MiB,), 't'),
            'Pause': h.call_async(job, J, 'Pause'),
            'Abort': h.call_async(job, J, 'Abort', (ABORT_ASYNC,), 't'),
            'QemuMonitorCommand': h.call_async(dom, D, 'QemuMonitorCommand', ('{"execute": "query-status"}', 0), 'st'),
            'Domain.Pause': h.call_async(dom, D, 'Pause'),
        }
        for command in ('block-job-set-speed', 'job-pause', 'block-job-cancel', 'query-status', 'stop'):
            self.wait_queued(mark, command)
        # One at a time: a second Abort or Pause while the first waits; no
        # Pivot while an Abort is on its way.
        self.assertIn('aborted already', self.assertRefused('Busy', job, J, 'Abort', (0,), 't'))
        self.assertIn('being aborted', self.assertRefused('OperationInvalid', job, J, 'Pivot'))
        self.assertIn('busy', self.assertRefused('Busy', dom, D, 'Pause'))
        self.kill_stopped_qemu(pid)
        for name in ('SetSpeed', 'Pause', 'Abort', 'QemuMonitorCommand'):
            with self.subTest(call=name):
                self.assertFails(pending[name], 'NotRunning')
        self.assertFails(pending['Domain.Pause'], 'QemuFailed')
        q.wait_until(lambda: h.get_property(dom, D, 'State') == 'crashed', 20, 'State crashed')
        self.assertEqual(h.get_property(job, J, 'State'), 'failed')

        # A Pivot waits: a second one is Busy, and no Abort comes after it
        # (QEMU would pivot all the same).
        h.call(dom, D, 'Start', (0,), 't')
        job = self.ready_job(dom)
        pid = h.qemu_pid(dom)
        mark = h.daemon_log_mark()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: q._alive(pid) and os.kill(pid, signal.SIGKILL))
        pivot = h.call_async(job, J, 'Pivot')
        self.wait_queued(mark, 'job-complete')
        self.assertIn('pivoting already', self.assertRefused('Busy', job, J, 'Pivot'))
        self.assertIn('pivoting', self.assertRefused('OperationInvalid', job, J, 'Abort', (0,), 't'))
        self.kill_stopped_qemu(pid)
        self.assertFails(pivot, 'NotRunning')
        q.wait_until(lambda: h.get_property(dom, D, 'State') == 'crashed', 20, 'State crashed')
        self.assertEqual(h.get_property(job, J, 'State'), 'failed')

        # Resume, of a paused job and of a paused domain.
        h.call(dom, D, 'Start', (0,), 't')
        job = self.ready_job(dom)
        h.call(job, J, 'Pause')
        h.call(dom, D, 'Pause')
        pid = h.qemu_pid(dom)
        mark = h.daemon_log_mark()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: q._alive(pid) and os.kill(pid, signal.SIGKILL))
        job_resume = h.call_async(job, J, 'Resume')
        dom_resume = h.call_async(dom, D, 'Resume')
        self.wait_queued(mark, 'job-resume')
        self.wait_queued(mark, 'cont')
        self.assertIn('busy', self.assertRefused('Busy', dom, D, 'Resume'))
        self.kill_stopped_qemu(pid)
        self.assertFails(job_resume, 'NotRunning')
        self.assertFails(dom_resume, 'QemuFailed')
        q.wait_until(lambda: h.get_property(dom, D, 'State') == 'crashed', 20, 'State crashed')


class JobRefusalsTest(ErrorsTestCase):
    def test_bad_arguments_and_an_ended_job(self):
        h = self.h
        dom, _, _, _ = self.chain()
        job = self.ready_job(dom)
        self.assertRefused('InvalidArgument', job, J, 'Abort', (4,), 't', dom=dom)
        self.assertRefused('InvalidArgument', job, J, 'SetSpeed', (1 << 63,), 't', dom=dom)
        self.assertEqual(h.get_property(job, J, 'Bandwidth'), MiB)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        for method, args, sig in (('Abort', (0,), 't'), ('Pivot', None, None), ('SetSpeed', (0,), 't'),
                                  ('Pause', None, None), ('Resume', None, None)):
            with self.subTest(method=method):
                self.assertIn('has ended', self.assertRefused('OperationInvalid', job, J, method, args, sig, dom=dom))


class OfflineMergeTest(ErrorsTestCase):
    """A throttled offline merge (qsnapd's own job running qemu-img commit)
    holds the domain."""

    def test_refusals_while_an_offline_merge_runs(self):
        h = self.h
        img = h.create_image('off.qcow2')
        dom = h.define_domain('off', [q.Disk('vda', img)])
        snap = h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>e1</name></domainsnapshot>', DISK_ONLY), 'st')
        overlay = h.get_property(dom, D, 'Disks')[0][2]
        q.qemu_io_write_pattern(overlay, 0x44, 0, 16 * MiB)
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_DELETE_SPEED': str(MiB)})
        job = h.call(snap, S, 'Delete', (0,), 't')
        self.assertNotEqual(job, '/')
        self.assertEqual((h.get_property(job, J, 'Type'), h.get_property(job, J, 'State')),
                         ('snapshot-delete', 'running'))
        # The merge's job is qsnapd's own: it ends by itself.
        for method, args, sig in (('Pivot', None, None), ('SetSpeed', (0,), 't'), ('Pause', None, None),
                                  ('Resume', None, None), ('Abort', (ABORT_PIVOT,), 't')):
            with self.subTest(method=method):
                self.assertIn("qsnapd's own", self.assertRefused('Unsupported', job, J, method, args, sig, dom=dom))
        # The domain is busy meanwhile.
        redefinition = q.domain_xml('off', [q.Disk('vda', overlay)], description='changed meanwhile')
        for path, iface, method, args, sig in ((dom, D, 'Start', (0,), 't'), (dom, D, 'Stop', (0,), 't'),
                                               (dom, D, 'Undefine', (METADATA,), 't'),
                                               (q.MANAGER_PATH, M, 'DefineDomain', (redefinition, 0), 'st')):
            with self.subTest(method=method):
                message = self.assertRefused('Busy', path, iface, method, args, sig, dom=dom)
                self.assertIn('busy', message)
                if method in ('Start', 'Stop'):     # what holds it, so the caller knows what to wait for
                    self.assertIn('(snapshot-delete in progress); try again when it has ended', message)
        self.assertNotIn('changed meanwhile', h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        # Free again.
        self.assertEqual(h.call(q.MANAGER_PATH, M, 'DefineDomain', (redefinition, 0), 'st'), dom)
        self.assertIn('changed meanwhile', h.call(dom, D, 'GetXMLDesc', (0,), 't'))


class TransientDiskTest(ErrorsTestCase):
    def test_block_methods_refuse_a_transient_disk(self):
        h = self.h
        scratch = h.create_image('scratch.qcow2')
        dom, base, mid, top = self.chain(extra_disks=[q.Disk('vdb', scratch, transient=True)])
        dest = h.image_path('copy.qcow2')
        for method, args, sig in (('BlockPull', ('vdb', 0, 0), 'stt'),
                                  ('BlockRebase', ('vdb', '', 0, 0), 'sstt'),
                                  ('BlockRebase', ('vdb', dest, 0, COPY), 'sstt'),
                                  ('BlockCommit', ('vdb', '', '', 0, ACTIVE), 'ssstt'),
                                  ('BlockCopy', ('vdb', dest_xml(dest), 0, 0), 'sstt')):
            with self.subTest(method=method, args=args):
                self.assertIn('transient', self.assertRefused('Unsupported', dom, D, method, args, sig, dom=dom))
                self.assertFalse(os.path.exists(dest))


class RebaseRefusalsTest(ErrorsTestCase):
    harness_options = {'image_root': True}

    def test_rebase_refusals(self):
        h = self.h
        dom, base, mid, top = self.chain()
        outside_dir = os.path.join(h.root, 'outside')
        os.mkdir(outside_dir)
        taken = h.create_image('taken.qcow2')
        cases = [
            ('NoSuchDisk', ('vdz', base, 0, 0)),
            ('PathNotAllowed', ('vda', os.path.join(outside_dir, 'copy.qcow2'), 0, COPY)),
            ('AlreadyExists', ('vda', taken, 0, COPY)),
        ]
        for error, args in cases:
            with self.subTest(error=error):
                self.assertRefused(error, dom, D, 'BlockRebase', args, 'sstt', dom=dom)
        self.assertEqual(os.listdir(outside_dir), [])
        # A disk a job holds.
        rec = h.record_signals()
        job = h.call(dom, D, 'BlockPull', ('vda', MiB, 0), 'stt')
        self.assertRefused('Busy', dom, D, 'BlockRebase', ('vda', base, 0, 0), 'sstt', dom=dom)
        h.call(job, J, 'Abort', (0,), 't')
        rec.wait_for(lambda s: s.path == job and s.member == 'Completed')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertRefused('NotRunning', dom, D, 'BlockRebase', ('vda', base, 0, 0), 'sstt', dom=dom)


class NoSpaceTest(ErrorsTestCase):
    harness_options = {'image_root': True}

    def test_full_file_system(self):
        h = self.h
        full = h.image_path('full')
        with q.mounted_tmpfs(full, '4m'):
            img = q.qemu_img_create(os.path.join(full, 'vm.qcow2'), '64M')
            dom = h.define_domain('vm', [q.Disk('vda', img)])
            snap = h.call(dom, D, 'CreateSnapshot',
                          ('<domainsnapshot><name>e1</name></domainsnapshot>', DISK_ONLY), 'st')
            with open(os.path.join(full, 'filler'), 'wb') as f:
                with self.assertRaises(OSError):
                    while True:
                        f.write(b'\0' * 65536)
                        f.flush()
            self.assertEqual(os.statvfs(full).f_bavail, 0)
            self.assertIn('No space left', self.assertRefused('NoSpace', snap, S, 'Revert', (FORCE,), 't', dom=dom))
            # A copy of another domain's disk onto the full file system.
            other = h.create_image('other.qcow2')
            odom = h.define_domain('other', [q.Disk('vda', other)])
            h.call(odom, D, 'Start', (0,), 't')
            dest = os.path.join(full, 'copy.qcow2')
            self.assertRefused('NoSpace', odom, D, 'BlockCopy', ('vda', dest_xml(dest), 0, 0), 'sstt', dom=odom)
            self.assertRefused('NoSpace', odom, D, 'BlockRebase', ('vda', dest, 0, COPY), 'sstt', dom=odom)
            self.assertFalse(os.path.exists(dest))
            h.call(odom, D, 'Stop', (0,), 't')


if __name__ == '__main__':
    q.main()
