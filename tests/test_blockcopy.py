#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Block copies end to end (DESIGN.md sections 2, 3 and 8): Domain.BlockCopy,
BlockRebase with COPY, the vda[N] index notation and RELATIVE backing names,
with the real qsnapd, the real polkitd and real QEMU.

The chain is the one of tests/test_blockjobs.py (whose helpers are reused):
base <- mid <- top, 64 MiB qcow2 each, 0x11 at 0 in base, 0x22 at 1 MiB in
mid, 0x33 at 2 MiB in top, plus a filler (0x44 from 4 MiB, in mid) where a
test needs a copy that runs for a while at 1 MiB/s.

- BlockCopy full + Pivot: InterfacesAdded of a "copy-vda-..." job, the
  destination made by qsnapd (mode 0600, a standalone qcow2), Pivot before
  READY refused, READY, a guest write while READY survives, Pivot: the
  destination is the disk (Disks, QEMU, stored and live XML, qemu-img info),
  reads every pattern, equals the guest view taken before (qemu-img
  compare), qemu-img check clean, the old files are released, guest writes
  land in the destination.
- SHALLOW: the destination stands on mid; after Pivot the chain is
  base <- mid <- dest; only top's data is in dest.
- REUSE_EXT into an existing standalone qcow2, then Abort after READY: the
  disk stays on top, the destination stays and holds the whole guest view.
- SYNCHRONOUS_WRITES onto a raw destination: blockdev-mirror gets
  copy-mode write-blocking, a guest write reaches the destination at once
  although the job is throttled to a crawl; Pivot switches the disk to raw.
- Abort before READY: canceled, nothing switched, the destination stays
  (libvirt leaves it), QEMU lets go of it.
- BlockRebase COPY (+SHALLOW), COPY|COPY_RAW: the same mirror path.
- vda[N]: GetXMLDesc numbers <backingStore index='N'> (vda[0] the active
  image); BlockCommit with base 'vda[2]' and top 'vda[1]'; bad indexes name
  themselves.
- RELATIVE: a chain whose headers hold relative names keeps them after
  BlockCommit and BlockRebase; an absolute name makes RELATIVE refuse.
- A destination on an 8 MiB tmpfs: Completed('failed', QEMU's "No space
  left on device"), State failed, Error set, chain and data intact, the
  partial destination removed.
- Stop of the domain during a copy: the job ends once, the chain stays, the
  half-made destination goes.
- kill -9 of qsnapd during a throttled copy: the same job path, adopted as
  a copy, READY, Pivot works; a TRANSIENT_JOB copy is cancelled by the next
  qsnapd instead and its destination removed; qsnapd killed after creating
  the destination but before QEMU had the job (crash point): the next one
  removes the destination and the copy's journal; killed after QEMU
  accepted the job but before the journal said so, the next one adopts
  the copy and marks it started; killed between a copy's end (Abort at
  READY) and its read-back: the destination stays over two restarts.
- A pivot QEMU finished is never forgotten: qsnapd killed right after the
  journal's "pivoted" mark (or after the dismiss), a guest write on QEMU's
  own monitor, QEMU killed: the next qsnapd stores the destination (a
  SHALLOW one on its old backing file), the copy completed, the old top
  kept, the data read back offline and by the started domain; with QEMU
  alive the adoption reads back as before; killed before the mark (the
  copy waiting for job-finalize): failed, definition unchanged, as before.
- Refusals change nothing, create no file: NoSuchDisk, InvalidXML (the
  line named), InvalidArgument, PathNotAllowed, AlreadyExists, NotRunning,
  Busy; uid 65534 → AccessDenied.
