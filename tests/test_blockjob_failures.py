#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Block jobs that fail (DESIGN.md section 2, issue 4 "Failures"), with the
real qsnapd, polkitd and QEMU. The chain and its patterns are those of
tests/test_blockjobs.py (base <- mid <- top, 64 MiB qcow2 each, 0x11 /
0x22 / 0x33 at 0 / 1 / 2 MiB, a 0x44 filler in mid from 4 MiB on).

- QEMU killed (SIGKILL) while a throttled pull runs, while a throttled
  active commit runs, and while an active commit is READY: the job ends failed, once (Completed, BlockJobEvent,
  State, a non-empty Error naming QEMU), the Domain is crashed, the chain is
  as before on disk, qemu-img check is clean, every pattern reads back; the
  failed job object stays with its final State (also after the next Start);
  Start works and a new job runs to completion. The same with a pull on
  each of two disks: both end failed, once each.
- qsnapd killed (-9) and then QEMU while a pull runs: the next qsnapd finds
  the domain crashed and shows the job failed under its path, from the job
  journal in the runtime dir, which then goes.
- QEMU killed by qsnapd's test hook (QSNAPD_TEST_KILL_QEMU_AT) right after
  qsnapd sent job-finalize, and right after it asked QEMU for the disks
  after a job (pull, commit; and two pulls ending together): each job ends
  exactly once (no hang), qsnapd survives, the files on disk agree with
  Disks, and every pattern reads back. For a pull this needs qsnapd's flush
  before job-finalize: without it QEMU 7.2 left top standalone but without
  the pulled data (its L2 tables were still in QEMU's memory).
- A copy pivoted, then QEMU killed by the hook right after qsnapd asked it
  for the disks: the journal's pivoted mark makes the destination the
  stored disk (the copy completed, the old top kept), and the domain
  starts on it with every write.
- ENOSPC: a commit whose base lives on a tiny tmpfs, with more data in mid
  than fits: Completed('failed', QEMU's "No space left on device"), the
  chain as before, every pattern readable through QEMU and from the host,
  the guest writes on; the same for an active commit. A pull into an active
  overlay on a full tmpfs: QEMU 7.2 behaves sanely, the job fails with
  "No space left on device" and the guest keeps running (the device's own
  werror policy is not involved: the job's writes are not the guest's), the
  chain and every pattern as before, qemu-img check clean.
"""

import contextlib
import os
import re
import signal

import qsnaptest as q
import test_blockjobs as tb

D = q.DOMAIN_IFACE
J = q.JOB_IFACE
E = q.ERROR_PREFIX
MiB = tb.MiB
ACTIVE = tb.ACTIVE


class FailureTestCase(tb.BlockJobTestCase):
    def kill_qemu(self, dom, rec, mark=0):
        pid = self.h.qemu_pid(dom)
        os.kill(pid, signal.SIGKILL)
        rec.wait_for_property(dom, 'State', 'crashed', timeout=10, start=mark)
        # qsnapd sees the monitor close, which can come before the dying
        # QEMU has closed its images (and dropped their locks): the checks
        # that follow open them, so wait until the process is gone.
        q.wait_until(lambda: not q._alive(pid), 30, 'the killed QEMU %d exits' % pid)

    def tmpfs(self, name, size):
        """A tmpfs for part of a chain. A chain is followed only within the
        domain's allowed folders (docs/security.md §3), so the tmpfs and the
        images folder are image roots of a restarted qsnapd."""
        h = self.h
        path = os.path.join(h.root, name)
        stack = contextlib.ExitStack()
        stack.enter_context(q.mounted_tmpfs(path, size))
        self.addCleanup(stack.close)
        h.daemon_args += ['--image-root=' + path, '--image-root=' + h.images_dir]
        h.restart_daemon(kill=False)
        return path

    def assert_failed_once(self, rec, dom, job, jtype, what):
        """Exactly one Completed('failed', error) with a non-empty error,
        one BlockJobEvent for it, State failed: returns error."""
        status, error = self.wait_end(rec, job)
        self.assertEqual(status, 'failed', '%s: Completed(%r, %r)' % (what, status, error))
        self.assertTrue(error.strip(), '%s: Completed(failed) without an error text' % what)
        self.assert_one_end(rec, dom, job, jtype, 'failed', error)
        return error

    def assert_job_lingers(self, dom, job, state, what):
        self.assertEqual(self.jprop(job, 'State'), state, '%s: State of the ended job' % what)
        self.assertIn(job, self.dprop(dom, 'Jobs'), '%s: Domain.Jobs lost the ended job (it stays 60 s)' % what)
        self.assertIn(job, self.h.client.managed_objects(), '%s: GetManagedObjects lost the ended job' % what)

    def assert_intact(self, dom, base, mid, top, what):
        """The chain as before on disk and in Disks, clean, every pattern."""
        self.assert_chain(dom, [base, mid, top], what)
        self.assert_clean(top, mid, base)
        self.assert_reads(top, self.expected_patterns(), what)


# --------------------------------------------------------------------------

class QemuKilledTest(FailureTestCase):
    def run_killed(self, start_job, jtype, ready=False):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        rec = h.record_signals()
        job = start_job(dom)
        if ready:
            h.call(job, J, 'SetSpeed', (0,), 't')
            rec.wait_for_signal('Ready', path=job, interface=J, timeout=30)
            self.assertEqual(self.jprop(job, 'State'), 'ready')
        else:
            self.wait_cur(job, 1)
            self.assertEqual(self.jprop(job, 'State'), 'running')
        self.kill_qemu(dom, rec)
        error = self.assert_failed_once(rec, dom, job, jtype, 'QEMU killed')
        print('\nError of a %s whose QEMU was killed: %r' % (jtype, error), flush=True)
        self.assertIn('QEMU', error, 'the error does not say QEMU went away')
        self.assertEqual(self.dprop(dom, 'State'), 'crashed')
        self.assert_job_lingers(dom, job, 'failed', 'after the crash')
        self.assert_intact(dom, base, mid, top, 'after the crash')

        # Start works, the failed job object is still there, a new job runs.
        mark = rec.mark()
        h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(self.dprop(dom, 'State'), 'running')
        self.assert_job_lingers(dom, job, 'failed', 'after the next Start')
        self.assertEqual(self.jprop(job, 'Error'), error, 'Error of the failed job after the next Start')
        self.assertEqual(self.completed_signals(rec, job)[1:], [], 'a second Completed after Start')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the restart')
        job2 = start_job(dom)
        self.assertNotEqual(job2, job)
        h.call(job2, J, 'SetSpeed', (0,), 't')
        if jtype == 'active-commit':
            rec.wait_for_signal('Ready', path=job2, interface=J, timeout=30, start=mark)
            h.call(job2, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job2, start=mark), ('completed', ''))
        self.flush(dom)
        final = [top] if jtype == 'pull' else [base]
        self.assert_chain(dom, final, 'after the job in the next run')
        self.assert_reads(final[0], self.expected_patterns(), 'after the job in the next run')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the job in the next run')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(final[0])

    def test_qemu_killed_during_pull(self):
        self.run_killed(lambda dom: self.pull(dom, 'vda', 1 * MiB), 'pull')

    def test_qemu_killed_during_active_commit(self):
        self.run_killed(lambda dom: self.commit(dom, '', '', bandwidth=1 * MiB, flags=ACTIVE), 'active-commit')


    def test_qemu_killed_during_ready_active_commit(self):
        # READY, not pivoted: base holds everything, but top stays the
        # active file (the pivot never happened).
        self.run_killed(lambda dom: self.commit(dom, '', '', bandwidth=1 * MiB, flags=ACTIVE), 'active-commit',
                        ready=True)

    def test_qemu_killed_with_jobs_on_two_disks(self):
        # Both jobs end failed, once each, whatever each was doing.
        h = self.h
        dom, base, mid, top, bbase, btop = self.make_two_disks(8, filler_mib=8)
        rec = h.record_signals()
        ja = self.pull(dom, 'vda', 1 * MiB)
        jb = self.pull(dom, 'vdb', 1 * MiB)
        self.wait_cur(ja, 1)
        self.wait_cur(jb, 1)
        self.kill_qemu(dom, rec)
        for job, disk in ((ja, 'vda'), (jb, 'vdb')):
            status, error = self.wait_end(rec, job)
            self.assertEqual(status, 'failed')
            self.settle()
            self.assertEqual([x.args for x in self.completed_signals(rec, job)], [(status, error)])
            self.assertEqual([e[3] for e in self.job_events(rec, dom, job)], ['failed'], 'BlockJobEvent of %s' % disk)
            self.assert_job_lingers(dom, job, 'failed', disk)
        self.assert_intact(dom, base, mid, top, 'vda after the crash')
        self.assertEqual(self.img_chain(btop), [btop, bbase])
        self.assert_reads(btop, [(0x77, 0, 8 * MiB)], 'vdb after the crash')
        self.assert_clean(btop, bbase)


class BothKilledTest(FailureTestCase):
    def test_qsnapd_and_qemu_killed_during_pull(self):
        """kill -9 of qsnapd, then of QEMU, while a throttled pull runs: the
        next qsnapd finds the domain crashed and reports the job failed under
        its path (State, Error, in Domain.Jobs) instead of losing it."""
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        job = self.pull(dom, 'vda', 1 * MiB)
        self.wait_cur(job, 1)
        pid = h.qemu_pid(dom)
        h.kill_daemon()
        os.kill(pid, signal.SIGKILL)
        q.wait_until(lambda: not os.path.exists('/proc/%d' % pid), 10, 'the killed QEMU %d is reaped' % pid)
        h.start_daemon()
        self.assertEqual(self.dprop(dom, 'State'), 'crashed')
        self.assert_job_lingers(dom, job, 'failed', 'after both died')
        self.assertEqual((self.jprop(job, 'Type'), self.jprop(job, 'Disk')), ('pull', 'vda'))
        self.assertIn('QEMU went away', self.jprop(job, 'Error'))
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'a job journal stayed')
        self.assert_intact(dom, base, mid, top, 'after both died')
        # the next run of the domain has no trace of it but the object
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the restart')
        h.call(dom, D, 'Stop', (0,), 't')


class QemuKilledWhileFinishingTest(FailureTestCase):
    """qsnapd's own test hook kills QEMU at a named point of a job's end
    (QSNAPD_TEST_KILL_QEMU_AT): right after job-finalize went out, and right
    after the read-back of the disks went out."""

    # (point, kind) -> (the job's end, the chain on disk afterwards, top
    # first). kill_point() runs right after qsnapd queued the QMP command,
    # and qsnapd writes queued commands from its event loop: QEMU dies
    # before it reads the command. So at job-finalize it never finalized
    # (the chain stays, the job failed), at job-resync it had (the job ended
    # in QEMU, the chain changed, only the read-back is lost).
    POINTS = {
        ('job-finalize', 'pull'):   ('failed',    ('top', 'mid', 'base')),
        ('job-finalize', 'commit'): ('failed',    ('top', 'mid', 'base')),
        ('job-resync', 'pull'):     ('completed', ('top',)),
        ('job-resync', 'commit'):   ('completed', ('top', 'base')),
    }

    def start_with_kill_point(self, point):
        self.h.restart_daemon(kill=False, env={'QSNAPD_TEST_KILL_QEMU_AT': point})
        return self.h.daemon_log_mark()

    def run_point(self, point, kind='pull'):
        h = self.h
        status_wanted, chain_wanted = self.POINTS[(point, kind)]
        mark = self.start_with_kill_point(point)
        dom, base, mid, top = self.make_chain()
        files = {'top': top, 'mid': mid, 'base': base}
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 0) if kind == 'pull' else self.commit(dom, base, mid)
        status, error = self.wait_end(rec, job, timeout=20)
        rec.wait_for_property(dom, 'State', 'crashed', timeout=10)
        h.wait_for_log(r'Kill point %s reached: killing QEMU' % point, mark)
        self.assertEqual(status, status_wanted, 'a %s whose QEMU was killed at %s: %r' % (kind, point, error))
        if status == 'failed':
            self.assertIn('QEMU went away', error)
        else:
            self.assertEqual(error, '')
        self.assert_one_end(rec, dom, job, kind, status, error)
        self.assert_job_lingers(dom, job, status, 'after the crash')
        chain = [files[f] for f in chain_wanted]
        self.assertEqual(self.img_chain(top), chain, 'the chain on disk after the crash')
        self.assertEqual(self.disks(dom)['vda'], (top, ' <- '.join(reversed(chain))),
                         'Domain.Disks does not match the files')
        for f in chain:
            self.assert_clean(f)
        self.assert_reads(top, self.expected_patterns(), 'after the crash')
        self.assert_same_view(self.reference_view(), top, 'the whole disk after the crash')
        self.assertIsNotNone(h.daemon_pid(), 'qsnapd is gone')
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the restart')
        h.call(dom, D, 'Stop', (0,), 't')

    def test_qemu_killed_after_a_pivot_before_the_read_back(self):
        # A copy pivoted (QEMU switched the disk, the journal has the
        # pivoted mark), then QEMU killed right after qsnapd asked it for
        # the disks: the read-back gets nothing, the mark says what the
        # disk became — stored, the copy completed, the old top kept.
        h = self.h
        mark = self.start_with_kill_point('job-resync')
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('pivoted.qcow2')
        qemu = h.qemu_pid(dom)
        rec = h.record_signals()
        job = h.call(dom, D, 'BlockCopy', ('vda', "<disk type='file'><source file='%s'/><driver type='qcow2'/>"
                                                  "</disk>" % dest, 0, 0), 'sstt')
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=30)
        h.write_pattern_live(dom, 'vda', 0x5a, 10 * MiB, MiB)     # while READY: mirrored into dest
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, timeout=20), ('completed', ''))
        rec.wait_for_property(dom, 'State', 'crashed', timeout=10)
        h.wait_for_log(r'Kill point job-resync reached: killing QEMU', mark)
        h.wait_for_log(r'copy job \S+ had pivoted before QEMU went away: disk vda is now %s \(qcow2\); the old '
                       r'active file %s stays' % (re.escape(dest), re.escape(top)), mark)
        self.assert_one_end(rec, dom, job, 'copy', 'completed', '')
        self.assertEqual(self.stored_source(dom), dest, 'the stored definition after the pivot')
        self.assertEqual(self.disks(dom)['vda'], (dest, dest))
        self.assertTrue(os.path.exists(top), 'the old top was removed')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'the journal stayed')
        written = self.expected_patterns() + [(0x5a, 10 * MiB, MiB)]
        q.wait_until(lambda: not q._alive(qemu), 30, 'the killed QEMU exits')
        self.assert_clean(dest)
        self.assert_reads(dest, written, 'the pivoted copy')
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_chain(dom, [dest], 'started after the pivot')
        self.assert_guest_reads(dom, written, 'started after the pivot')
        h.call(dom, D, 'Stop', (0,), 't')

    def reference_view(self):
        """A raw image with exactly the chain's patterns: what the guest
        sees whatever the job did."""
        path = os.path.join(self.h.root, 'expected-view.raw')
        return q.write_reference(path, 64 * MiB, self.expected_patterns())

    def test_qemu_killed_after_job_finalize(self):
        self.run_point('job-finalize')

    def test_qemu_killed_during_read_back(self):
        self.run_point('job-resync')

    def test_qemu_killed_after_commit_finalize(self):
        self.run_point('job-finalize', 'commit')

    def test_qemu_killed_during_commit_read_back(self):
        self.run_point('job-resync', 'commit')

    def test_qemu_killed_after_job_finalize_two_disks(self):
        # Two pulls that end together: one is finalized (and QEMU killed
        # right then) while the other may wait its turn in the queue.
        h = self.h
        mark = self.start_with_kill_point('job-finalize')
        dom, base, mid, top, bbase, btop = self.make_two_disks(2)
        rec = h.record_signals()
        # Throttled, so that the second starts before the first ends (a new
        # job is Busy while one is finishing), then both let go at once.
        ja = self.pull(dom, 'vda', 256 * 1024)
        jb = self.pull(dom, 'vdb', 256 * 1024)
        h.call(ja, J, 'SetSpeed', (0,), 't')
        try:
            h.call(jb, J, 'SetSpeed', (0,), 't')
        except q.DBusCallError as e:
            # QEMU may already be dead (killed at ja's finalize): a named
            # error, not a generic Failed.
            self.assertIn(e.name, (E + 'NotRunning', E + 'OperationInvalid'), str(e))
        ends = [self.wait_end(rec, j, timeout=20) for j in (ja, jb)]
        rec.wait_for_property(dom, 'State', 'crashed', timeout=10)
        h.wait_for_log(r'Kill point job-finalize reached: killing QEMU', mark)
        # QEMU died before it read the first job-finalize: neither pull was
        # finalized, both fail, both chains stay.
        self.settle()
        for job, (status, error) in zip((ja, jb), ends):
            self.assertEqual(status, 'failed', '%s: %r' % (job, error))
            self.assertIn('QEMU went away', error)
            self.assertEqual([x.args for x in self.completed_signals(rec, job)], [(status, error)])
            self.assert_job_lingers(dom, job, status, job)
        for active, chain in ((top, [top, mid, base]), (btop, [btop, bbase])):
            self.assertEqual(self.img_chain(active), chain)
            for f in chain:
                self.assert_clean(f)
        self.assert_reads(top, self.expected_patterns(), 'vda after the crash')
        self.assert_reads(btop, [(0x77, 0, 2 * MiB)], 'vdb after the crash')
        self.assertIsNotNone(h.daemon_pid(), 'qsnapd is gone')


class NoSpaceTest(FailureTestCase):
    def chain_with_base_on(self, fs, filler_mib):
        """base on fs (a tmpfs), mid and top in the images dir."""
        h = self.h
        base = q.qemu_img_create(os.path.join(fs, 'base.qcow2'), '64M')
        mid = h.create_image('mid.qcow2', backing=base)
        top = h.create_image('top.qcow2', backing=mid)
        q.qemu_io_write_pattern(base, tb.P_BASE, tb.OFF_BASE, tb.PLEN)
        q.qemu_io_write_pattern(mid, tb.P_MID, tb.OFF_MID, tb.PLEN)
        q.qemu_io_write_pattern(mid, tb.P_FILL, tb.OFF_FILL, filler_mib * MiB)
        q.qemu_io_write_pattern(top, tb.P_TOP, tb.OFF_TOP, tb.PLEN)
        self.filler_mib = filler_mib
        dom = h.define_domain('vm', [q.Disk('vda', top)])
        h.call(dom, D, 'Start', (0,), 't')
        return dom, base, mid, top

    def run_enospc_commit(self, active):
        h = self.h
        # base holds ~1.3 MiB; 4 MiB of room, 16 MiB to commit.
        fs = self.tmpfs('tiny', '4m')
        dom, base, mid, top = self.chain_with_base_on(fs, 16)
        self.flush(dom)
        before = self.raw_copy(top, 'before.raw')
        rec = h.record_signals()
        if active:
            job = self.commit(dom, '', '', flags=ACTIVE)
        else:
            job = self.commit(dom, base, mid)
        jtype = 'active-commit' if active else 'commit'
        error = self.assert_failed_once(rec, dom, job, jtype, 'ENOSPC commit')
        print('\nError of a %s into a full tmpfs: %r' % (jtype, error), flush=True)
        self.assertIn('No space left on device', error)
        self.assertEqual(self.dprop(dom, 'State'), 'running', 'the guest stopped after a job hit ENOSPC')
        self.assert_job_lingers(dom, job, 'failed', 'after ENOSPC')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has the failed job')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after ENOSPC')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after ENOSPC')
        self.assert_same_view(before, top, 'the guest view after ENOSPC')
        # The guest writes on (into top, which has room).
        h.write_pattern_live(dom, 'vda', 0x55, 40 * MiB, MiB)
        self.assert_reads(top, [(0x55, 40 * MiB, MiB)], 'a write after ENOSPC')
        # and the disk is free for the next job
        job2 = self.pull(dom, 'vda', 0)
        self.assertEqual(self.wait_end(rec, job2), ('completed', ''))
        self.flush(dom)
        self.assert_chain(dom, [top], 'a pull after ENOSPC')
        self.assert_reads(top, self.expected_patterns() + [(0x55, 40 * MiB, MiB)], 'a pull after ENOSPC')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(top, mid, base)
        self.assert_reads(mid, self.expected_patterns()[:2] + [(tb.P_FILL, tb.OFF_FILL, 16 * MiB)], 'mid')

    def test_commit_into_full_tmpfs(self):
        self.run_enospc_commit(active=False)

    def test_active_commit_into_full_tmpfs(self):
        self.run_enospc_commit(active=True)

    def test_pull_into_full_tmpfs(self):
        # The active overlay lives on the tmpfs, the data comes from below:
        # the pull writes into the very node the guest uses.
        h = self.h
        fs = self.tmpfs('tiny', '4m')
        base = h.create_image('base.qcow2')
        mid = h.create_image('mid.qcow2', backing=base)
        top = q.qemu_img_create(os.path.join(fs, 'top.qcow2'), '64M', backing=mid)
        q.qemu_io_write_pattern(base, tb.P_BASE, tb.OFF_BASE, tb.PLEN)
        q.qemu_io_write_pattern(mid, tb.P_MID, tb.OFF_MID, tb.PLEN)
        q.qemu_io_write_pattern(mid, tb.P_FILL, tb.OFF_FILL, 16 * MiB)
        q.qemu_io_write_pattern(top, tb.P_TOP, tb.OFF_TOP, tb.PLEN)
        self.filler_mib = 16
        dom = h.define_domain('vm', [q.Disk('vda', top)])
        h.call(dom, D, 'Start', (0,), 't')
        self.flush(dom)
        before = self.raw_copy(top, 'before.raw')
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 0)
        error = self.assert_failed_once(rec, dom, job, 'pull', 'ENOSPC pull')
        print('\nError of a pull into a full tmpfs: %r; domain %s' % (error, self.dprop(dom, 'State')), flush=True)
        self.assertIn('No space left on device', error)
        self.assertEqual(self.dprop(dom, 'State'), 'running', 'the guest stopped after a pull hit ENOSPC')
        self.assert_job_lingers(dom, job, 'failed', 'after ENOSPC')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after ENOSPC')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after ENOSPC')
        self.assert_same_view(before, top, 'the guest view after ENOSPC')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(top, mid, base)
        self.assert_reads(top, self.expected_patterns(), 'offline after ENOSPC')


if __name__ == '__main__':
    q.main()
