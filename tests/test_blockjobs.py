#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Block jobs end to end (DESIGN.md sections 2, 3 and 8): Domain.BlockPull
and Domain.BlockCommit, the org.example.BlockJob1 objects they return, with
the real qsnapd, the real polkitd and real QEMU.

Every test builds the same three-layer chain with qemu-img before the
domain starts, base <- mid <- top (64 MiB qcow2 each), and writes one
pattern into each layer with qemu-io: 0x11 at 0 into base, 0x22 at 1 MiB
into mid, 0x33 at 2 MiB into top (1 MiB each). Tests that need a job to
stay running add a filler, 0x44 from 4 MiB on, into mid (the layer every
job here copies), and throttle the job to 1 MiB/s; they raise the speed
(SetSpeed 0) to finish quickly. Afterwards the data is read through QEMU
(HMP qemu-io) and from the host (qemu-io -U -r, after a flush), chains are
compared with qemu-img info and QEMU's query-block, and qemu-img check must
be clean.

- BlockPull: Progress signals with a non-decreasing cur, at most 10 a
  second; exactly one Completed('completed', ''), after the Domain's
  PropertiesChanged(Disks) with the new chain; BlockJobEvent on the Domain;
  the job's properties (InterfacesAdded, Type, Disk, Domain, Bandwidth,
  StartTime, State, Cur == End, Error) and its id ("pull-vda-..."); top
  has no backing file and reads every pattern; QEMU dropped the old nodes.
