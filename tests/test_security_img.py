#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qemu-img on descriptors (issue #10 §3, docs/security.md §4): whatever an
image header says and whatever is swapped into an image folder after
qsnapd checked it, the qemu-img that qsnapd runs reaches nothing outside
the domain's allowed folders.

qsnapd reads and checks every chain before it acts, so the attacks here
change things *after* the check, while an earlier step of the same
operation runs (throttled with the test hooks), or put a symbolic link
where a checked image was:
- offline Delete (forward): while the throttled `qemu-img commit` runs, the
  overlay that the next step re-points (`qemu-img rebase -u`) is swapped
  for a link to a qcow2 image outside; its header must stay as it was;
- offline push backup of two disks: while the first disk's copy runs
  (throttled), the second disk's header is rewritten to a json: backing
  name of a root-only file: its contents must reach no backup (the copy
  is of the chain qsnapd opened, or the backup fails with PathNotAllowed);
- internal snapshots shut off (create, revert, delete) and a checkpoint
  (`qemu-img bitmap`) with the disk swapped for a link to an image
  outside that even holds a tag of the same name;
- the Size of a shut-off domain's checkpoint (read from the images' own
  bitmap tables) with the disk swapped for a link to a root-only qcow2
  outside that holds a bitmap of the checkpoint's name: not read (its
  atime stays, the Size is not its count);