"""

import json
import os
import re
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import qsnaptest as q
# Only the shared base class and constants: importing a TestCase with tests
# would run those here too.
from test_blockjobs import (BlockJobTestCase, D, J, E, MiB, P_BASE, P_MID, P_TOP, OFF_BASE, OFF_MID, OFF_TOP, PLEN,
                            variant_text)

# BlockCopy flags
C_SHALLOW, C_REUSE_EXT, C_TRANSIENT_JOB, C_SYNCHRONOUS_WRITES = 1, 2, 4, 8
# BlockRebase flags
R_SHALLOW, R_REUSE_EXT, R_COPY_RAW, R_COPY, R_RELATIVE = 1, 2, 4, 8, 16
# BlockCommit RELATIVE
COMMIT_RELATIVE = 8


def dest_xml(path, fmt='qcow2'):
    driver = "<driver type='%s'/>" % fmt if fmt else ''
    return "<disk type='file'><source file='%s'/>%s</disk>" % (path, driver)


class CopyTestCase(BlockJobTestCase):
    def copy(self, dom, dest, fmt='qcow2', disk='vda', bandwidth=0, flags=0):
        return self.h.call(dom, D, 'BlockCopy', (disk, dest_xml(dest, fmt), bandwidth, flags), 'sstt')

    def rebase(self, dom, base, disk='vda', bandwidth=0, flags=0):
        return self.h.call(dom, D, 'BlockRebase', (disk, base, bandwidth, flags), 'sstt')

    def wait_ready(self, rec, job, start=0, timeout=30):
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=timeout, start=start)
        self.assertEqual(self.jprop(job, 'State'), 'ready')

    def disk_format(self, dom, target='vda'):
        return {d[0]: d[1] for d in self.dprop(dom, 'Disks')}[target]

    def daemon_log_text(self):
        with open(self.h.daemon_log, errors='replace') as f:
            return f.read()


# --------------------------------------------------------------------------

class CopyTest(CopyTestCase):
    def test_copy_full_pivot(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        self.flush(dom)
        expected_view = self.raw_copy(top, 'expected.raw')
        dest = h.image_path('copy.qcow2')
        rec = h.record_signals()
        bw = 1 * MiB
        t0 = time.time()
        job = self.copy(dom, dest, bandwidth=bw)
        t1 = time.time()
        self.assert_job_added(rec, dom, job, 'copy', bw, t0, t1)
        st = os.lstat(dest)
        self.assertEqual(st.st_mode & 0o777, 0o600, 'mode of the destination qsnapd created')
        self.assertIsNone(self.backing_of(dest), 'a full copy stands alone')
        self.assertEqual(q.qemu_img_info(dest)['format'], 'qcow2')

        # ~11 MiB at 1 MiB/s: not READY for seconds.
        self.assertEqual(self.jprop(job, 'State'), 'running')
        with self.assertDBusError(E + 'OperationInvalid'):
            h.call(job, J, 'Pivot')
        self.assertEqual(self.disks(dom)['vda'][0], top, 'a refused Pivot changed the disk')
        mark = rec.mark()
        h.call(job, J, 'SetSpeed', (0,), 't')
        self.wait_ready(rec, job, start=mark)
        self.assertTrue(self.jprop(job, 'Ready'))
        self.assertEqual([e for e in self.job_events(rec, dom, job) if e[3] == 'ready'],
                         [(job, 'vda', 'copy', 'ready', '')], 'BlockJobEvent ready')
        self.assertEqual(self.disks(dom)['vda'][0], top, 'READY must not switch the disk yet')

        # A guest write while READY is mirrored and survives the pivot.
        h.write_pattern_live(dom, 'vda', 0x55, 3 * MiB, MiB)
        q.qemu_io_write_pattern(expected_view, 0x55, 3 * MiB, MiB, fmt='raw')
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'], (dest, dest), 'Domain.Disks right after Completed')
        self.assert_one_end(rec, dom, job, 'copy', 'completed')
        self.assert_disks_before_end(rec, dom, job, dest, dest, 'copy')
        self.assert_progress(rec, job, 'copy')

        self.flush(dom)
        self.assert_chain(dom, [dest], 'after the pivot')
        self.assert_no_nodes_on(dom, [base, mid, top], 'after the pivot')
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (dest, []),
                         'the live XML after the pivot')
        self.assertEqual(self.stored_source(dom), dest, 'the stored definition after the pivot')
        self.assert_same_view(expected_view, dest, 'the destination after the pivot')
        self.assert_reads(dest, self.expected_patterns() + [(0x55, 3 * MiB, MiB)], 'the destination')
        self.assert_guest_reads(dom, self.expected_patterns() + [(0x55, 3 * MiB, MiB)], 'after the pivot')
        self.assert_clean(dest)
        # Guest writes land in the destination now, not in top.
        h.write_pattern_live(dom, 'vda', 0x66, 20 * MiB, MiB)
        self.assert_reads(dest, [(0x66, 20 * MiB, MiB)], 'a write after the pivot')
        self.assertFalse(q.qemu_io_read_pattern(top, 0x66, 20 * MiB, MiB), 'a write after the pivot reached top')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has the job')

        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_chain(dom, [dest], 'after Stop')
        self.assert_clean(dest)
        # And it starts again on the copy.
        h.call(dom, D, 'Start', (0,), 't')
        self.assertEqual(self.qemu_chain(dom), [dest])
        self.assert_guest_reads(dom, [(0x66, 20 * MiB, MiB), (P_TOP, OFF_TOP, PLEN)], 'after a restart of the guest')

    def test_shallow_copy(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('shallow.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, flags=C_SHALLOW)
        self.assertEqual(self.backing_of(dest), mid, 'the shallow destination stands on mid')
        self.wait_ready(rec, job)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assert_one_end(rec, dom, job, 'copy', 'completed')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, dest], 'after the shallow pivot')
        # Only top's data was copied into the destination itself.
        r = q.run([q.QEMU_IMG, 'map', '-U', '--output=json', dest])
        self.assertEqual(r.returncode, 0, 'qemu-img map: %s' % r.stderr)
        own = [(e['start'], e['length']) for e in json.loads(r.stdout) if e['depth'] == 0 and e['data']]
        self.assertEqual(own, [(OFF_TOP, PLEN)], 'what the shallow destination holds itself')
        self.assert_no_nodes_on(dom, [top], 'after the shallow pivot')
        self.assert_reads(dest, self.expected_patterns(), 'the shallow destination with its chain')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the shallow pivot')
        self.assert_clean(dest, mid, base)
        self.assertEqual(self.stored_source(dom), dest)

    def test_reuse_ext_abort_after_ready(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = q.qemu_img_create(h.image_path('reuse.qcow2'), '64M')
        os.chmod(dest, 0o640)
        self.flush(dom)
        expected_view = self.raw_copy(top, 'expected.raw')
        rec = h.record_signals()
        job = self.copy(dom, dest, flags=C_REUSE_EXT)
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o640, 'REUSE_EXT recreated the file')
        self.wait_ready(rec, job)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        self.assert_one_end(rec, dom, job, 'copy', 'canceled')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after Abort')
        self.assertTrue(os.path.exists(dest), 'Abort removed the reused destination')
        self.assert_no_nodes_on(dom, [dest], 'after Abort')
        # A copy aborted after READY is the guest view of that moment.
        self.assert_same_view(expected_view, dest, 'the aborted READY copy')
        self.assert_clean(dest)
        self.assertEqual(self.stored_source(dom), top)

    def test_synchronous_writes_raw(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('sync.raw')
        rec = h.record_signals()
        job = self.copy(dom, dest, fmt='raw', flags=C_SYNCHRONOUS_WRITES)
        self.wait_ready(rec, job)
        self.assertRegex(self.daemon_log_text(), r'"blockdev-mirror".*"copy-mode": *"write-blocking"',
                         'blockdev-mirror was not sent with copy-mode write-blocking')
        # With the job paused the background copy moves nothing; a guest
        # write still reaches the destination before it completes: QEMU's
        # offset grows by it while paused. (The destination cannot be read
        # from the host meanwhile: the mirror shares no consistent read.)
        mark = rec.mark()
        h.call(job, J, 'Pause')
        rec.wait_for_property(job, 'State', 'paused', start=mark)

        def qemu_offset():
            return [j['offset'] for j in h.qmp(dom, 'query-block-jobs')['return']][0]
        before = qemu_offset()
        h.write_pattern_live(dom, 'vda', 0x77, 10 * MiB, MiB)
        self.assertGreaterEqual(qemu_offset() - before, MiB,
                                'a guest write did not reach the destination synchronously')
        h.call(job, J, 'Resume')
        rec.wait_for_property(job, 'State', 'ready', start=mark)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.disk_format(dom), 'raw', 'Domain.Disks format after pivoting to a raw copy')
        self.assertEqual(self.disks(dom)['vda'], (dest, dest))
        self.assertIn("<driver name='qemu' type='raw'/>", h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        self.assert_guest_reads(dom, self.expected_patterns() + [(0x77, 10 * MiB, MiB)], 'after the raw pivot')
        h.call(dom, D, 'Stop', (0,), 't')
        for p, off, n in self.expected_patterns() + [(0x77, 10 * MiB, MiB)]:
            self.assertTrue(q.qemu_io_read_pattern(dest, p, off, n, fmt='raw'), 'the raw copy reads 0x%02x' % p)
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_guest_reads(dom, [(0x77, 10 * MiB, MiB)], 'raw copy after a restart of the guest')

    def test_abort_before_ready(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        dest = h.image_path('aborted.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, bandwidth=MiB)
        self.wait_cur(job, 1)
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.jprop(job, 'State'), 'canceled', 'State when the synchronous Abort returned')
        self.assert_one_end(rec, dom, job, 'copy', 'canceled')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after Abort')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after Abort')
        self.assertTrue(os.path.exists(dest), 'libvirt leaves an aborted copy; so do we')
        self.assert_no_nodes_on(dom, [dest], 'after Abort')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        # The disk is free again.
        job2 = self.copy(dom, h.image_path('again.qcow2'))
        self.wait_ready(rec, job2)
        h.call(job2, J, 'Abort', (0,), 't')


class AttachedTest(CopyTestCase):
    def test_copy_pivot_on_an_attached_domain(self):
        # A domain whose QEMU qsnapd did not launch (<qsnap:monitor>): after
        # Pivot the disks are read back from that running QEMU, as for a
        # launched one — Disks and the stored definition name the
        # destination before Completed — and nothing claims QEMU went away
        # (the journal's pivoted mark is for a QEMU that did).
        h = self.h
        img = h.create_image('att.qcow2')
        q.qemu_io_write_pattern(img, 0x11, 0, MiB)
        sock = os.path.join(h.images_dir, 'att.qmp')
        qemu = h.start_foreign_qemu(img, sock)
        self.addCleanup(lambda: (qemu.kill(), qemu.wait()))
        dom = h.define_domain('att', [q.Disk('vda', img)], monitor=sock)
        self.assertFalse(h.get_property(dom, D, 'Managed'))
        dest = h.image_path('att-copy.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        mark = h.daemon_log_mark()
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'][0], dest, 'Disks after the pivot')
        self.assertEqual(self.stored_source(dom), dest, 'the stored definition after the pivot')
        log = h.daemon_log_since(mark)
        self.assertIn("disk vda is now %s (qcow2; was %s)" % (dest, img), log, 'read back from QEMU')
        self.assertNotIn('went away', log)
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'the journal stayed')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assertEqual(qemu.wait(timeout=20), 0)
        self.assertTrue(q.qemu_io_read_pattern(dest, 0x11, 0, MiB), 'the copy holds the disk')


class StopTest(CopyTestCase):
    def test_stop_during_copy(self):
        # The guest's QEMU quits under a running copy: the job ends (QEMU
        # cancels its jobs when it quits), once; the disk stays on its chain
        # and the half-made destination qsnapd created goes (only the user's
        # Abort keeps it).
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        dest = h.image_path('stopped.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, bandwidth=MiB)
        self.wait_cur(job, 1)
        h.call(dom, D, 'Stop', (0,), 't')
        status, error = self.wait_end(rec, job)
        self.assertIn(status, ('failed', 'canceled'), 'a copy whose QEMU quit ended %r (%r)' % (status, error))
        self.assert_one_end(rec, dom, job, 'copy', status, error)
        self.assertFalse(os.path.exists(dest), 'the half-made destination stayed')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'copy journal left behind')
        self.assert_chain(dom, [base, mid, top], 'after Stop')
        self.assertEqual(self.stored_source(dom), top)
        self.assert_clean(top, mid, base)
        self.assert_reads(top, self.expected_patterns(), 'after Stop')


class RebaseCopyTest(CopyTestCase):
    def test_rebase_copy(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        rec = h.record_signals()
        # COPY + SHALLOW: a qcow2 on mid, as BlockCopy SHALLOW.
        dest = h.image_path('rebased.qcow2')
        job = self.rebase(dom, dest, flags=R_COPY | R_SHALLOW)
        self.assertTrue(path_id(job).startswith('copy-vda-'), job)
        self.assertEqual(self.jprop(job, 'Type'), 'copy')
        self.assertEqual(self.backing_of(dest), mid)
        self.wait_ready(rec, job)
        h.call(job, J, 'Abort', (2,), 't')    # PIVOT
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.flush(dom)
        self.assert_chain(dom, [base, mid, dest], 'after BlockRebase COPY|SHALLOW')
        self.assert_reads(dest, self.expected_patterns(), 'after BlockRebase COPY|SHALLOW')
        self.assert_clean(dest)

        # COPY + COPY_RAW: the whole chain flattened into a raw file.
        raw = h.image_path('rebased.raw')
        mark = rec.mark()
        job = self.rebase(dom, raw, flags=R_COPY | R_COPY_RAW)
        self.wait_ready(rec, job)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.disk_format(dom), 'raw')
        self.assertEqual(self.disks(dom)['vda'], (raw, raw))
        self.assert_no_nodes_on(dom, [base, mid, dest], 'after BlockRebase COPY|COPY_RAW')
        for p, off, n in self.expected_patterns():
            self.assertTrue(q.qemu_io_read_pattern(raw, p, off, n, fmt='raw'), 'raw copy reads 0x%02x' % p)
        self.assertEqual(q.qemu_img_info(raw)['format'], 'raw')

        # Refusals: RELATIVE with COPY, SHALLOW onto raw, COPY flags without COPY.
        chain = self.disks(dom)['vda']
        for flags in (R_COPY | R_RELATIVE, R_SHALLOW, R_COPY_RAW, R_REUSE_EXT):
            self.assert_refused(dom, E + 'InvalidArgument', 'BlockRebase',
                                ('vda', h.image_path('x.qcow2'), 0, flags), 'sstt')
        self.assertEqual(self.disks(dom)['vda'], chain)


def path_id(job):
    return re.sub(r'_([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), job.rsplit('/', 1)[1])


class IndexRelativeTest(CopyTestCase):
    def test_index_notation(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        root = ET.fromstring(h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        disk = [d for d in root.iter('disk') if d.find('target').get('dev') == 'vda'][0]
        indexes, bs = [], disk.find('backingStore')
        while bs is not None and bs.find('source') is not None:
            indexes.append((bs.get('index'), bs.find('source').get('file')))
            bs = bs.find('backingStore')
        self.assertEqual(indexes, [('1', mid), ('2', base)], 'backingStore index numbering')

        for base_arg, top_arg, what in (('vda[3]', 'vda[1]', 'vda[3]'), ('vda[2]', 'vda[9]', 'vda[9]'),
                                        ('vdb[2]', 'vda[1]', 'vdb[2]'), ('vda[x]', 'vda[1]', 'vda[x]'),
                                        ('vda[1]', 'vda[2]', 'vda[1]'), ('vda[-1]', 'vda[1]', 'vda[-1]')):
            err = self.assert_refused(dom, E + 'InvalidArgument', 'BlockCommit',
                                      ('vda', base_arg, top_arg, 0, 0), 'ssstt')
            self.assertIn(what, str(err), 'the error names the bad value')
        # vda[0] is the active image: committing it needs ACTIVE.
        self.assert_refused(dom, E + 'InvalidArgument', 'BlockCommit', ('vda', 'vda[1]', 'vda[0]', 0, 0), 'ssstt')

        rec = h.record_signals()
        job = self.commit(dom, 'vda[2]', 'vda[1]')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.flush(dom)
        self.assert_chain(dom, [base, top], 'after BlockCommit vda[2] vda[1]')
        self.assert_reads(top, self.expected_patterns(), 'after BlockCommit vda[2] vda[1]')
        self.assert_reads(base, [(P_MID, OFF_MID, PLEN)], 'mid committed into base')
        # BlockRebase takes the notation too: the base of a partial pull.
        mark = rec.mark()
        job = self.rebase(dom, 'vda[1]')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assert_chain(dom, [base, top], 'after BlockRebase vda[1]')
        self.assert_refused(dom, E + 'InvalidArgument', 'BlockRebase', ('vda', 'vda[0]', 0, 0), 'sstt')
        self.assert_refused(dom, E + 'InvalidArgument', 'BlockRebase', ('vda', 'vda[2]', 0, 0), 'sstt')

    def relative_chain(self, sub='rel'):
        """base <- mid <- top in a sub-folder, each naming its backing file
        relatively (qemu-img -b with a bare name)."""
        h = self.h
        d = h.image_path(sub)
        os.mkdir(d)
        base = q.qemu_img_create(os.path.join(d, 'base.qcow2'))
        mid = os.path.join(d, 'mid.qcow2')
        top = os.path.join(d, 'top.qcow2')
        r = q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid], cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top], cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr)
        q.qemu_io_write_pattern(base, P_BASE, OFF_BASE, PLEN)
        q.qemu_io_write_pattern(mid, P_MID, OFF_MID, PLEN)
        q.qemu_io_write_pattern(top, P_TOP, OFF_TOP, PLEN)
        self.assertEqual(q.qemu_img_info(top)['backing-filename'], 'mid.qcow2')
        return base, mid, top

    def header_backing(self, img):
        return q.qemu_img_info(img).get('backing-filename')

    def test_relative(self):
        h = self.h
        self.filler_mib = 0
        base, mid, top = self.relative_chain('rel')
        base2, mid2, top2 = self.relative_chain('rel2')
        base4, mid4, top4 = self.relative_chain('rel4')
        abase = h.create_image('abase.qcow2')
        amid = h.create_image('amid.qcow2', backing=abase)
        atop = h.create_image('atop.qcow2', backing=amid)
        dom = h.define_domain('vm', [q.Disk('vda', top), q.Disk('vdb', top2), q.Disk('vdc', atop),
                                     q.Disk('vdd', top4)])
        h.call(dom, D, 'Start', (0,), 't')
        rec = h.record_signals()
        patterns = [(P_BASE, OFF_BASE, PLEN), (P_MID, OFF_MID, PLEN), (P_TOP, OFF_TOP, PLEN)]

        # BlockCommit RELATIVE: top names base relatively once mid is merged.
        job = self.commit(dom, base, mid, flags=COMMIT_RELATIVE)
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.header_backing(top), 'base.qcow2', 'RELATIVE commit: the backing name of top')
        self.assertEqual(self.disks(dom)['vda'], (top, '%s <- %s' % (base, top)))
        self.assert_reads(top, patterns, 'after the RELATIVE commit')
        # Without RELATIVE QEMU writes the absolute name: the flag is what kept it.
        mark = rec.mark()
        job = self.commit(dom, base4, mid4, disk='vdd')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.header_backing(top4), base4, 'a commit without RELATIVE')

        # BlockRebase RELATIVE: a partial pull onto base keeps the name relative.
        mark = rec.mark()
        job = self.rebase(dom, base2, disk='vdb', flags=R_RELATIVE)
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.header_backing(top2), 'base.qcow2', 'RELATIVE rebase: the backing name of top')
        self.assertEqual(self.disks(dom)['vdb'], (top2, '%s <- %s' % (base2, top2)))
        h.flush_live(dom, 'vdb')
        self.assert_reads(top2, patterns, 'after the RELATIVE rebase')
        self.assert_clean(top, top2)
        # QEMU shows a node whose header names its backing file relatively
        # as json:{...}: the next job on that disk still finds its nodes.
        mark = rec.mark()
        job = self.pull(dom, 'vdb')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.disks(dom)['vdb'], (top2, top2))
        h.flush_live(dom, 'vdb')
        self.assert_reads(top2, patterns, 'after a pull following the RELATIVE rebase')

        # An absolute backing name cannot be kept relative: refused, named.
        err = self.assert_refused(dom, E + 'InvalidArgument', 'BlockCommit', ('vdc', abase, amid, 0, COMMIT_RELATIVE),
                                  'ssstt')
        self.assertIn(atop, str(err))
        self.assert_refused(dom, E + 'InvalidArgument', 'BlockRebase', ('vdc', abase, 0, R_RELATIVE), 'sstt')
        # RELATIVE needs a base.
        self.assert_refused(dom, E + 'InvalidArgument', 'BlockRebase', ('vdc', '', 0, R_RELATIVE), 'sstt')


class FailureTest(CopyTestCase):
    def test_no_space_on_tmpfs(self):
        h = self.h
        tiny = h.image_path('tiny')
        os.mkdir(tiny)
        r = q.run(['mount', '-t', 'tmpfs', '-o', 'size=8M,mode=0700', 'qsnapt-tiny', tiny])
        self.assertEqual(r.returncode, 0, 'mount tmpfs: %s' % r.stderr)
        self.addCleanup(lambda: q.run(['umount', '-l', tiny]))
        # The tmpfs is an image root of this qsnapd.
        h.daemon_args.append('--image-root=' + tiny)
        h.restart_daemon(kill=False)
        dom, base, mid, top = self.make_chain(filler_mib=16)
        dest = os.path.join(tiny, 'copy.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        status, error = self.wait_end(rec, job, timeout=60)
        self.assertEqual(status, 'failed')
        self.assertIn('No space left on device', error)
        props = self.assert_one_end(rec, dom, job, 'copy', 'failed', error)
        self.assertEqual(props['Error'], error)
        self.assertFalse(os.path.exists(dest), 'the partial destination was left behind')
        self.assertEqual(os.listdir(tiny), [], 'files left on the tmpfs')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after the failed copy')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the failed copy')
        self.assert_reads(top, self.expected_patterns(), 'after the failed copy')
        self.assert_clean(top, mid, base)
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        self.assertEqual(self.dprop(dom, 'State'), 'running')

    def test_refusals(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        other = tempfile.mkdtemp(prefix='qsnapt-copy-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', other]))
        link = h.image_path('link.qcow2')
        open(os.path.join(other, 'target.qcow2'), 'w').close()
        os.symlink(os.path.join(other, 'target.qcow2'), link)
        small = q.qemu_img_create(h.image_path('small.qcow2'), '32M')
        raw_src = h.image_path('exists.raw')
        with open(raw_src, 'wb') as f:
            f.truncate(64 * MiB)
        fresh = h.image_path('fresh.qcow2')

        def refused(error, disk, xml, flags=0, bandwidth=0, names=None):
            err = self.assert_refused(dom, E + error, 'BlockCopy', (disk, xml, bandwidth, flags), 'sstt')
            if names:
                self.assertIn(names, str(err), 'the error names the bad value')
            return err

        refused('NoSuchDisk', 'vdz', dest_xml(fresh), names='vdz')
        refused('InvalidXML', 'vda', "<disk type='file'><source file='%s'/>" % fresh, names='line')
        refused('InvalidXML', 'vda', "<disk type='block'><source dev='/dev/sda'/></disk>", names='block')
        refused('InvalidXML', 'vda', "<disk type='file'><driver type='qcow2'/></disk>", names='source')
        refused('InvalidXML', 'vda', dest_xml('relative.qcow2'), names='relative.qcow2')
        refused('InvalidXML', 'vda', dest_xml(fresh, 'vmdk'), names='vmdk')
        refused('InvalidXML', 'vda', '<!DOCTYPE d [<!ENTITY e "x">]><disk type="file"><source file="&e;"/></disk>')
        refused('InvalidXML', 'vda', '<disk>' + ' ' * (4 * MiB + 1) + '</disk>')
        refused('InvalidArgument', 'vda', dest_xml(fresh), flags=16, names='0x10')
        refused('InvalidArgument', 'vda', dest_xml(fresh), bandwidth=1 << 63)
        refused('PathNotAllowed', 'vda', dest_xml(os.path.join(other, 'out.qcow2')), names=other)
        refused('PathNotAllowed', 'vda', dest_xml(link), names=link)
        refused('AlreadyExists', 'vda', dest_xml(small), names=small)
        refused('InvalidArgument', 'vda', dest_xml(top), flags=C_REUSE_EXT, names=top)
        refused('InvalidArgument', 'vda', dest_xml(mid), flags=C_REUSE_EXT, names=mid)
        refused('InvalidArgument', 'vda', dest_xml(fresh), flags=C_REUSE_EXT, names=fresh)
        refused('InvalidArgument', 'vda', dest_xml(small), flags=C_REUSE_EXT, names=small)
        refused('InvalidArgument', 'vda', dest_xml(raw_src, 'qcow2'), flags=C_REUSE_EXT, names=raw_src)
        refused('InvalidArgument', 'vda', dest_xml(fresh, 'raw'), flags=C_SHALLOW, names='raw')
        self.assertEqual(os.path.getsize(os.path.join(other, 'target.qcow2')), 0, 'written through the symlink')
        self.assertEqual(os.listdir(other), ['target.qcow2'])

        # A second job on the disk: Busy; the first is unharmed.
        rec = h.record_signals()
        job = self.copy(dom, h.image_path('first.qcow2'), bandwidth=MiB)
        h.call(job, J, 'Pause')    # so that the fingerprint holds still
        rec.wait_for_property(job, 'State', 'paused')
        refused('Busy', 'vda', dest_xml(fresh))
        self.assertFalse(os.path.exists(fresh))
        h.call(job, J, 'Resume')
        h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        # A shut-off domain: NotRunning.
        h.call(dom, D, 'Stop', (0,), 't')
        refused('NotRunning', 'vda', dest_xml(fresh))
        self.assertFalse(os.path.exists(fresh))

    def test_access_denied(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('denied.qcow2')
        before = self.fingerprint(dom)
        rec = h.record_signals()
        for method, args in (('BlockCopy', [('s', 'vda'), ('s', dest_xml(dest)), ('t', 0), ('t', 0)]),
                             ('BlockRebase', [('s', 'vda'), ('s', dest), ('t', 0), ('t', R_COPY)])):
            argv = ['--dest', q.BUS_NAME, '--object-path', dom, '--method', D + '.' + method,
                    '--timeout', '30'] + [variant_text(s, v) for s, v in args]
            rc, out, err = h.gdbus_as(q.NOBODY_UID, 'call', *argv, timeout=40)
            self.assertNotEqual(rc, 0, '%s as nobody succeeded' % method)
            self.assertIn(q.ACCESS_DENIED, err, '%s as nobody: %s' % (method, err))
        self.assertEqual(self.fingerprint(dom), before, 'a denied call changed something')
        self.settle(dom)
        self.assertFalse(os.path.exists(dest))
        self.assertEqual([s for s in rec.records if s.path.startswith(dom) or s.member == 'InterfacesAdded'], [],
                         'signals sent for denied calls')


class CopyRestartTest(CopyTestCase):
    def first_get_all(self, path):
        """GetAll on a fresh connection: the first answer of the new qsnapd."""
        client = self.h.new_client()
        try:
            return client.get_all(path, J)
        finally:
            client.close()

    def test_kill9_during_copy(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        dest = h.image_path('copy.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, bandwidth=MiB)
        cur0 = self.wait_cur(job, 1)
        before = h.get_all(job, J)
        h.restart_daemon()
        after = self.first_get_all(job)    # DBusCallError if the path is gone
        self.assertEqual(after['State'], 'running', 'State of the adopted copy')
        for p in ('Type', 'Disk', 'Domain', 'End', 'Bandwidth'):
            self.assertEqual(after[p], before[p], 'adopted copy: %s' % p)
        self.assertGreaterEqual(after['Cur'], cur0)
        self.assertEqual(self.dprop(dom, 'Jobs'), [job])
        mark = rec.mark()
        h.call(job, J, 'SetSpeed', (0,), 't')
        self.wait_ready(rec, job, start=mark)
        h.call(job, J, 'Pivot')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assert_one_end(rec, dom, job, 'copy', 'completed')
        self.assertEqual(self.disks(dom)['vda'], (dest, dest), 'Domain.Disks right after Completed')
        self.flush(dom)
        self.assert_chain(dom, [dest], 'after the adopted copy')
        self.assertEqual(self.stored_source(dom), dest)
        self.assert_no_nodes_on(dom, [base, mid, top], 'after the adopted copy')
        self.assert_reads(dest, self.expected_patterns(), 'after the adopted copy')
        self.assert_clean(dest)
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'copy journal left behind')

    def test_crash_before_the_mirror_started(self):
        # qsnapd killed after it created the destination and wrote the copy's
        # journal, before QEMU had the job: the next qsnapd removes both.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('orphan.qcow2')
        mark, outcome = h.crash_at('block-copy:journal-written', dom, D, 'BlockCopy',
                                   ('vda', dest_xml(dest), 0, 0), 'sstt', start_again=False)
        self.assertIsInstance(outcome, q.DBusCallError)
        self.assertEqual(outcome.name, 'org.freedesktop.DBus.Error.NoReply', outcome)
        journals = [f for f in os.listdir(h.runtime_dir) if '.job-copy-vda-' in f]
        self.assertEqual(len(journals), 1, 'the crash point is after the journal')
        self.assertTrue(os.path.exists(dest), 'the crash point is after the destination was created')
        h.start_daemon()
        self.assertEqual(self.dprop(dom, 'Jobs'), [])
        q.wait_until(lambda: not os.path.exists(dest), 5, 'the orphaned destination is removed')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'the orphaned journal stayed')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        self.assert_chain(dom, [base, mid, top], 'after the crash')
        self.assert_no_nodes_on(dom, [dest], 'after the crash')
        # The disk works as before.
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        h.call(job, J, 'Abort', (0,), 't')

    def journals(self):
        return [f for f in os.listdir(self.h.runtime_dir) if '.job-' in f]

    def test_crash_between_the_end_and_the_read_back(self):
        # qsnapd killed after a copy aborted at READY left QEMU (dismissed)
        # and before its end was accounted for (block-copy:ended), with no
        # checkpoint (the target got no bitmaps): the copy's journal says it
        # started, so no later qsnapd takes it for one that never did — the
        # destination it created stays, as after any Abort, over restarts.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('ended.qcow2')
        self.flush(dom)
        expected_view = self.raw_copy(top, 'expected.raw')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        mark, outcome = h.crash_at('block-copy:ended', job, J, 'Abort', (0,), 't')
        self.assertIsInstance(outcome, q.DBusCallError)
        h.wait_for_log(r'copy job \S+ ended while qsnapd was away; its destination \S+ stays', mark)
        q.wait_until(lambda: self.journals() == [], 10, 'the journal of the ended copy goes')
        self.assertTrue(os.path.exists(dest), 'the aborted READY copy was removed')
        self.assert_no_nodes_on(dom, [dest], 'after the restart')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        # A second restart does not take it for a copy that never started.
        h.restart_daemon()
        self.assertEqual(self.dprop(dom, 'Jobs'), [])
        self.assertTrue(os.path.exists(dest), 'a second restart removed the aborted READY copy')
        self.assert_same_view(expected_view, dest, 'the copy kept over two restarts')
        self.assert_clean(dest)
        self.assert_chain(dom, [base, mid, top], 'after the restarts')
        self.assertEqual(self.stored_source(dom), top)

    def test_crash_after_the_pivot_then_qemu_killed(self):
        # qsnapd killed between a Pivot's end and its read-back
        # (block-copy:ended: QEMU forgot the job), then QEMU killed too: the
        # journal's pivoted mark, written before the dismiss, tells the next
        # qsnapd that the disk is the destination — stored as such, the copy
        # completed, the old top kept.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('pivoted.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        # written while READY: the mirror puts it into the destination
        h.write_pattern_live(dom, 'vda', 0x5a, 10 * MiB, MiB)
        alone = self.qemu_alone(dom)
        # (no bus call until qsnapd starts again: it would be activated)
        h.crash_at('block-copy:ended', job, J, 'Pivot', start_again=False)
        self.assertEqual(self.qemu_alone_jobs(alone), {}, 'the crash point is after the dismiss')
        self.write_pattern_qemu_alone(alone, 0x5b, 20 * MiB, MiB)  # after the pivot: into dest
        self.kill_qemu_alone(alone)
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'copy job \S+ had pivoted before QEMU went away: disk vda is now %s' % re.escape(dest), mark)
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.assertEqual(self.stored_source(dom), dest, 'the stored definition after the recovered pivot')
        self.assertEqual(self.journals(), [])
        self.assertTrue(os.path.exists(top), 'the old top was removed')
        written = self.expected_patterns() + [(0x5a, 10 * MiB, MiB), (0x5b, 20 * MiB, MiB)]
        self.assert_reads(dest, written, 'the pivoted copy')
        self.assertFalse(q.qemu_io_read_pattern(top, 0x5b, 20 * MiB, MiB), 'the old top has the write after the pivot')
        self.assert_clean(dest)
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_chain(dom, [dest], 'started after the recovered pivot')
        self.assert_guest_reads(dom, written, 'started after the recovered pivot')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(dest)

    def test_crash_at_the_pivot_mark_then_qemu_killed(self):
        # SHALLOW: qsnapd killed right after QEMU ended the pivoted copy and
        # the journal said so (block-copy:pivoted: QEMU still lists the job,
        # concluded), the guest writes into the destination, QEMU is killed
        # too: the next qsnapd stores the destination as the disk — standing
        # on mid as it was created — reports the copy completed, deletes
        # nothing and names the old top in its log.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('shallow.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, flags=C_SHALLOW)
        self.wait_ready(rec, job)
        h.write_pattern_live(dom, 'vda', 0x5a, 10 * MiB, MiB)     # while READY
        alone = self.qemu_alone(dom)
        h.crash_at('block-copy:pivoted', job, J, 'Pivot', start_again=False)
        self.assertEqual(self.qemu_alone_jobs(alone), {path_id(job): 'concluded'},
                         'the crash point is after the end in QEMU, before the dismiss')
        self.write_pattern_qemu_alone(alone, 0x5b, 20 * MiB, MiB)  # after the pivot: into dest
        self.kill_qemu_alone(alone)
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'copy job \S+ had pivoted before QEMU went away: disk vda is now %s \(qcow2\); the old '
                       r'active file %s stays' % (re.escape(dest), re.escape(top)), mark)
        self.assertEqual((self.jprop(job, 'State'), self.jprop(job, 'Error')), ('completed', ''))
        self.assertEqual(self.stored_source(dom), dest, 'the stored definition after the recovered pivot')
        self.assertEqual(self.disks(dom)['vda'], (dest, ' <- '.join([base, mid, dest])))
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (dest, [mid, base]))
        self.assertEqual(self.journals(), [])
        for f in (base, mid, top, dest):
            self.assertTrue(os.path.exists(f), '%s was removed' % f)
        written = self.expected_patterns() + [(0x5a, 10 * MiB, MiB), (0x5b, 20 * MiB, MiB)]
        self.assert_reads(dest, written, 'the pivoted shallow copy')
        self.assertFalse(q.qemu_io_read_pattern(top, 0x5b, 20 * MiB, MiB), 'the old top has the write after the pivot')
        self.assert_clean(dest)
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_chain(dom, [base, mid, dest], 'started after the recovered pivot')
        self.assert_guest_reads(dom, written, 'started after the recovered pivot')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(dest)

    def test_crash_at_the_pivot_mark_qemu_alive(self):
        # The same crash point with QEMU still running: the next qsnapd
        # adopts the concluded job and reads the disks back from QEMU.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('adopted.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        h.crash_at('block-copy:pivoted', job, J, 'Pivot')
        q.wait_until(lambda: self.jprop(job, 'State') == 'completed', 30, 'the adopted copy completes')
        self.assertEqual(self.stored_source(dom), dest)
        self.assertEqual(self.journals(), [])
        self.flush(dom)
        self.assert_chain(dom, [dest], 'after the adopted pivot')
        self.assert_reads(dest, self.expected_patterns(), 'after the adopted pivot')

    def test_crash_before_the_pivot_mark_then_qemu_killed(self):
        # The window without the mark (docs/decisions.md): qsnapd killed
        # after job-complete, with the copy waiting for job-finalize
        # (block-copy:pivot-pending), then QEMU killed. The journal cannot
        # tell the next qsnapd whether QEMU switched the disk: as before the
        # mark existed, the copy failed ("QEMU went away"), the definition
        # stays on top, the destination it created stays. Here QEMU had not
        # switched (and holds guest I/O while the job waits: an HMP qemu-io
        # write does not complete), so top and dest hold the same data.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('unmarked.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest)
        self.wait_ready(rec, job)
        h.write_pattern_live(dom, 'vda', 0x5a, 10 * MiB, MiB)     # while READY: into top and dest
        alone = self.qemu_alone(dom)
        h.crash_at('block-copy:pivot-pending', job, J, 'Pivot', start_again=False)
        self.assertEqual(self.qemu_alone_jobs(alone), {path_id(job): 'pending'}, 'QEMU waits for job-finalize')
        self.kill_qemu_alone(alone)
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'copy job \S+ had started; its destination \S+ stays', mark)
        self.assertEqual(self.jprop(job, 'State'), 'failed')
        self.assertIn('QEMU went away while qsnapd was not running', self.jprop(job, 'Error'))
        self.assertEqual(self.stored_source(dom), top, 'the definition changed without a pivoted mark')
        self.assertTrue(os.path.exists(dest), 'the destination was removed')
        self.assertEqual(self.journals(), [])
        self.assertNotIn('had pivoted', h.daemon_log_since(mark))
        written = self.expected_patterns() + [(0x5a, 10 * MiB, MiB)]
        self.assert_reads(top, written, 'top')
        self.assert_reads(dest, written, 'the destination')
        self.assert_clean(top, dest)
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_chain(dom, [base, mid, top], 'started again')
        self.assert_guest_reads(dom, written, 'started again')
        h.call(dom, D, 'Stop', (0,), 't')

    def test_crash_after_qemu_accepted_the_copy(self):
        # qsnapd killed when QEMU had accepted the mirror, before the copy's
        # journal said so (block-copy:accepted): the next qsnapd adopts the
        # copy and marks it started; killed again between the copy's end and
        # its read-back, the one after keeps the destination.
        h = self.h
        dom, base, mid, top = self.make_chain()
        dest = h.image_path('accepted.qcow2')
        self.flush(dom)
        expected_view = self.raw_copy(top, 'expected.raw')
        mark, outcome = h.crash_at('block-copy:accepted', dom, D, 'BlockCopy', ('vda', dest_xml(dest), 0, 0), 'sstt')
        self.assertIsInstance(outcome, q.DBusCallError)
        self.assertEqual(outcome.name, 'org.freedesktop.DBus.Error.NoReply', outcome)
        jobs = self.dprop(dom, 'Jobs')
        self.assertEqual(len(jobs), 1, 'the copy QEMU runs was not adopted')
        job = jobs[0]
        self.assertTrue(path_id(job).startswith('copy-vda-'), job)
        self.assertTrue(os.path.exists(dest))
        journal = self.journals()
        self.assertEqual(len(journal), 1)
        with open(os.path.join(h.runtime_dir, journal[0])) as f:
            # "qsnap-copy <created> <transient> <node> <started> <format> <pivoted>"
            self.assertEqual(f.readline().split()[4], '1', 'the adopting qsnapd did not mark the copy started')
        q.wait_until(lambda: self.jprop(job, 'State') == 'ready', 30, 'the adopted copy is ready')
        h.crash_at('block-copy:ended', job, J, 'Abort', (0,), 't')
        q.wait_until(lambda: self.journals() == [], 10, 'the journal of the ended copy goes')
        h.restart_daemon()
        self.assertTrue(os.path.exists(dest), 'the adopted, aborted READY copy was removed')
        self.assert_same_view(expected_view, dest, 'the adopted copy')
        self.assert_clean(dest)
        self.assert_chain(dom, [base, mid, top], 'after the restarts')

    def test_kill9_transient_job_is_cancelled(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        dest = h.image_path('transient.qcow2')
        rec = h.record_signals()
        job = self.copy(dom, dest, bandwidth=MiB, flags=C_TRANSIENT_JOB)
        self.wait_cur(job, 1)
        mark = rec.mark()
        h.restart_daemon()
        self.assertEqual(self.wait_end(rec, job, start=mark), ('canceled', ''))
        self.assertEqual(self.jprop(job, 'State'), 'canceled')
        self.assertFalse(os.path.exists(dest), 'the destination of an abandoned transient copy stayed')
        self.assert_chain(dom, [base, mid, top], 'after the transient copy was cancelled')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [])
        self.assert_no_nodes_on(dom, [dest], 'after the transient copy was cancelled')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the transient copy was cancelled')


if __name__ == '__main__':
    q.main()