- BlockCommit non-active (top = mid, base = base, DELETE, disk given as
  the active file's path): mid's data is in base, the chain is base <- top,
  mid is deleted, the guest view is bit for bit what it was (qemu-img
  compare against a raw copy taken before), the guest writes on.
- BlockCommit ACTIVE (top "", base ""): throttled, Pivot before READY is
  OperationInvalid and changes nothing; SetSpeed(0) → Ready() signal, State
  ready, BlockJobEvent 'ready'; a guest write while READY survives; Pivot →
  Completed; the active file is base (Disks, query-block, the stored and the
  live XML, and after Stop), guest writes after the pivot land in base.
- Abort of a throttled pull, paused first: Completed('canceled'), State canceled when the
  synchronous Abort returns, the chain and data as before; the job object
  answers Get at every instant while a job ends (polled from another
  connection with 8 calls in flight). Every end: the Domain's
  PropertiesChanged(Disks) with the new chain comes before Completed, and
  the object stays (no InterfacesRemoved; Jobs still lists it).
- SetSpeed: Bandwidth follows (PropertiesChanged) and QEMU's speed too;
  over a measured window QEMU's offset moves, and never by more than the
  speed allows (an upper bound with generous slack: no ratio between two
  noisy windows, which a loaded machine could flip); Progress comes at
  least about once a second while moving; Pause/Resume (once QEMU says
  paused, its offset stands).
- Refusals change nothing (no job object, no QEMU job, Disks, files, no
  signals): unknown disk → NoSuchDisk; unknown flags, base/top not in the
  chain or in the wrong order, top = active without ACTIVE → InvalidArgument;
  a shut-off domain → NotRunning; a second job on the disk → Busy; Abort
  ASYNC, and the disk stays Busy until the aborted job has sent Completed;
  then SHALLOW with base "" commits into the image right below top.
- uid 65534: BlockPull/BlockCommit and the job methods → AccessDenied, and
  nothing changes (the job keeps running at its speed).
- kill -9 of qsnapd while a throttled pull runs: the next qsnapd shows the
  same job path with State running on its first answer, progress moves on,
  and the job ends with Completed and the chain bookkeeping done; the same
  with an active commit that was READY (adopted as active-commit, READY,
  Abort(PIVOT) pivots); a pull that ended while no qsnapd ran (waiting in
  QEMU) is finished by the next one and reported completed, once; qsnapd
  killed right after a pivoted active commit's "pivoted" mark, a guest
  write into base on QEMU's own monitor, QEMU killed: the next qsnapd
  stores base as the disk, reports the commit completed, keeps the old
  files, and the started domain reads every write.
- Stop during a job: the job ends (failed or canceled, once), the chain
  stays; after the next Start jobs work again.
- Two disks: a pull on vdb starts while one runs on vda (only vda is Busy);
  both end completed at about the same time, each chain right, the guest
  still running.
"""

import contextlib
import os
import re
import signal
import time
import xml.etree.ElementTree as ET

from gi.repository import GLib

import qsnaptest as q

D = q.DOMAIN_IFACE
J = q.JOB_IFACE
E = q.ERROR_PREFIX
MiB = 1 << 20

# BlockCommit flags (libvirt's values)
SHALLOW, DELETE, ACTIVE = 1, 2, 4
# BlockJob1.Abort flags
ABORT_ASYNC, ABORT_PIVOT = 1, 2

P_BASE, P_MID, P_TOP = 0x11, 0x22, 0x33
OFF_BASE, OFF_MID, OFF_TOP = 0, MiB, 2 * MiB
PLEN = MiB
P_FILL, OFF_FILL = 0x44, 4 * MiB    # the filler of throttled tests, in mid

JOB_PROPS = ('Type', 'Disk', 'Domain', 'Cur', 'End', 'Bandwidth', 'State', 'Ready', 'Error', 'StartTime',
             'Rate', 'Eta')
FINAL_STATES = ('completed', 'failed', 'canceled')


def path_decode(element):
    """The inverse of sd_bus_path_encode() for one path element."""
    return re.sub(r'_([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), element)


def variant_text(sig, value):
    return GLib.Variant(sig, value).print_(True)


TimedRecorder = q.TimedRecorder


class BlockJobTestCase(q.QsnapTestCase):
    maxDiff = None

    # ---- set-up
    def make_chain(self, name='vm', filler_mib=0, start=True):
        """base <- mid <- top with one pattern per layer (and a filler of
        filler_mib MiB in mid), a domain on top, started. Returns
        (dom, base, mid, top)."""
        h = self.h
        base = h.create_image('base.qcow2')
        mid = h.create_image('mid.qcow2', backing=base)
        top = h.create_image('top.qcow2', backing=mid)
        q.qemu_io_write_pattern(base, P_BASE, OFF_BASE, PLEN)
        q.qemu_io_write_pattern(mid, P_MID, OFF_MID, PLEN)
        if filler_mib:
            q.qemu_io_write_pattern(mid, P_FILL, OFF_FILL, filler_mib * MiB)
        q.qemu_io_write_pattern(top, P_TOP, OFF_TOP, PLEN)
        self.filler_mib = filler_mib
        dom = h.define_domain(name, [q.Disk('vda', top)])
        if start:
            h.call(dom, D, 'Start', (0,), 't')
        return dom, base, mid, top

    def make_two_disks(self, vdb_mib, filler_mib=0):
        """make_chain() on vda plus vdb: b-base (0x77 in its first vdb_mib
        MiB) <- b-top, the domain redefined with both and started. Returns
        (dom, base, mid, top, bbase, btop)."""
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=filler_mib, start=False)
        bbase = h.create_image('b-base.qcow2')
        btop = h.create_image('b-top.qcow2', backing=bbase)
        q.qemu_io_write_pattern(bbase, 0x77, 0, vdb_mib * MiB)
        xml = q.domain_xml('vm', [q.Disk('vda', top), q.Disk('vdb', btop)])
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st'), dom)
        h.call(dom, D, 'Start', (0,), 't')
        return dom, base, mid, top, bbase, btop

    # ---- calls
    def pull(self, dom, disk='vda', bandwidth=0, flags=0):
        return self.h.call(dom, D, 'BlockPull', (disk, bandwidth, flags), 'stt')

    def commit(self, dom, base, top, disk='vda', bandwidth=0, flags=0):
        return self.h.call(dom, D, 'BlockCommit', (disk, base, top, bandwidth, flags), 'ssstt')

    def jprop(self, job, name):
        return self.h.get_property(job, J, name)

    def dprop(self, dom, name):
        return self.h.get_property(dom, D, name)

    # ---- waiting
    def wait_end(self, rec, job, timeout=30.0, start=0):
        """(status, error) of the job's Completed signal."""
        return rec.wait_for(lambda s: s.path == job and s.interface == J and s.member == 'Completed',
                            timeout, start).args

    def wait_cur(self, job, minimum, timeout=20.0):
        """Polls Cur until it is >= minimum; returns it."""
        cur = q.spin(lambda: (lambda c: c if c >= minimum else None)(self.jprop(job, 'Cur')), timeout)
        self.assertIsNotNone(cur, 'Cur of %s did not reach %d within %.0f s (now %d, State %s)'
                             % (job, minimum, timeout, self.jprop(job, 'Cur'), self.jprop(job, 'State')))
        return cur

    def settle(self, dom=None):
        """Every signal qsnapd sent so far (a late duplicate among them)
        has arrived: the harness's barrier through dom's QEMU and qsnapd."""
        self.h.barrier(*([dom] if dom else []))

    # ---- looking at signals
    def signals(self, rec, path, member, interface=None):
        q.spin(lambda: True, 0)
        return [s for s in rec.records if s.path == path and s.member == member
                and (interface is None or s.interface == interface)]

    def completed_signals(self, rec, job):
        return self.signals(rec, job, 'Completed', J)

    def job_events(self, rec, dom, job):
        return [s.args for s in self.signals(rec, dom, 'BlockJobEvent', D) if s.args[0] == job]

    def progress(self, rec, job):
        return [s.args for s in self.signals(rec, job, 'Progress', J)]

    def assert_one_end(self, rec, dom, job, jtype, status, error=''):
        """Exactly one Completed(status, error) on the job, exactly one
        BlockJobEvent for its end on the Domain, the final properties."""
        self.settle(dom)
        ends = [s.args for s in self.completed_signals(rec, job)]
        self.assertEqual(ends, [(status, error)], 'Completed signals of %s' % job)
        events = [e for e in self.job_events(rec, dom, job) if e[3] != 'ready']
        self.assertEqual(events, [(job, 'vda', jtype, status, error)], 'BlockJobEvent for the end of %s' % job)
        props = self.h.get_all(job, J)
        self.assertEqual(props['State'], status, 'State of %s after Completed' % job)
        self.assertEqual(props['Error'], error)
        self.assertEqual(props['Type'], jtype)
        states = rec.property_values(job, 'State')
        self.assertTrue(states and states[-1] == status, 'PropertiesChanged(State) of %s: %s' % (job, states))
        self.assertEqual([s for s in states if s in FINAL_STATES], [status],
                         'State of %s went through %s' % (job, states))
        self.assertFalse(rec.invalidated(job, 'State') or rec.invalidated(job, 'Cur'),
                         'PropertiesChanged must carry values, not invalidate')
        return props

    def assert_disks_before_end(self, rec, dom, job, active, chain_text, what):
        """The Domain's PropertiesChanged(Disks) with the new chain came
        before the job's Completed (a GUI following signals never sees a
        completed job next to the old chain), and the object was not
        removed (it stays 60 s)."""
        q.spin(lambda: True, 0)
        idx_disks = [i for i, s in enumerate(rec.records) if s.path == dom and s.member == 'PropertiesChanged'
                     and 'Disks' in s.args[1] and ('vda', 'qcow2', active, chain_text) in s.args[1]['Disks']]
        idx_end = [i for i, s in enumerate(rec.records) if s.path == job and s.member == 'Completed']
        self.assertTrue(idx_disks, '%s: no PropertiesChanged(Disks) with %s' % (what, chain_text))
        self.assertTrue(idx_end, '%s: no Completed' % what)
        self.assertLess(idx_disks[0], idx_end[0], '%s: Completed was sent before PropertiesChanged(Disks)' % what)
        removed = [s for s in rec.records if s.member == 'InterfacesRemoved' and s.args[0] == job]
        self.assertEqual(removed, [], '%s: the job object was removed at once (it stays 60 s)' % what)

    def assert_job_added(self, rec, dom, job, jtype, bandwidth, t0, t1):
        """InterfacesAdded with BlockJob1, the id, the first properties,
        the Domain's Jobs."""
        added = rec.wait_for(lambda s: s.member == 'InterfacesAdded' and s.path == q.MANAGER_PATH
                             and s.args[0] == job)
        self.assertIn(J, added.args[1], 'InterfacesAdded of %s lacks %s' % (job, J))
        props = added.args[1][J]
        for p in JOB_PROPS:
            self.assertIn(p, props, 'InterfacesAdded of %s lacks property %s' % (job, p))
        self.assertEqual(props['Type'], jtype)
        self.assertEqual(props['Disk'], 'vda')
        self.assertEqual(props['Domain'], dom)
        self.assertEqual(props['Bandwidth'], bandwidth)
        self.assertEqual(props['Error'], '')
        self.assertIn(props['State'], ('running', 'ready', 'pending', 'completed'),
                      'State of a new job: %r' % props['State'])
        self.assertTrue(job.startswith(dom + '/job/'), 'job path %s is not below %s/job/' % (job, dom))
        jid = path_decode(job.rsplit('/', 1)[1])
        # The id spells the type with '.' for '-' ("active.commit-vda-…"):
        # '-' separates type, disk and number (docs/decisions.md).
        spelled = jtype.replace('-', '.')
        self.assertTrue(jid.startswith('%s-vda-' % spelled), 'job id %r does not start with "%s-vda-"' % (jid, spelled))
        # StartTime: seconds since the epoch, between call and reply.
        st = props['StartTime']
        self.assertTrue(int(t0) - 1 <= st <= t1 + 1, 'StartTime %d is not the time the job started (%d..%d)'
                        % (st, t0, t1))
        jobs_seen = rec.property_values(dom, 'Jobs')
        self.assertTrue(any(job in v for v in jobs_seen),
                        'no PropertiesChanged(Jobs) on the Domain listed %s: %s' % (job, jobs_seen))
        return props

    def assert_progress(self, rec, job, what=''):
        """Progress: cur never decreases, cur <= end, at most 10 a second."""
        prog = self.progress(rec, job)
        self.assertTrue(prog, '%s: no Progress signal from %s' % (what, job))
        curs = [c for c, e in prog]
        self.assertEqual(curs, sorted(curs), '%s: Progress cur went backwards: %s' % (what, prog))
        for c, e in prog:
            self.assertTrue(0 < e and c <= e, '%s: Progress(%d, %d)' % (what, c, e))
        if isinstance(rec, TimedRecorder):
            times = [t for s, t in zip(rec.records, rec.times)
                     if s.path == job and s.member == 'Progress' and s.interface == J]
            if len(times) > 1:
                span = times[-1] - times[0]
                self.assertLessEqual(len(times), 10 * span + 3,
                                     '%s: %d Progress signals within %.2f s (at most 10 a second)'
                                     % (what, len(times), span))
        return prog

    # ---- chains and data
    def disks(self, dom):
        return {d[0]: (d[2], d[3]) for d in self.dprop(dom, 'Disks')}

    def qemu_chain(self, dom, target='vda'):
        """The files QEMU runs target on, top first (query-block)."""
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        for b in self.h.qmp(dom, 'query-block')['return']:
            if b.get('qdev', '').split('/')[3:4] == [target]:
                files, img = [], b.get('inserted', {}).get('image')
                while img:
                    files.append(self.h.qemu_file_name(dom, img['filename'], fdsets))
                    img = img.get('backing-image')
                return files
        self.fail('QEMU has no disk %s' % target)

    def img_chain(self, img):
        return [i['filename'] for i in q.qemu_img_info(img, backing_chain=True)]

    def assert_chain(self, dom, files, what):
        """files (base first) is the chain: Domain.Disks, qemu-img info
        and, while it runs, QEMU."""
        top = files[-1]
        self.assertEqual(self.disks(dom).get('vda'), (top, ' <- '.join(files)), '%s: Domain.Disks' % what)
        self.assertEqual(self.img_chain(top), list(reversed(files)), '%s: qemu-img info --backing-chain' % what)
        if self.dprop(dom, 'State') in ('running', 'paused'):
            self.assertEqual(self.qemu_chain(dom), list(reversed(files)), '%s: QEMU query-block' % what)

    def assert_no_nodes_on(self, dom, files, what):
        """QEMU holds no descriptor of files any more: no node left behind
        (it keeps the file's lock), no fd set of it left (/proc/PID/fd).
        qsnapd drops the fd sets once QEMU answered the blockdev-del of their
        nodes, which can be just after the job's Completed signal: wait for
        that, then a leak fails."""
        def left():
            return sorted((fd, f) for fd, f in self.h.qemu_open_files(dom).items() if f in files)

        q.spin(lambda: not left(), 10)
        self.assertEqual(left(), [], '%s: QEMU still has dropped files open: %s' % (what, left()))

    def xml_disk_chain(self, xml_text, target='vda'):
        """(source file, [backingStore files, top first]) of target."""
        root = ET.fromstring(xml_text)
        for disk in root.iter('disk'):
            t = disk.find('target')
            if t is None or t.get('dev') != target:
                continue
            src = disk.find('source')
            files = []
            bs = disk.find('backingStore')
            while bs is not None and bs.find('source') is not None:
                files.append(bs.find('source').get('file'))
                bs = bs.find('backingStore')
            return (src.get('file') if src is not None else None), files
        self.fail('no disk %s in %s' % (target, xml_text))

    def stored_source(self, dom):
        uuid = self.dprop(dom, 'UUID')
        with open(os.path.join(self.h.state_dir, 'domains', uuid + '.xml')) as f:
            return self.xml_disk_chain(f.read())[0]

    def flush(self, dom):
        self.h.flush_live(dom, 'vda')

    # ---- while no qsnapd runs (QEMU's monitor socket is free then)
    def qemu_alone(self, dom):
        """What a test needs to talk to dom's QEMU itself once qsnapd is
        dead (taken while it lives: any bus call would activate a new one):
        (QEMU's pid, its monitor socket, the domain's log)."""
        uuid = self.dprop(dom, 'UUID')
        return (self.h.qemu_pid(dom), os.path.join(self.h.runtime_dir, uuid + '.qmp'),
                os.path.join(self.h.state_dir, 'log', uuid + '.log'))

    def qemu_alone_jobs(self, alone):
        qmp = q.QmpSocket(alone[1])
        try:
            return {j['id']: j['status'] for j in qmp.command('query-jobs')}
        finally:
            qmp.close()

    def write_pattern_qemu_alone(self, alone, pattern, offset, length, target='vda'):
        """write_pattern_live() through QEMU's own monitor socket, while no
        qsnapd runs: HMP qemu-io on the guest's disk (whatever node QEMU runs
        it on now), its verdict from the domain's log, then a flush."""
        _, sock, log = alone
        start = os.path.getsize(log)
        dev = '/machine/peripheral/%s/virtio-backend' % target
        qmp = q.QmpSocket(sock)
        try:
            out = qmp.command('human-monitor-command', {
                'command-line': 'qemu-io -d %s "write -P 0x%02x %d %d"' % (dev, pattern, offset, length)})
            self.assertEqual(out.strip(), '', 'HMP qemu-io write')

            def written():
                with open(log, errors='replace') as f:
                    f.seek(start)
                    text = f.read()
                return text if re.search(r'wrote \d+/\d+ bytes at offset %d|write failed' % offset, text) else None
            text = q.wait_until(written, 30, 'qemu-io wrote 0x%02x at %d' % (pattern, offset))
            self.assertIn('wrote %d/%d bytes at offset %d' % (length, length, offset), text)
            out = qmp.command('human-monitor-command', {'command-line': 'qemu-io -d %s "flush"' % dev})
            self.assertEqual(out.strip(), '', 'HMP qemu-io flush')
        finally:
            qmp.close()

    def kill_qemu_alone(self, alone):
        os.kill(alone[0], signal.SIGKILL)
        q.wait_until(lambda: not os.path.exists('/proc/%d' % alone[0]), 10, 'the killed QEMU is reaped')

    def expected_patterns(self):
        pats = [(P_BASE, OFF_BASE, PLEN), (P_MID, OFF_MID, PLEN), (P_TOP, OFF_TOP, PLEN)]
        if self.filler_mib:
            pats.append((P_FILL, OFF_FILL, self.filler_mib * MiB))
        return pats

    def assert_reads(self, img, patterns, what):
        """img (with its backing chain, from the host) holds patterns."""
        for p, off, n in patterns:
            self.assertTrue(q.qemu_io_read_pattern(img, p, off, n),
                            '%s: %s does not read 0x%02x at %d+%d' % (what, img, p, off, n))

    def assert_guest_reads(self, dom, patterns, what):
        for p, off, n in patterns:
            self.h.verify_pattern_live(dom, 'vda', p, off, n, what)

    def assert_clean(self, *images):
        for img in images:
            q.qemu_img_check(img, force_share=True)

    def backing_of(self, img):
        info = q.qemu_img_info(img)
        return info.get('full-backing-filename', info.get('backing-filename'))

    def raw_copy(self, img, name):
        """The guest view of img's chain as a raw file."""
        out = self.h.image_path(name)
        r = q.run([q.QEMU_IMG, 'convert', '-U', '-f', 'qcow2', '-O', 'raw', img, out])
        self.assertEqual(r.returncode, 0, 'qemu-img convert: %s' % r.stderr)
        return out

    def assert_same_view(self, raw, img, what):
        r = q.run([q.QEMU_IMG, 'compare', '-U', '-f', 'raw', '-F', 'qcow2', raw, img])
        self.assertEqual(r.returncode, 0, '%s: qemu-img compare %s %s: %s' % (what, raw, img,
                                                                           (r.stdout + r.stderr).strip()))

    # ---- "nothing changed"
    def fingerprint(self, dom):
        h = self.h
        files = {}
        for f in sorted(os.listdir(h.images_dir)):
            files[f] = os.path.getsize(os.path.join(h.images_dir, f))
        running = self.dprop(dom, 'State') in ('running', 'paused')
        objs = h.client.managed_objects()
        return {
            'Disks': self.dprop(dom, 'Disks'),
            'Jobs': self.dprop(dom, 'Jobs'),
            'job objects': sorted(p for p, ifaces in objs.items() if J in ifaces),
            'files': files,
            'qemu jobs': h.qmp(dom, 'query-jobs')['return'] if running else None,
            'qemu chain': self.qemu_chain(dom) if running else None,
        }

    def assert_refused(self, dom, error, method, args, sig, others=()):
        """method(args) on dom answers error and changes nothing, sends no
        signal about dom or a job."""
        before = self.fingerprint(dom)
        rec = self.h.record_signals()
        try:
            with self.assertDBusError(error) as cm:
                self.h.call(dom, D, method, args, sig)
            self.assertEqual(self.fingerprint(dom), before, '%s%r changed something' % (method, args))
            self.settle(dom)
            seen = [s for s in rec.records if s.path.startswith(dom) or
                    (s.member in ('InterfacesAdded', 'InterfacesRemoved') and str(s.args[0]).startswith(dom))]
            self.assertEqual(seen, [], '%s%r: signals sent for a refused call' % (method, args))
        finally:
            rec.close()
        return cm.exception


# --------------------------------------------------------------------------

class PullTest(BlockJobTestCase):
    def test_pull(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        self.assert_chain(dom, [base, mid, top], 'before')
        rec = TimedRecorder(h.client)
        bw = 1 * MiB    # about 2 s for the 2 MiB below top: several Progress signals
        t0 = time.time()
        job = self.pull(dom, 'vda', bw)
        t1 = time.time()
        self.assert_job_added(rec, dom, job, 'pull', bw, t0, t1)
        self.assertEqual(self.dprop(dom, 'Jobs'), [job], 'Domain.Jobs while the pull runs')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        # Completed comes after the chain is right: the very next Get agrees.
        self.assertEqual(self.disks(dom)['vda'], (top, top), 'Domain.Disks right after Completed')
        props = self.assert_one_end(rec, dom, job, 'pull', 'completed')
        self.assertEqual(props['Cur'], props['End'], 'Cur != End after a completed pull')
        self.assertEqual(props['Disk'], 'vda')
        self.assertEqual(props['Domain'], dom)
        self.assertEqual(props['Bandwidth'], bw)
        prog = self.assert_progress(rec, job, 'pull')
        print('\nProgress of a ~2 s pull: %s' % prog, flush=True)
        self.assertGreaterEqual(len(prog), 2, 'a ~2 s pull sent only %s' % prog)

        self.assert_disks_before_end(rec, dom, job, top, top, 'pull')

        self.flush(dom)
        self.assert_chain(dom, [top], 'after the pull')
        self.assertIsNone(self.backing_of(top), 'top still has a backing file after the pull')
        self.assert_no_nodes_on(dom, [base, mid], 'after the pull')
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (top, []),
                         'the live XML after the pull')
        self.assert_reads(top, self.expected_patterns(), 'after the pull (top alone)')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the pull')
        # base and mid are untouched (and no longer needed)
        self.assert_reads(mid, [(P_BASE, OFF_BASE, PLEN), (P_MID, OFF_MID, PLEN), (0, OFF_TOP, PLEN)], 'mid')

        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_chain(dom, [top], 'after Stop')
        self.assert_clean(top, mid, base)
        self.assert_reads(top, self.expected_patterns(), 'offline')


class RebaseTest(BlockJobTestCase):
    def test_partial_pull_to_base(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        rec = TimedRecorder(h.client)
        # COPY onto a file of the chain (tests/test_blockcopy.py does COPY).
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(dom, D, 'BlockRebase', ('vda', base, 0, 8), 'sstt')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(dom, D, 'BlockRebase', ('vda', base, 0, 1), 'sstt')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(dom, D, 'BlockRebase', ('vda', top, 0, 0), 'sstt')
        with self.assertDBusError(E + 'InvalidArgument'):
            h.call(dom, D, 'BlockRebase', ('vda', '/nonexistent.qcow2', 0, 0), 'sstt')
        self.assertEqual(self.dprop(dom, 'Jobs'), [], 'a refused BlockRebase left a job')
        self.assert_chain(dom, [base, mid, top], 'after refusals')

        job = h.call(dom, D, 'BlockRebase', ('vda', base, 0, 0), 'sstt')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(h.get_property(job, J, 'Type'), 'pull')
        # mid's data came into top; top now rests on base directly.
        self.assertEqual(self.disks(dom)['vda'], (top, '%s <- %s' % (base, top)), 'Domain.Disks after the rebase')
        self.flush(dom)
        self.assert_chain(dom, [base, top], 'after the rebase')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the rebase')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_reads(top, self.expected_patterns(), 'offline, through base')
        self.assert_clean(top, base)


class CommitTest(BlockJobTestCase):
    def test_commit_non_active(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        self.flush(dom)
        before = self.raw_copy(top, 'before.raw')
        rec = h.record_signals()
        t0 = time.time()
        # disk named by the active file's path; DELETE removes mid after success
        job = self.commit(dom, base, mid, disk=top, flags=DELETE)
        t1 = time.time()
        self.assert_job_added(rec, dom, job, 'commit', 0, t0, t1)
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'], (top, '%s <- %s' % (base, top)), 'Domain.Disks right after Completed')
        self.assertFalse(os.path.exists(mid), 'DELETE: %s still exists after Completed' % mid)
        props = self.assert_one_end(rec, dom, job, 'commit', 'completed')
        self.assert_disks_before_end(rec, dom, job, top, '%s <- %s' % (base, top), 'commit')
        self.assertEqual(props['Disk'], 'vda', 'Disk must be the target name even when the call gave the path')
        self.assertEqual(props['Cur'], props['End'])

        self.flush(dom)
        self.assert_chain(dom, [base, top], 'after the commit')
        self.assertEqual(self.backing_of(top), base)
        self.assert_no_nodes_on(dom, [mid], 'after the commit')
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (top, [base]),
                         'the live XML after the commit')
        self.assert_reads(base, [(P_BASE, OFF_BASE, PLEN), (P_MID, OFF_MID, PLEN), (0, OFF_TOP, PLEN)],
                          'base holds mid\'s data')
        self.assert_same_view(before, top, 'the guest view after the commit')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the commit')
        # the guest writes on, into top
        h.write_pattern_live(dom, 'vda', 0x55, 3 * MiB, MiB)
        self.assert_reads(top, [(0x55, 3 * MiB, MiB)], 'a write after the commit')
        self.assert_reads(base, [(0, 3 * MiB, MiB)], 'a write after the commit must not reach base')

        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_chain(dom, [base, top], 'after Stop')
        self.assert_clean(base, top)

    def test_active_commit_pivot(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        self.flush(dom)
        # The guest view, taken now: while an active commit writes into base,
        # QEMU shares no consistent read of it, even with -U; the write made
        # while READY is applied to this copy too.
        expected_view = self.raw_copy(top, 'expected.raw')
        rec = h.record_signals()
        bw = 1 * MiB
        t0 = time.time()
        job = self.commit(dom, '', '', bandwidth=bw, flags=ACTIVE)
        t1 = time.time()
        self.assert_job_added(rec, dom, job, 'active-commit', bw, t0, t1)

        # ~10 MiB to copy at 1 MiB/s: not READY for seconds.
        self.assertEqual(self.jprop(job, 'State'), 'running')
        mark = rec.mark()
        with self.assertDBusError(E + 'OperationInvalid'):
            h.call(job, J, 'Pivot')
        self.assertEqual(self.jprop(job, 'State'), 'running', 'a refused Pivot changed the State')
        self.assertFalse(self.jprop(job, 'Ready'))
        self.assertEqual(self.disks(dom)['vda'][0], top, 'a refused Pivot changed the active file')
        self.assertEqual(self.completed_signals(rec, job), [], 'a refused Pivot ended the job')

        h.call(job, J, 'SetSpeed', (0,), 't')
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=30, start=mark)
        self.assertEqual(self.jprop(job, 'State'), 'ready')
        self.assertTrue(self.jprop(job, 'Ready'))
        rec.wait_for_property(job, 'State', 'ready', start=mark)
        rec.wait_for_property(job, 'Ready', True, start=mark)
        self.assertEqual([e for e in self.job_events(rec, dom, job) if e[3] == 'ready'],
                         [(job, 'vda', 'active-commit', 'ready', '')], 'BlockJobEvent ready')
        self.assertEqual(self.disks(dom)['vda'][0], top, 'READY must not change the active file yet')

        # A guest write while READY survives the pivot.
        h.write_pattern_live(dom, 'vda', 0x55, 3 * MiB, MiB)
        q.qemu_io_write_pattern(expected_view, 0x55, 3 * MiB, MiB, fmt='raw')
        h.call(job, J, 'Pivot')
        # QEMU pivots after a cancel all the same once job-complete is in:
        # an Abort now is refused (pivoting, or over), the end is the pivot.
        with self.assertDBusError(E + 'OperationInvalid'):
            h.call(job, J, 'Abort', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'], (base, base), 'Domain.Disks right after Completed')
        self.assert_one_end(rec, dom, job, 'active-commit', 'completed')
        self.assert_disks_before_end(rec, dom, job, base, base, 'active commit')

        self.flush(dom)
        self.assert_chain(dom, [base], 'after the pivot')
        self.assert_no_nodes_on(dom, [mid, top], 'after the pivot')
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (base, []),
                         'the live XML after the pivot')
        self.assertEqual(self.stored_source(dom), base, 'the stored definition after the pivot')
        self.assert_same_view(expected_view, base, 'the guest view after the pivot')
        self.assert_guest_reads(dom, self.expected_patterns() + [(0x55, 3 * MiB, MiB)], 'after the pivot')
        # Guest writes land in base now.
        h.write_pattern_live(dom, 'vda', 0x66, 20 * MiB, MiB)
        self.assert_reads(base, [(0x66, 20 * MiB, MiB)], 'a write after the pivot')

        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_chain(dom, [base], 'after Stop')
        self.assert_clean(base)
        self.assert_reads(base, self.expected_patterns() + [(0x55, 3 * MiB, MiB), (0x66, 20 * MiB, MiB)], 'offline')


class ControlTest(BlockJobTestCase):
    def hammer_until_end(self, job, timeout=15.0, in_flight=8):
        """Gets the job's State from another connection, with in_flight
        calls always pending (so the daemon answers one after the other),
        until a final State comes: (states seen, errors seen)."""
        c = self.h.new_client()
        states, errors, pending = [], [], []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not (states and states[-1] in FINAL_STATES):
                while len(pending) < in_flight:
                    pending.append(c.call_async(job, q.PROPERTIES_IFACE, 'Get', (J, 'State'), '(ss)'))
                q.spin(lambda: pending[0].done(), 5)
                while pending and pending[0].done():
                    try:
                        st = pending.pop(0).wait()
                    except q.DBusCallError as e:
                        errors.append(e.name)
                        continue
                    if not states or states[-1] != st:
                        states.append(st)
            for p in pending:
                with contextlib.suppress(q.DBusCallError):
                    p.wait()
        finally:
            c.close()
        return states, errors

    def test_abort_pull(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        self.flush(dom)
        before = self.raw_copy(top, 'before.raw')
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 1 * MiB)
        self.wait_cur(job, 1)
        self.assertEqual(self.jprop(job, 'State'), 'running')
        # Paused first: QEMU refuses a plain block-job-cancel of a paused job.
        h.call(job, J, 'Pause')
        q.wait_until(lambda: self.jprop(job, 'State') == 'paused', 10, 'State paused after Pause')
        h.call(job, J, 'Abort', (0,), 't')
        with self.subTest('Abort without ASYNC returns once the job is over (libvirt\'s meaning)'):
            try:
                st = self.jprop(job, 'State')
            except q.DBusCallError as e:
                st = e.name
            self.assertEqual(st, 'canceled', 'State when the synchronous Abort returned')
        self.assertEqual(self.wait_end(rec, job), ('canceled', ''))
        props = self.assert_one_end(rec, dom, job, 'pull', 'canceled')
        self.assertLess(props['Cur'], props['End'], 'the aborted pull says it had finished')
        self.flush(dom)
        self.assert_chain(dom, [base, mid, top], 'after the abort')
        self.assertEqual(self.backing_of(top), mid)
        self.assert_same_view(before, top, 'the guest view after the abort')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the abort')
        self.assert_clean(top, mid, base)
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has a job after the abort')
        # the disk is free again
        job2 = self.pull(dom, 'vda', 8 * MiB)    # ~1 s: polled from start to end
        self.assertNotEqual(job2, job, 'a new job got the path of a finished one')
        # The job object answers at every instant until it has ended (and 60 s
        # after). The gap this looks for, between QEMU's end of the job and
        # qsnapd's bookkeeping, is short: one run catches it about every other time.
        states, errors = self.hammer_until_end(job2)
        with self.subTest('the job object never vanishes while it ends'):
            self.assertEqual(errors, [], 'Get(State) of %s while it ended; states seen %s' % (job2, states))
        self.assertEqual(self.wait_end(rec, job2), ('completed', ''))
        self.assert_chain(dom, [top], 'after the second pull')
        self.assertEqual(sorted(self.dprop(dom, 'Jobs')), sorted([job, job2]),
                         'Domain.Jobs: ended jobs stay listed for 60 s')

    def test_set_speed_pause_resume(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=16)
        rec = TimedRecorder(h.client)
        job = self.pull(dom, 'vda', 4 * MiB)
        # Past base's and mid's first MiB and top's (skipped) 2-4 MiB, into the filler.
        self.wait_cur(job, OFF_FILL + MiB // 2)

        def qemu_offset():
            """The job's offset as QEMU counts it (qsnapd's Cur is polled)."""
            jobs = [j for j in h.qmp(dom, 'query-block-jobs')['return'] if j['device'] == jid]
            self.assertEqual(len(jobs), 1, 'QEMU does not run %s' % jid)
            return jobs[0]['offset']

        def measure(seconds):
            """Bytes the job moved in QEMU over about seconds: (bytes, t0, t1)."""
            c0, t0 = qemu_offset(), time.monotonic()
            q.spin(lambda: time.monotonic() - t0 >= seconds, seconds + 1)
            c1, t1 = qemu_offset(), time.monotonic()
            return c1 - c0, t0, t1

        def assert_throttled(moved, t0, t1, speed, what):
            """Only bounds a loaded 2-core machine cannot flip: the job moves,
            and never faster than its speed allows (plus a second of slack
            for the measuring and a chunk in flight at the old speed). No
            ratio between two noisy windows."""
            limit = speed * (t1 - t0 + 1.0) + MiB
            msg = '%s: %.0f KiB in %.2f s at %d KiB/s (limit %.0f KiB)' % (what, moved / 1024, t1 - t0,
                                                                            speed // 1024, limit / 1024)
            print('\n' + msg, flush=True)
            self.assertGreater(moved, 0, msg)
            self.assertLessEqual(moved, limit, msg)

        jid = path_decode(job.rsplit('/', 1)[1])
        mark = rec.mark()
        h.call(job, J, 'SetSpeed', (1 * MiB,), 't')
        self.assertEqual(self.jprop(job, 'Bandwidth'), 1 * MiB, 'Bandwidth after SetSpeed')
        rec.wait_for_property(job, 'Bandwidth', 1 * MiB, start=mark)
        self.assertEqual([j['speed'] for j in h.qmp(dom, 'query-block-jobs')['return']], [1 * MiB])
        # 2 s at 1 MiB/s allow at most 4 MiB; the 4 MiB/s it ran at before would make 8 MiB
        moved, s0, s1 = measure(2.0)
        assert_throttled(moved, s0, s1, 1 * MiB, 'at 1 MiB/s')
        mark = rec.mark()
        h.call(job, J, 'SetSpeed', (6 * MiB,), 't')
        self.assertEqual(self.jprop(job, 'Bandwidth'), 6 * MiB)
        rec.wait_for_property(job, 'Bandwidth', 6 * MiB, start=mark)
        self.assertEqual([j['speed'] for j in h.qmp(dom, 'query-block-jobs')['return']], [6 * MiB])
        moved, f0, f1 = measure(0.5)
        assert_throttled(moved, f0, f1, 6 * MiB, 'at 6 MiB/s')
        rate = self.jprop(job, 'Rate')
        self.assertGreater(rate, 0, 'Rate of a running job')

        # Progress at least about once a second while moving (the slow window).
        times = [t for s, t in zip(rec.records, rec.times)
                 if s.path == job and s.member == 'Progress' and s0 <= t <= s1]
        edges = [s0] + times + [s1]
        gaps = [b - a for a, b in zip(edges, edges[1:])]
        self.assertLessEqual(max(gaps), 1.6, 'Progress gaps at 1 MiB/s: %s' % ['%.2f' % g for g in gaps])

        # Pause / Resume: once QEMU says the job is paused, its offset stands
        mark = rec.mark()
        h.call(job, J, 'Pause')
        rec.wait_for_property(job, 'State', 'paused', start=mark)
        self.assertEqual(self.jprop(job, 'State'), 'paused')
        q.wait_until(lambda: [j['status'] for j in h.qmp(dom, 'query-jobs')['return']] == ['paused'], 10,
                     'QEMU says the job is paused')
        moved, p0, p1 = measure(0.8)
        self.assertEqual(moved, 0, 'a paused job moved on')
        self.assertEqual(self.jprop(job, 'Rate'), 0, 'Rate of a paused job')
        mark = rec.mark()
        h.call(job, J, 'Resume')
        rec.wait_for_property(job, 'State', 'running', start=mark)

        h.call(job, J, 'SetSpeed', (0,), 't')
        self.assertEqual(self.jprop(job, 'Bandwidth'), 0)
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assert_one_end(rec, dom, job, 'pull', 'completed')
        self.assert_progress(rec, job, 'throttled pull')
        self.flush(dom)
        self.assert_chain(dom, [top], 'after the pull')
        self.assert_reads(top, self.expected_patterns(), 'after the pull')


    def test_stop_during_job(self):
        # libvirt lets a domain be destroyed under a block job: the job ends
        # (not completed), once, and the chain stays as it was.
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 1 * MiB)
        self.wait_cur(job, 1)
        h.call(dom, D, 'Stop', (0,), 't')
        status, error = self.wait_end(rec, job)
        self.assertIn(status, ('failed', 'canceled'), 'a job whose QEMU quit ended %r (%r)' % (status, error))
        self.assert_one_end(rec, dom, job, 'pull', status, error)
        self.assertEqual(self.dprop(dom, 'State'), 'shutoff')
        self.assert_chain(dom, [base, mid, top], 'after Stop')
        self.assert_clean(top, mid, base)
        # and the next start runs jobs again
        h.call(dom, D, 'Start', (0,), 't')
        job2 = self.pull(dom, 'vda', 0)
        self.assertEqual(self.wait_end(rec, job2), ('completed', ''))
        self.assert_chain(dom, [top], 'after a pull in the next run')


    def test_two_disks_in_parallel(self):
        # DESIGN 8: locks are per disk. A job on vdb starts while one runs on
        # vda (only vda is Busy), both end completed, each chain is right,
        # and the guest keeps running.
        h = self.h
        dom, base, mid, top, bbase, btop = self.make_two_disks(2)
        rec = h.record_signals()
        ja = self.pull(dom, 'vda', 2 * MiB)     # ~1 s each: they end at about the same time
        jb = self.pull(dom, 'vdb', 2 * MiB)
        self.assertEqual(self.jprop(jb, 'Disk'), 'vdb')
        with self.assertDBusError(E + 'Busy'):
            self.pull(dom, 'vda', 0)
        self.assertEqual(sorted(self.dprop(dom, 'Jobs')), sorted([ja, jb]))
        self.assertEqual(self.wait_end(rec, ja), ('completed', ''))
        self.assertEqual(self.wait_end(rec, jb), ('completed', ''))
        self.settle(dom)
        self.assertEqual(self.dprop(dom, 'State'), 'running', 'the guest did not survive two jobs ending together')
        ev = sorted((e[1], e[3]) for e in self.signals(rec, dom, 'BlockJobEvent', D) for e in [e.args])
        self.assertEqual(ev, [('vda', 'completed'), ('vdb', 'completed')])
        disks = self.disks(dom)
        self.assertEqual(disks['vda'], (top, top))
        self.assertEqual(disks['vdb'], (btop, btop))
        self.flush(dom)
        h.flush_live(dom, 'vdb')
        self.assert_reads(top, self.expected_patterns(), 'vda after the pull')
        self.assert_reads(btop, [(0x77, 0, 2 * MiB)], 'vdb after the pull')
        self.assertIsNone(self.backing_of(btop))


class RefusalTest(BlockJobTestCase):
    def test_refusals_busy_and_shallow(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        nowhere = h.create_image('other.qcow2')
        ia = E + 'InvalidArgument'

        # unknown disk
        self.assert_refused(dom, E + 'NoSuchDisk', 'BlockPull', ('vdz', 0, 0), 'stt')
        self.assert_refused(dom, E + 'NoSuchDisk', 'BlockPull', (nowhere, 0, 0), 'stt')
        self.assert_refused(dom, E + 'NoSuchDisk', 'BlockCommit', ('vdz', base, mid, 0, 0), 'ssstt')
        # unknown flags
        self.assert_refused(dom, ia, 'BlockPull', ('vda', 0, 1), 'stt')
        self.assert_refused(dom, ia, 'BlockPull', ('vda', 0, 1 << 40), 'stt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', base, mid, 0, 1 << 10), 'ssstt')
        # base / top not in the chain, or in the wrong order
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', nowhere, mid, 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', base, nowhere, 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', mid, base, 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', mid, mid, 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', top, mid, 0, 0), 'ssstt')
        # the active layer without ACTIVE
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', base, top, 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', '', '', 0, 0), 'ssstt')
        self.assert_refused(dom, ia, 'BlockCommit', ('vda', base, '', 0, 0), 'ssstt')

        # a shut-off domain
        off_img = h.create_image('off-top.qcow2', backing=h.create_image('off-base.qcow2'))
        off = h.define_domain('off', [q.Disk('vda', off_img)])
        self.assert_refused(off, E + 'NotRunning', 'BlockPull', ('vda', 0, 0), 'stt')
        self.assert_refused(off, E + 'NotRunning', 'BlockCommit', ('vda', '', '', 0, ACTIVE), 'ssstt')
        self.assertEqual(self.img_chain(off_img), [off_img, h.image_path('off-base.qcow2')])

        # a second job on the same disk
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 1 * MiB)
        self.assertEqual(self.jprop(job, 'State'), 'running')
        busy = E + 'Busy'
        with self.assertDBusError(busy):
            self.pull(dom, 'vda', 0)
        with self.assertDBusError(busy):
            self.commit(dom, base, mid)
        with self.assertDBusError(busy):
            self.commit(dom, '', '', flags=ACTIVE)
        self.assertEqual(self.dprop(dom, 'Jobs'), [job], 'Domain.Jobs after refused second jobs')
        self.assertEqual([j['id'] for j in h.qmp(dom, 'query-jobs')['return']],
                         [path_decode(job.rsplit('/', 1)[1])], 'QEMU jobs after refused second jobs')

        # Abort ASYNC: returns at once, the end follows. The disk stays
        # Busy until the job has reported its end: the next job (SHALLOW with
        # base "": mid into the image right below it, base) is tried at once
        # and again until accepted; by then the Completed of the first must
        # have been sent (the daemon's messages reach us in order).
        mark = rec.mark()
        h.call(job, J, 'Abort', (ABORT_ASYNC,), 't')
        refused, job2 = [], None
        deadline = time.monotonic() + 15
        while job2 is None and time.monotonic() < deadline:
            try:
                job2 = self.commit(dom, '', mid, flags=SHALLOW)
            except q.DBusCallError as e:
                refused.append(e.name)
                if e.name != busy:
                    break
        self.assertIsNotNone(job2, 'the SHALLOW commit after the abort was refused: %s' % refused[-1:])
        self.assertLessEqual(set(refused), {busy}, 'errors before the disk was free: %s' % sorted(set(refused)))
        q.spin(lambda: True, 0)
        with self.subTest('a disk stays Busy until its job has reported its end'):
            self.assertEqual([s.args for s in self.completed_signals(rec, job)], [('canceled', '')],
                             'a new job on vda was accepted (after %d Busy answers) before the aborted '
                             'job had sent Completed' % len(refused))
        self.assertEqual(self.wait_end(rec, job, start=mark), ('canceled', ''))
        self.assert_one_end(rec, dom, job, 'pull', 'canceled')
        self.assertEqual(self.wait_end(rec, job2), ('completed', ''))
        self.assert_one_end(rec, dom, job2, 'commit', 'completed')
        self.flush(dom)
        self.assert_chain(dom, [base, top], 'after the SHALLOW commit')
        self.assertTrue(os.path.exists(mid), 'mid removed without DELETE')
        self.assert_reads(base, [(P_BASE, OFF_BASE, PLEN), (P_MID, OFF_MID, PLEN)], 'base after the commit')
        self.assert_guest_reads(dom, self.expected_patterns(), 'after the SHALLOW commit')

    def test_access_denied(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)

        def call_as(path, iface, method, args=()):
            argv = ['--dest', q.BUS_NAME, '--object-path', path, '--method', iface + '.' + method,
                    '--timeout', '30'] + [variant_text(s, v) for s, v in args]
            rc, out, err = h.gdbus_as(q.NOBODY_UID, 'call', *argv, timeout=40)
            if rc == 0:
                return None
            m = re.search(r'GDBus\.Error:([A-Za-z0-9_.]+):', err)
            self.assertTrue(m, 'gdbus %s as nobody: rc %d %r' % (method, rc, err))
            return m.group(1)

        before = self.fingerprint(dom)
        rec = h.record_signals()
        self.assertEqual(call_as(dom, D, 'BlockPull', [('s', 'vda'), ('t', 0), ('t', 0)]), q.ACCESS_DENIED)
        self.assertEqual(call_as(dom, D, 'BlockCommit', [('s', 'vda'), ('s', ''), ('s', ''), ('t', 0), ('t', ACTIVE)]),
                         q.ACCESS_DENIED)
        self.assertEqual(self.fingerprint(dom), before, 'a denied call changed something')
        self.settle(dom)
        self.assertEqual([s for s in rec.records if s.path.startswith(dom) or s.member == 'InterfacesAdded'], [],
                         'signals sent for denied calls')

        # The job methods of a running job (root's).
        bw = 1 * MiB
        job = self.pull(dom, 'vda', bw)
        for method, args in (('SetSpeed', [('t', 0)]), ('Abort', [('t', 0)]), ('Pivot', []), ('Pause', []),
                             ('Resume', [])):
            self.assertEqual(call_as(job, J, method, args), q.ACCESS_DENIED, 'BlockJob1.%s as nobody' % method)
        props = h.get_all(job, J)
        self.assertEqual(props['State'], 'running', 'after denied calls')
        self.assertEqual(props['Bandwidth'], bw, 'after a denied SetSpeed')
        self.assertEqual([j['status'] for j in h.qmp(dom, 'query-jobs')['return']], ['running'])
        self.assertEqual(self.completed_signals(rec, job), [])
        # reads need nothing
        rc, out, err = h.gdbus_as(q.NOBODY_UID, 'call', '--dest', q.BUS_NAME, '--object-path', job, '--method',
                                  q.PROPERTIES_IFACE + '.Get', variant_text('s', J),
                                  variant_text('s', 'State'))
        self.assertEqual(rc, 0, 'reading a job property as nobody: %s' % err)
        h.call(job, J, 'SetSpeed', (0,), 't')
        self.assertEqual(self.wait_end(rec, job), ('completed', ''))
        self.assert_chain(dom, [top], 'after the pull')