- every other read of an image through the path gate (docs/security.md
  §3 "Every image read"), each against a root-only qcow2 outside whose
  atime and sha256 must stay: the offline bitmap listing (CreateCheckpoint
  on a disk swapped for a link: the gate's text), the chain behind Disks
  and Start (the active file a link: not read), and an external Revert's
  frozen chain (its bitmaps for the new overlay) whose file's header names
  that qcow2, or whose backing file is swapped for a link to it;
- files qsnapd made and removes (LinkFreeRemovalTest): an aborted push
  backup's target and an interrupted snapshot's overlay, their folder
  swapped for a link to a root-only folder holding a file of the same
  name: that file stays, nothing is removed through the link.
Every victim is checksummed before and after (AttackTestCase), and no file
below the test's folder holds the root-only file's contents.
"""

import os
import re

import qsnaptest as q
from test_authorization import call_as
from test_security import USER, AttackTestCase, ext_snapshot_xml, sha256

D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE
J = q.JOB_IFACE
C = q.CHECKPOINT_IFACE
PATH_NOT_ALLOWED = q.ERROR_PREFIX + 'PathNotAllowed'
MiB = 1024 * 1024
DISK_ONLY = 16
SIZE = 4   # Checkpoint.GetXMLDesc


class QemuImgByDescriptorTest(AttackTestCase):

    def setUp(self):
        super().setUp()
        with open(self.victims[2], 'rb') as f:
            self.secret = f.read().strip()

    def assertFinished(self):
        for dirpath, dirnames, filenames in os.walk(self.h.root):
            for n in filenames:
                p = os.path.join(dirpath, n)
                if p == self.victims[2] or os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, 'rb') as f:
                    self.assertNotIn(self.secret, f.read(), 'the root-only file reached %s' % p)
        super().assertFinished()

    def active(self, dom, target='vda'):
        return {d[0]: d[2] for d in self.h.get_property(dom, D, 'Disks')}[target]

    def backing(self, image):
        return q.qemu_img_info(image).get('backing-filename')

    def qemu_img_on(self, path):
        return [p for p in q._pids_mentioning(path) if 'qemu-img' in (q._proc_cmdline(p) or '')]

    def wait_job(self, job, timeout=60):
        q.wait_until(lambda: self.h.get_property(job, J, 'State') in ('completed', 'failed', 'canceled'), timeout,
                     'the job ends')
        return self.h.get_property(job, J, 'State'), self.h.get_property(job, J, 'Error')

    def json_secret(self):
        return 'json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}' % self.victims[2]

    def test_offline_delete_forward_link_swapped_in(self):
        h = self.h
        victim = self.victims[3]
        victim_backing = self.backing(victim)
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_DELETE_SPEED': str(MiB)})
        h.call(self.mine, D, 'CreateSnapshot', (ext_snapshot_xml('s1'), DISK_ONLY), 'st')
        o = self.active(self.mine)
        q.qemu_io_write_pattern(o, 0x22, 0, 4 * MiB)
        h.call(self.mine, D, 'CreateSnapshot', (ext_snapshot_xml('s2'), DISK_ONLY), 'st')
        x = self.active(self.mine)
        job = h.call(self.mine + '/snapshot/s1', S, 'Delete', (0,), 't')
        q.wait_until(lambda: self.qemu_img_on(o), 10, 'the throttled qemu-img commit runs')
        # x's header is rewritten next (rebase -u onto the base): x is now a link out.
        os.rename(x, x + '.away')
        os.symlink(victim, x)
        state, error = self.wait_job(job)
        self.assertEqual(state, 'failed', 'the rebase went through a link swapped in after the check')
        self.assertIn('is not in an allowed folder', error)
        self.assertEqual(self.backing(victim), victim_backing)
        self.assertTrue(q.qemu_io_read_pattern(self.base, 0x22, 0, 4 * MiB), 'the commit missed the base')
        self.assertFinished()

    def assert_real_header_names(self, dom, what):
        """Every header of the disk's chain names the next file by its real
        path (not /proc/self/fd/N, not json:), as qemu-img info shows it."""
        chain = {d[0]: d[3] for d in self.h.get_property(dom, D, 'Disks')}['vda'].split(' <- ')
        chain.reverse()    # active first
        for upper, lower in zip(chain, chain[1:] + [None]):
            info = q.qemu_img_info(upper)
            self.assertEqual(info.get('backing-filename'), lower, '%s: the header of %s' % (what, upper))

    def test_offline_merges_write_real_names(self):
        """Offline commit (forward) and rebase (backward) run on descriptors
        and still write the real file names into the headers."""
        h = self.h
        for k in range(1, 4):
            q.qemu_io_write_pattern(self.active(self.mine), 0xa0 + k, k * MiB, MiB)
            xml = ("<domainsnapshot><name>s%d</name><disks><disk name='vda' snapshot='external'>"
                   "<on_delete merge='%s'/></disk></disks></domainsnapshot>" % (k, 'backward' if k == 3 else 'forward'))
            h.call(self.mine, D, 'CreateSnapshot', (xml, DISK_ONLY), 'st')
        self.assert_real_header_names(self.mine, 'before')
        for name, how in (('s2', 'forward'), ('s3', 'backward')):
            job = h.call(self.mine + '/snapshot/' + name, S, 'Delete', (0,), 't')
            if job != '/':
                self.assertEqual(self.wait_job(job), ('completed', ''))
            self.assert_real_header_names(self.mine, 'after the %s merge of %s' % (how, name))
        active = self.active(self.mine)
        for k in range(1, 4):
            self.assertTrue(q.qemu_io_read_pattern(active, 0xa0 + k, k * MiB, MiB), 'pattern %d' % k)
        q.qemu_img_check(active)
        self.assertFinished()

    def test_offline_backup_json_header_rewritten(self):
        h = self.h
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_BACKUP_SPEED': str(MiB)})
        vda = h.create_image('two-a.qcow2', '16M')
        q.qemu_io_write_pattern(vda, 0x44, 0, 4 * MiB)
        below = h.create_image('two-b-base.qcow2', '16M')
        vdb = h.create_image('two-b.qcow2', '16M', backing=below)
        dom = h.define_domain('two', [q.Disk('vda', vda), q.Disk('vdb', vdb)])
        targets = {t: h.image_path('bk-%s.qcow2' % t) for t in ('vda', 'vdb')}
        xml = ("<domainbackup mode='push'><disks>%s</disks></domainbackup>"
               % ''.join("<disk name='%s' type='file'><target file='%s'/><driver type='qcow2'/></disk>" % (t, p)
                         for t, p in targets.items()))
        job = h.call(dom, D, 'BackupBegin', (xml, '', 0), 'sst')
        q.wait_until(lambda: h.get_property(job, J, 'Cur') > 0, 20, "the first disk's throttled copy runs")
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b', self.json_secret(), vdb], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        state, error = self.wait_job(job, 120)
        # Either the chain was opened before the rewrite (the copy is of the
        # files qsnapd opened) or the rewrite is refused: never followed.
        if state == 'failed':
            self.assertIn('json: or protocol name', error)
            self.assertFalse(os.path.exists(targets['vdb']))
        else:
            self.assertEqual(state, 'completed', error)
            r = q.run([q.QEMU_IMG, 'compare', '-U', '-F', 'qcow2', below, targets['vdb']], timeout=60)
            self.assertEqual(r.returncode, 0, 'the backup of vdb is not its chain as qsnapd read it: %s' % r.stdout)
        self.assertFinished()

    def swap_disk_for_link(self, victim):
        self.enterContext(q.swapped_for_link(self.base, victim, '.away'))

    def test_internal_snapshots_through_a_link(self):
        """The disk swapped for a link to a qcow2 image outside that holds a
        tag of the same name: create, revert and delete refuse, the image
        outside keeps its tags and its bytes."""
        h = self.h
        victim = self.victims[3]
        h.call(self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>i1</name></domainsnapshot>', 0), 'st')
        q.run([q.QEMU_IMG, 'snapshot', '-c', 'i1', victim], check=True, timeout=30)
        q.run([q.QEMU_IMG, 'snapshot', '-c', 'i2', victim], check=True, timeout=30)
        self.sums[victim] = sha256(victim)
        self.swap_disk_for_link(victim)
        calls = (('create', self.mine, D, 'CreateSnapshot', ('<domainsnapshot><name>i2</name></domainsnapshot>', 0), 'st'),
                 ('revert', self.mine + '/snapshot/i1', S, 'Revert', (0,), 't'),
                 ('delete', self.mine + '/snapshot/i1', S, 'Delete', (0,), 't'))
        for what, path, iface, method, args, sig in calls:
            with self.subTest(what=what):
                err = None
                try:
                    reply = h.call(path, iface, method, args, sig)
                    if isinstance(reply, str) and '/job/' in reply:
                        state, error = self.wait_job(reply)
                        err = None if state == 'completed' else error
                except q.DBusCallError as e:
                    self.assertEqual(e.name, PATH_NOT_ALLOWED, '%s: %s' % (what, e))
                    err = e
                self.assertIsNotNone(err, '%s acted through the link' % what)
                if isinstance(err, str):    # a job's error text
                    self.assertIn('is not in an allowed folder', err, what)
                self.assertEqual(sha256(victim), self.sums[victim], '%s changed the image outside' % what)
        self.assertFinished()

    def root_only_with_bitmap(self, name, bitmap, size='64M'):
        """A root-only qcow2 outside the allowed folders holding a bitmap
        (3 MiB dirty), checksummed, its atime put before its mtime (relatime:
        any read moves it). Returns (path, atime)."""
        secret = q.qemu_img_create(os.path.join(self.outside, name), size)
        q.run([q.QEMU_IMG, 'bitmap', '--add', secret, bitmap], check=True, timeout=30)
        q.qemu_io_write_pattern(secret, 0x66, 8 * MiB, 3 * MiB)
        os.chmod(secret, 0o600)
        self.sums[secret] = sha256(secret)
        st = os.stat(secret)
        os.utime(secret, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        return secret, os.stat(secret).st_atime_ns

    def assertUnread(self, secret, atime):
        self.assertEqual(os.stat(secret).st_atime_ns, atime, 'qsnapd read the root-only file %s' % secret)
        self.assertEqual(sha256(secret), self.sums[secret], '%s changed' % secret)

    def test_checkpoint_bitmap_through_a_link(self):
        """The offline bitmap listing (qemu-img info) of a disk swapped for a
        link to a root-only qcow2 outside that holds bitmaps: refused by the
        path gate (its one text), the file outside not even opened."""
        h = self.h
        secret, atime = self.root_only_with_bitmap('secret-listing.qcow2', 'theirs')
        self.swap_disk_for_link(secret)
        with self.assertDBusError(PATH_NOT_ALLOWED) as cm:
            h.call(self.mine, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'st')
        self.assertIn('is not in an allowed folder of domain', str(cm.exception))
        self.assertUnread(secret, atime)
        self.assertFinished()

    def test_disks_chain_through_a_link(self):
        """The chain behind Domain.Disks (and every plan, and Start) is read
        from files the path gate opens, the active one included: a disk
        swapped for a link to a root-only qcow2 outside is not read at all
        (Disks shows the image alone), and Start refuses it."""
        h = self.h
        below = q.qemu_img_create(os.path.join(self.outside, 'secret-below.qcow2'), '64M')
        secret, atime = self.root_only_with_bitmap('secret-top.qcow2', 'theirs')
        q.run([q.QEMU_IMG, 'rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', below, secret], check=True, timeout=30)
        self.sums[secret] = sha256(secret)
        st = os.stat(secret)
        os.utime(secret, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        atime = os.stat(secret).st_atime_ns
        self.swap_disk_for_link(secret)
        h.restart_daemon(kill=False)    # nothing remembered of the chain
        disks = {d[0]: d for d in h.get_property(self.mine, D, 'Disks')}
        self.assertEqual(disks['vda'][3], self.base, 'Disks shows a chain read through the link')
        with self.assertDBusError(PATH_NOT_ALLOWED) as cm:
            h.call(self.mine, D, 'Start', (0,), 't')
        self.assertIn('is not in an allowed folder of domain', str(cm.exception))
        self.assertUnread(secret, atime)
        self.assertFinished()

    def revert_refused(self, snapshot_path):
        """Revert (no flags) must fail with the path gate's text: a D-Bus
        error or a failed job. Returns the text."""
        err = None
        try:
            reply = self.h.call(snapshot_path, S, 'Revert', (0,), 't')
            if isinstance(reply, str) and '/job/' in reply:
                state, error = self.wait_job(reply)
                err = None if state == 'completed' else error
        except q.DBusCallError as e:
            self.assertEqual(e.name, PATH_NOT_ALLOWED, str(e))
            err = str(e)
        self.assertIsNotNone(err, 'the revert read the frozen chain through a file outside')
        self.assertIn('is not in an allowed folder of domain', err)
        return err

    def test_revert_frozen_backing_swapped_for_a_link(self):
        """The same read with a link: the frozen file's own backing file
        (below it, in the image root) swapped for a link to a root-only qcow2
        outside. The Revert is refused, the file outside never read."""
        h = self.h
        b0 = h.create_image('deep-b0.qcow2', '64M')
        b1 = h.create_image('deep-b1.qcow2', '64M', backing=b0)
        dom = h.define_domain('deep', [q.Disk('vda', b1)])
        h.call(dom, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'st')
        h.call(dom, D, 'CreateSnapshot', (ext_snapshot_xml('s1'), DISK_ONLY), 'st')
        overlay = self.active(dom)
        secret, atime = self.root_only_with_bitmap('secret-deep.qcow2', 'c1')
        self.enterContext(q.swapped_for_link(b0, secret, '.away'))
        before = set(os.listdir(os.path.dirname(b1)))
        err = self.revert_refused(dom + '/snapshot/s1')
        self.assertIn(b0, err)
        self.assertUnread(secret, atime)
        self.assertEqual(set(os.listdir(os.path.dirname(b1))), before, 'the refused revert left a file')
        self.assertEqual(self.active(dom), overlay)
        self.assertFinished()

    def test_revert_frozen_chain_leaving_the_folders(self):
        """An external Revert gives the new overlay the bitmaps of the frozen
        file's chain (bitmap_disk_offline()): with the frozen file's header
        rewritten to name a root-only qcow2 outside (holding a bitmap of the
        checkpoint's name), that chain is read through the path gate: the
        Revert is refused with its text, nothing of it stays, and the file
        outside is never read."""
        h = self.h
        h.call(self.mine, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0), 'st')
        h.call(self.mine, D, 'CreateSnapshot', (ext_snapshot_xml('s1'), DISK_ONLY), 'st')
        overlay = self.active(self.mine)
        self.assertNotEqual(overlay, self.base)
        secret, atime = self.root_only_with_bitmap('secret-frozen.qcow2', 'c1')
        # The frozen file (the disk's base, in the image root) now names it.
        q.run([q.QEMU_IMG, 'rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', secret, self.base], check=True,
              timeout=30)
        base_sum = sha256(self.base)
        before = set(os.listdir(os.path.dirname(self.base)))
        err = self.revert_refused(self.mine + '/snapshot/s1')
        self.assertIn(secret, err)
        self.assertUnread(secret, atime)
        self.assertEqual(sha256(self.base), base_sum, 'the frozen file changed')
        self.assertEqual(set(os.listdir(os.path.dirname(self.base))), before, 'the refused revert left a file')
        self.assertEqual(self.active(self.mine), overlay)
        self.assertFinished()

    def test_checkpoint_size_offline_through_a_link(self):
        h = self.h
        c1 = h.call(self.mine, D, 'CreateCheckpoint', ('<domaincheckpoint><name>c1</name></domaincheckpoint>', 0),
                    'st')
        q.qemu_io_write_pattern(self.base, 0x31, 0, MiB)
        h.call(c1, C, 'GetXMLDesc', (SIZE,), 't')
        self.assertEqual(h.get_property(c1, C, 'Size'), MiB, 'Size before the swap')
        # Root-only, outside the allowed folders, with a bitmap c1 of 3 MiB.
        secret = q.qemu_img_create(os.path.join(self.outside, 'secret-bitmap.qcow2'), '64M')
        q.run([q.QEMU_IMG, 'bitmap', '--add', secret, 'c1'], check=True, timeout=30)
        q.qemu_io_write_pattern(secret, 0x66, 8 * MiB, 3 * MiB)
        os.chmod(secret, 0o600)
        self.sums[secret] = sha256(secret)
        st = os.stat(secret)
        os.utime(secret, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))   # relatime: a read moves it
        atime = os.stat(secret).st_atime_ns
        self.swap_disk_for_link(secret)
        mark = h.daemon_log_mark()
        h.call(c1, C, 'GetXMLDesc', (SIZE,), 't')
        self.assertNotEqual(h.get_property(c1, C, 'Size'), 3 * MiB, 'Size counted the bitmap of the file outside')
        self.assertEqual(os.stat(secret).st_atime_ns, atime, 'qsnapd read the root-only file through the link')
        self.assertNotIn('secret-bitmap', h.daemon_log_since(mark))
        self.assertFinished()


class LinkFreeRemovalTest(AttackTestCase):
    """docs/security.md §3 "Removal": a file qsnapd made in a folder the
    caller may write in is removed only through a path without a symbolic
    link. Between the file's creation and its removal the folder holding
    it is renamed aside and a link to a root-only folder put in its place
    (what the folder's owner could do), the root-only folder holding a
    file of the same name: the removal must leave that file (content
    checked), remove nothing, leave qsnapd's file in the renamed folder and
    say so in the log."""

    def setUp(self):
        super().setUp()
        self.sub = self.h.image_path('sub')
        os.mkdir(self.sub, 0o755)
        self.protected = os.path.join(self.h.root, 'protected-folder')
        os.mkdir(self.protected, 0o700)

    def plant_victim(self, name):
        victim = os.path.join(self.protected, name)
        with open(victim, 'w') as f:
            f.write("root's file, not qsnapd's\n")
        os.chmod(victim, 0o600)
        self.victims.append(victim)
        self.sums[victim] = sha256(victim)
        return victim

    def swap_folder(self):
        """sub renamed aside, a link to the root-only folder in its place:
        the renamed folder."""
        moved = self.sub + '.away'
        os.rename(self.sub, moved)
        os.symlink(self.protected, self.sub)
        return moved

    def assertLeft(self, victim, moved, name, mark):
        self.assertTrue(os.path.exists(victim), '%s was removed through the link' % victim)
        with open(victim) as f:
            self.assertEqual(f.read(), "root's file, not qsnapd's\n")
        self.assertEqual(sorted(os.listdir(self.protected)), [name], 'the root-only folder changed')
        self.assertTrue(os.path.isfile(os.path.join(moved, name)), "qsnapd's file is not left in the renamed folder")
        self.h.wait_for_log(r'Left %s in place: its path goes through a symbolic link'
                            % re.escape(os.path.join(self.sub, name)), mark)

    def test_push_target_after_abort(self):
        """A push backup (the per-domain caller's, throttled so that it
        runs) aborted after its target's folder became a link: the target
        is not removed through it."""
        h = self.h
        h.grant([q.ACTION_BACKUP], user=USER, domain='mine')
        h.restart_daemon(kill=False, env={'QSNAPD_TEST_BACKUP_SPEED': str(MiB)})
        q.qemu_io_write_pattern(self.base, 0x5a, 0, 16 * MiB)
        name = 'shadow'
        target = os.path.join(self.sub, name)
        xml = ("<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='%s'/>"
               "<driver type='qcow2'/></disk></disks></domainbackup>" % target)
        err, out = call_as(h, USER, self.mine, D, 'BackupBegin', [('s', xml), ('s', ''), ('t', 0)])
        self.assertIsNone(err, out)
        job = re.search(r"'(/[^']*)'", out).group(1)
        q.wait_until(lambda: h.get_property(job, J, 'Cur') > 0, 30, 'the throttled copy runs')
        self.assertTrue(os.path.isfile(target))
        victim = self.plant_victim(name)
        moved = self.swap_folder()
        mark = h.daemon_log_mark()
        err, out = call_as(h, USER, job, J, 'Abort', [('t', 0)])
        self.assertIsNone(err, out)
        q.wait_until(lambda: h.get_property(job, J, 'State') in ('completed', 'failed', 'canceled'), 60,
                     'the job ends')
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        q.wait_until(lambda: 'Left ' in h.daemon_log_since(mark) or not os.path.exists(victim), 30,
                     'the aborted target is dealt with')
        self.assertLeft(victim, moved, name, mark)
        self.assertFinished()

    def test_interrupted_snapshot_overlay(self):
        """qsnapd killed after it made a snapshot's overlay (create:overlays)
        and the overlay's folder swapped for a link before the next qsnapd
        rolls the snapshot back: the overlay is not removed through it."""
        h = self.h
        name = 'passwd'
        overlay = os.path.join(self.sub, name)
        h.crash_at('create:overlays', self.mine, D, 'CreateSnapshot', (ext_snapshot_xml('s1', overlay), DISK_ONLY),
                   'st', start_again=False)
        self.assertTrue(os.path.isfile(overlay))
        victim = self.plant_victim(name)
        moved = self.swap_folder()
        mark = h.daemon_log_mark()
        h.start_daemon()
        h.wait_for_log(r'rolled back a snapshot interrupted', mark)
        self.assertLeft(victim, moved, name, mark)
        self.assertEqual(h.call(self.mine, D, 'ListSnapshots', (0,), 't'), [])
        self.assertEqual(self.h.get_property(self.mine, D, 'Disks')[0][2], self.base)
        self.assertFinished()


if __name__ == '__main__':
    q.main()