class RestartTest(BlockJobTestCase):
    def first_get_all(self, path):
        """GetAll on a fresh connection: the first answer of the new qsnapd."""
        client = self.h.new_client()
        try:
            return client.get_all(path, J)
        finally:
            client.close()

    def test_kill9_during_pull(self):
        h = self.h
        dom, base, mid, top = self.make_chain(filler_mib=8)
        rec = h.record_signals()
        bw = 1 * MiB
        job = self.pull(dom, 'vda', bw)
        cur0 = self.wait_cur(job, 1)
        before = h.get_all(job, J)
        h.restart_daemon()
        after = self.first_get_all(job)    # DBusCallError if the path is gone
        self.assertEqual(after['State'], 'running', 'State of the adopted job')
        for p in ('Type', 'Disk', 'Domain', 'End', 'Bandwidth'):
            self.assertEqual(after[p], before[p], 'adopted job: %s' % p)
        self.assertGreaterEqual(after['Cur'], cur0, 'adopted job: Cur went backwards')
        self.assertEqual(self.dprop(dom, 'Jobs'), [job], 'Domain.Jobs after the restart')
        mark = rec.mark()
        # it moves on (progress after the restart)
        self.wait_cur(job, after['Cur'] + 1, timeout=10)
        rec.wait_for(lambda s: s.path == job and s.member == 'Progress', timeout=5, start=mark)
        h.call(job, J, 'SetSpeed', (0,), 't')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'], (top, top), 'Domain.Disks right after Completed')
        self.assert_one_end(rec, dom, job, 'pull', 'completed')
        self.assert_disks_before_end(rec, dom, job, top, top, 'adopted pull')
        self.flush(dom)
        self.assert_chain(dom, [top], 'after the adopted pull')
        self.assertIsNone(self.backing_of(top))
        self.assert_no_nodes_on(dom, [base, mid], 'after the adopted pull')
        self.assert_reads(top, self.expected_patterns(), 'after the adopted pull')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has a job')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_chain(dom, [top], 'after Stop')
        self.assert_clean(top)

    def test_job_ends_while_qsnapd_is_away(self):
        # DESIGN 8: jobs run with auto-finalize=false, so a job that ends
        # while no qsnapd runs waits in QEMU; the next qsnapd finishes it,
        # and reports it under the same path.
        h = self.h
        dom, base, mid, top = self.make_chain()
        rec = h.record_signals()
        job = self.pull(dom, 'vda', 2 * MiB)    # ~1 s
        jid = path_decode(job.rsplit('/', 1)[1])
        sock = os.path.join(h.runtime_dir, self.dprop(dom, 'UUID') + '.qmp')
        h.kill_daemon()
        # Wait for the job's end in QEMU itself, on its monitor socket (free
        # while no qsnapd runs): without auto-finalize it waits in pending.
        qmp = q.QmpSocket(sock)
        try:
            jobs = q.wait_until(lambda: [j for j in qmp.command('query-jobs') if j['id'] == jid and
                                         j['status'] == 'pending'], 30, 'the pull ended in QEMU (pending)')
        finally:
            qmp.close()
        self.assertEqual(jobs[0]['type'], 'stream')
        self.assertEqual(self.img_chain(top), [top, mid, base], 'QEMU finalized a job nobody finalized')
        mark = rec.mark()
        h.start_daemon()
        first = self.first_get_all(job)
        self.assertIn(first['State'], ('pending', 'completed'), 'the first answer about a job that ended meanwhile')
        self.assertEqual((first['Type'], first['Disk']), ('pull', 'vda'))
        if first['State'] == 'completed':
            self.assertEqual(self.disks(dom)['vda'], (top, top), 'State completed, but Domain.Disks is old')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.settle(dom)
        # QEMU 7.2 segfaults on query-named-block-nodes while a block-stream
        # job is concluded (finalized, not yet dismissed): qsnapd must not
        # ask for the nodes in that state.
        self.assertEqual(self.dprop(dom, 'State'), 'running',
                         'the guest did not survive the adoption of its finished job (QEMU crashed? see its log)')
        self.assertEqual([s.args for s in self.completed_signals(rec, job)], [('completed', '')])
        self.assertEqual(self.jprop(job, 'State'), 'completed')
        self.flush(dom)
        self.assert_chain(dom, [top], 'after the pull that ended while qsnapd was away')
        self.assertIsNone(self.backing_of(top))
        self.assert_no_nodes_on(dom, [base, mid], 'after the pull that ended while qsnapd was away')
        self.assert_reads(top, self.expected_patterns(), 'after the pull that ended while qsnapd was away')
        self.assertEqual(h.qmp(dom, 'query-jobs')['return'], [], 'QEMU still has the job')

    def test_kill9_with_active_commit_ready(self):
        h = self.h
        dom, base, mid, top = self.make_chain()
        rec = h.record_signals()
        job = self.commit(dom, '', '', flags=ACTIVE)
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=30)
        h.restart_daemon()
        after = self.first_get_all(job)
        self.assertEqual((after['Type'], after['State'], after['Ready'], after['Disk']),
                         ('active-commit', 'ready', True, 'vda'), 'the adopted active commit')
        self.assertEqual(self.disks(dom)['vda'][0], top)
        mark = rec.mark()
        h.call(job, J, 'Abort', (ABORT_PIVOT,), 't')
        self.assertEqual(self.wait_end(rec, job, start=mark), ('completed', ''))
        self.assertEqual(self.disks(dom)['vda'], (base, base), 'Domain.Disks right after Completed')
        self.flush(dom)
        self.assert_chain(dom, [base], 'after the adopted pivot')
        self.assertEqual(self.stored_source(dom), base, 'the stored definition after the adopted pivot')
        self.assert_reads(base, self.expected_patterns(), 'after the adopted pivot')

    def test_crash_at_the_pivot_mark_then_qemu_killed(self):
        # qsnapd killed right after QEMU ended a pivoted active commit and
        # the journal said so (block-commit:pivoted: QEMU still lists the
        # job, concluded), the guest writes into base, then QEMU is killed
        # too: the next qsnapd stores base as the disk (the old top stays
        # on disk) and reports the commit completed.
        h = self.h
        dom, base, mid, top = self.make_chain()
        rec = h.record_signals()
        job = self.commit(dom, '', '', flags=ACTIVE)
        rec.wait_for_signal('Ready', path=job, interface=J, timeout=30)
        h.write_pattern_live(dom, 'vda', 0x55, 3 * MiB, MiB)     # while READY
        alone = self.qemu_alone(dom)
        h.crash_at('block-commit:pivoted', job, J, 'Pivot', start_again=False)
        self.assertEqual(self.qemu_alone_jobs(alone), {path_decode(job.rsplit('/', 1)[1]): 'concluded'},
                         'the crash point is after the end in QEMU, before the dismiss')
        self.write_pattern_qemu_alone(alone, 0x5b, 20 * MiB, MiB)  # after the pivot: into base
        self.kill_qemu_alone(alone)
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'active-commit job \S+ had pivoted before QEMU went away: disk vda is now %s \(qcow2\); '
                       r'the old active file %s stays' % (re.escape(base), re.escape(top)), mark)
        self.assertEqual((self.jprop(job, 'State'), self.jprop(job, 'Error')), ('completed', ''))
        self.assertEqual([s.args for s in self.completed_signals(rec, job)], [('completed', '')])
        self.assertEqual(self.stored_source(dom), base, 'the stored definition after the recovered pivot')
        self.assertEqual(self.disks(dom)['vda'], (base, base))
        self.assertEqual(self.xml_disk_chain(h.call(dom, D, 'GetXMLDesc', (0,), 't')), (base, []))
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if '.job-' in f], [], 'the journal stayed')
        self.assertTrue(os.path.exists(top) and os.path.exists(mid), 'the old files are the user\'s to remove')
        written = self.expected_patterns() + [(0x55, 3 * MiB, MiB), (0x5b, 20 * MiB, MiB)]
        self.assert_clean(base)
        self.assert_reads(base, written, 'base after the recovered pivot')
        h.call(dom, D, 'Start', (0,), 't')
        self.assert_chain(dom, [base], 'started after the recovered pivot')
        self.assert_guest_reads(dom, written, 'started after the recovered pivot')
        h.call(dom, D, 'Stop', (0,), 't')
        self.assert_clean(base)


if __name__ == '__main__':
    q.main()
