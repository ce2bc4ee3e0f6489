#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The authorization matrix (tests/auth_matrix.py, docs/reliability.md):
every method, called by root, by nobody (polkit's defaults), by the test
user whom a rules.d rule grants every action but host-admin for domain A
only (on A, and on B), by a user a rule answers AUTH_ADMIN (no agent runs)
and by one a rule answers NO. What each call answered must be exactly
auth_matrix.EXPECTED.

One harness, two domains A and B, each running with a chain on vda
(base <- mid <- top), vdb, a disk-only snapshot s1, a checkpoint k1 and
a READY active commit of vdb. The refused columns call B in the state in which the call
would otherwise go ahead (running with the job for most, running without
it for CreateSnapshot, Delete and Revert, paused for Resume, shut off for
Start and Undefine), and B's properties, jobs and files must be as
before each column. The allowed columns run the calls in an order in
which each one can succeed (root on B, the test user on A): reads,
DefineDomain (a redefinition), GetXMLDesc(SECURE), QemuMonitorCommand,
Pause and Resume, SetSpeed/Pause/Resume/Pivot of the READY job,
BlockCommit of mid, BlockRebase COPY (Abort of its job), BlockCopy,
BlockPull, BackupBegin (push; Abort of its job), BackupGetXMLDesc,
CreateCheckpoint, Checkpoint.Delete(METADATA_ONLY) of k1, CreateSnapshot,
Revert(FORCE) to s1, Delete(METADATA_ONLY), Start, Stop, Undefine.
BackupGetXMLDesc in the refused columns is called while root runs a pull
backup of B. Calls as other users go through gdbus (the harness
notes their D-Bus errors for tests/errors_matrix.py); root's through Gio.
"""

import os
import re

import auth_matrix
import qsnaptest as q
from test_authorization import call_as

D = q.DOMAIN_IFACE
J = q.JOB_IFACE
S = q.SNAPSHOT_IFACE
K = q.CHECKPOINT_IFACE
M = q.MANAGER_IFACE
MiB = 1 << 20
ACTIVE, COPY, DISK_ONLY, METADATA_ONLY, FORCE, SECURE, SNAPSHOTS_METADATA = 4, 8, 16, 2, 4, 1, 1

USERS = {'nobody': q.NOBODY_UID, 'own': q.TEST_USER, 'other': q.TEST_USER, 'ask': 'daemon', 'no': 'bin'}
DELEGATED = [a for a in q.ALL_ACTIONS if a != q.ACTION_HOST_ADMIN]

# Rows called while B runs without a block job (a job holds its disk:
# snapshot operations would be Busy), is paused, or shut off; the rest while
# it runs with its READY job.
PHASE = {'Domain.BackupGetXMLDesc(a backup runs)': 'backup', 'Domain.CreateSnapshot(DISK_ONLY)': 'no job',
         'Domain.CreateCheckpoint(0)': 'no job', 'Snapshot.Delete(METADATA_ONLY)': 'no job',
         'Snapshot.Revert(FORCE)': 'no job', 'Domain.Resume()': 'paused', 'Domain.Start(0)': 'shutoff',
         'Domain.Undefine(SNAPSHOTS_METADATA)': 'shutoff'}


def backup_xml(path):
    return ("<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='%s'/></disk></disks>"
            "</domainbackup>" % path)


PULL_BACKUP_XML = "<domainbackup mode='pull'><disks><disk name='vda'/></disks></domainbackup>"


def dest_xml(path):
    return "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>" % path


class Domain:
    """One domain of the test and what its rows are called with."""

    def __init__(self, h, name):
        self.h = h
        self.name = name
        self.base = h.create_image('%s-base.qcow2' % name, '16M')
        self.mid = h.create_image('%s-mid.qcow2' % name, '16M', backing=self.base)
        self.top = h.create_image('%s-top.qcow2' % name, '16M', backing=self.mid)
        q.qemu_io_write_pattern(self.mid, 0x22, 0, MiB)
        bbase = h.create_image('%s-b-base.qcow2' % name, '16M')
        self.btop = h.create_image('%s-b-top.qcow2' % name, '16M', backing=bbase)
        self.path = h.define_domain(name, [q.Disk('vda', self.top), q.Disk('vdb', self.btop)],
                                    devices="    <serial type='pty'><target port='0'/></serial>\n"
                                            "    <graphics type='vnc'/>")
        self.s1 = h.call(self.path, D, 'CreateSnapshot',
                         ('<domainsnapshot><name>s1</name></domainsnapshot>', DISK_ONLY), 'st')
        self.k1 = h.call(self.path, D, 'CreateCheckpoint', ('<domaincheckpoint><name>k1</name></domaincheckpoint>', 0),
                         'st')
        self.job = None
        self.n = 0

    def start(self):
        """Running, with a READY active commit of vdb in self.job."""
        h = self.h
        h.call(self.path, D, 'Start', (0,), 't')
        self.job = h.call(self.path, D, 'BlockCommit', ('vdb', '', '', 0, ACTIVE), 'ssstt')
        wait_state(h, self.job, 'ready')

    def redefinition(self):
        xml = self.h.call(self.path, D, 'GetXMLDesc', (2,), 't')
        self.n += 1
        return re.sub(r'(<description>.*?</description>\s*)?(?=<memory)',
                      '<description>redefined %d</description>\n  ' % self.n, xml, count=1, flags=re.S)

    def dest(self, what):
        return self.h.image_path('%s-%s.qcow2' % (self.name, what))

    def calls(self):
        """{row key: (path, interface, method, [(signature, value), ...])}
        for the calls that refused columns make."""
        P = self.path
        return {
            'Manager.ListDomains()': (q.MANAGER_PATH, M, 'ListDomains', []),
            'Manager.GetDomain(name)': (q.MANAGER_PATH, M, 'GetDomain', [('s', self.name)]),
            'Manager.DefineDomain(a redefinition, disks below the image root)':
                (q.MANAGER_PATH, M, 'DefineDomain', [('s', self.redefinition()), ('t', 0)]),
            'Domain.Start(0)': (P, D, 'Start', [('t', 0)]),
            'Domain.Stop(0)': (P, D, 'Stop', [('t', 0)]),
            'Domain.Pause()': (P, D, 'Pause', []),
            'Domain.Resume()': (P, D, 'Resume', []),
            'Domain.Undefine(SNAPSHOTS_METADATA)': (P, D, 'Undefine', [('t', SNAPSHOTS_METADATA)]),
            'Domain.GetXMLDesc(0)': (P, D, 'GetXMLDesc', [('t', 0)]),
            'Domain.GetXMLDesc(SECURE)': (P, D, 'GetXMLDesc', [('t', SECURE)]),
            'Domain.OpenConsole(serial0)': (P, D, 'OpenConsole', [('s', 'serial0'), ('t', 0)]),
            'Domain.OpenGraphicsFD(0)': (P, D, 'OpenGraphicsFD', [('u', 0), ('t', 0)]),
            'Domain.QemuMonitorCommand(query-status)':
                (P, D, 'QemuMonitorCommand', [('s', '{"execute": "query-status"}'), ('t', 0)]),
            'Domain.CreateSnapshot(DISK_ONLY)':
                (P, D, 'CreateSnapshot', [('s', '<domainsnapshot><name>c</name></domainsnapshot>'), ('t', DISK_ONLY)]),
            'Domain.ListSnapshots(0)': (P, D, 'ListSnapshots', [('t', 0)]),
            'Domain.LookupSnapshot(name)': (P, D, 'LookupSnapshot', [('s', 's1')]),
            'Domain.BlockPull(vda)': (P, D, 'BlockPull', [('s', 'vda'), ('t', 0), ('t', 0)]),
            'Domain.BlockRebase(vda, COPY)':
                (P, D, 'BlockRebase', [('s', 'vda'), ('s', self.dest('rebase')), ('t', 0), ('t', COPY)]),
            'Domain.BlockCommit(vda, a backing file)':
                (P, D, 'BlockCommit', [('s', 'vda'), ('s', ''), ('s', self.mid), ('t', 0), ('t', 0)]),
            'Domain.BlockCopy(vda, a new qcow2)':
                (P, D, 'BlockCopy', [('s', 'vda'), ('s', dest_xml(self.dest('copy'))), ('t', 0), ('t', 0)]),
            'Domain.BackupBegin(push, vda, a new target)':
                (P, D, 'BackupBegin', [('s', backup_xml(self.dest('backup'))), ('s', ''), ('t', 0)]),
            'Domain.BackupGetXMLDesc(a backup runs)': (P, D, 'BackupGetXMLDesc', []),
            'Snapshot.GetXMLDesc(0)': (self.s1, S, 'GetXMLDesc', [('t', 0)]),
            'Snapshot.GetXMLDesc(SECURE)': (self.s1, S, 'GetXMLDesc', [('t', SECURE)]),
            'Snapshot.ListChildren(0)': (self.s1, S, 'ListChildren', [('t', 0)]),
            'Snapshot.Delete(METADATA_ONLY)': (self.s1, S, 'Delete', [('t', METADATA_ONLY)]),
            'Snapshot.CheckDelete(0)': (self.s1, S, 'CheckDelete', [('t', 0)]),
            'Snapshot.Revert(FORCE)': (self.s1, S, 'Revert', [('t', FORCE)]),
            'Snapshot.CheckRevert(FORCE)': (self.s1, S, 'CheckRevert', [('t', FORCE)]),
            'Domain.CreateCheckpoint(0)':
                (P, D, 'CreateCheckpoint', [('s', '<domaincheckpoint><name>k2</name></domaincheckpoint>'), ('t', 0)]),
            'Domain.ListCheckpoints(0)': (P, D, 'ListCheckpoints', [('t', 0)]),
            'Domain.LookupCheckpoint(name)': (P, D, 'LookupCheckpoint', [('s', 'k1')]),
            'Checkpoint.GetXMLDesc(0)': (self.k1, K, 'GetXMLDesc', [('t', 0)]),
            'Checkpoint.GetXMLDesc(SECURE)': (self.k1, K, 'GetXMLDesc', [('t', SECURE)]),
            'Checkpoint.ListChildren(0)': (self.k1, K, 'ListChildren', [('t', 0)]),
            'Checkpoint.Delete(METADATA_ONLY)': (self.k1, K, 'Delete', [('t', METADATA_ONLY)]),
            'BlockJob1.Abort(0)': (self.job, J, 'Abort', [('t', 0)]),
            'BlockJob1.Pivot()': (self.job, J, 'Pivot', []),
            'BlockJob1.SetSpeed(0)': (self.job, J, 'SetSpeed', [('t', 0)]),
            'BlockJob1.Pause()': (self.job, J, 'Pause', []),
            'BlockJob1.Resume()': (self.job, J, 'Resume', []),
        }


def wait_state(h, job, *states):
    return q.wait_until(lambda: (lambda s: s if s in states else None)(h.get_property(job, J, 'State')),
                        60, '%s in state %s' % (job, '/'.join(states)))


def result_of(error):
    if error is None:
        return auth_matrix.OK
    if error == q.ACCESS_DENIED:
        return auth_matrix.DENIED
    if error == q.INTERACTIVE_AUTH_REQUIRED:
        return auth_matrix.ASK
    return error


class AuthMatrixTest(q.QsnapTestCase):
    maxDiff = None
    harness_options = {'image_root': True}

    def call(self, who, path, iface, method, args):
        """(error name or None, the value: unpacked for root, gdbus's text for the others)."""
        if who == 'root':
            try:
                value = self.h.call(path, iface, method, tuple(v for _, v in args) or None,
                                    ''.join(s for s, _ in args) or None)
                return None, value
            except q.DBusCallError as e:
                return e.name, e.message
        return call_as(self.h, USERS[who], path, iface, method, args)

    @staticmethod
    def object_path(who, value):
        if who == 'root':
            return value
        m = re.search(r"objectpath '([^']+)'", value or '')
        return m.group(1) if m else None

    def observe(self, dom):
        h = self.h
        props = h.get_all(dom.path, D)
        seen = {k: props[k] for k in ('State', 'Disks', 'Jobs', 'Snapshots', 'CurrentSnapshot', 'Checkpoints')}
        seen['XML'] = h.call(dom.path, D, 'GetXMLDesc', (2,), 't')
        seen['job states'] = {j: h.get_property(j, J, 'State') for j in props['Jobs']}
        seen['files'] = sorted(os.listdir(h.images_dir))
        seen['domains'] = sorted(h.call(q.MANAGER_PATH, M, 'ListDomains'))
        return seen

    def refused_columns(self, B, got):
        """nobody, the test user on B, daemon and bin: every row on B, in
        the state in which the call would otherwise go ahead."""
        h = self.h
        backup = None
        for phase in ('running', 'backup', 'no job', 'paused', 'shutoff'):
            if phase == 'backup':
                backup = h.call(B.path, D, 'BackupBegin', (PULL_BACKUP_XML, '', 0), 'sst')
            elif phase == 'no job':
                h.call(backup, J, 'Abort', (0,), 't')
                h.call(B.job, J, 'Abort', (0,), 't')
            elif phase == 'paused':
                h.call(B.path, D, 'Pause')
            elif phase == 'shutoff':
                h.call(B.path, D, 'Stop', (0,), 't')
                # Undefine(SNAPSHOTS_METADATA) would be HasSnapshots with a
                # checkpoint: k1's metadata goes for this phase, and comes back.
                k1_xml = h.call(B.k1, K, 'GetXMLDesc', (SECURE,), 't')
                h.call(B.k1, K, 'Delete', (METADATA_ONLY,), 't')
            for who in ('nobody', 'other', 'ask', 'no'):
                before = self.observe(B)
                for row, (path, iface, method, args) in B.calls().items():
                    if PHASE.get(row, 'running') != phase:
                        continue
                    error, _ = self.call(who, path, iface, method, args)
                    got.setdefault(row, {})[who] = result_of(error)
                self.assertEqual(self.observe(B), before, '%s changed domain B while it was %s' % (who, phase))
        h.call(B.path, D, 'CreateCheckpoint', (k1_xml, 1), 'st')    # REDEFINE

    def allowed_column(self, who, dom, got):
        """Every row by who on dom, in an order in which each can succeed."""
        h = self.h
        calls = dom.calls()

        def row(key, path=None, args=None):
            p, iface, method, a = calls[key]
            error, value = self.call(who, path or p, iface, method, a if args is None else args)
            got.setdefault(key, {})[who] = result_of(error)
            return value

        for key in ('Manager.ListDomains()', 'Manager.GetDomain(name)', 'Domain.GetXMLDesc(0)',
                    'Domain.ListSnapshots(0)', 'Domain.LookupSnapshot(name)', 'Snapshot.GetXMLDesc(0)',
                    'Snapshot.ListChildren(0)', 'Snapshot.CheckDelete(0)', 'Snapshot.CheckRevert(FORCE)',
                    'Domain.ListCheckpoints(0)', 'Domain.LookupCheckpoint(name)', 'Checkpoint.GetXMLDesc(0)',
                    'Checkpoint.ListChildren(0)', 'Checkpoint.GetXMLDesc(SECURE)',
                    'Manager.DefineDomain(a redefinition, disks below the image root)', 'Domain.GetXMLDesc(SECURE)',
                    'Snapshot.GetXMLDesc(SECURE)', 'Domain.OpenConsole(serial0)', 'Domain.OpenGraphicsFD(0)',
                    'Domain.QemuMonitorCommand(query-status)', 'Domain.Pause()',
                    'Domain.Resume()', 'BlockJob1.SetSpeed(0)', 'BlockJob1.Pause()', 'BlockJob1.Resume()',
                    'BlockJob1.Pivot()'):
            row(key)
        if got['BlockJob1.Pivot()'][who] == auth_matrix.OK:
            wait_state(h, dom.job, 'completed')
        else:    # refused: root ends the job, so that the rest can go on
            h.call(dom.job, J, 'Abort', (0,), 't')

        job = self.object_path(who, row('Domain.BackupBegin(push, vda, a new target)'))
        if job:
            try:
                h.call(job, J, 'Abort', (0,), 't')
            except q.DBusCallError as e:    # a small disk may be copied already
                self.assertEqual(e.name, q.ERROR_PREFIX + 'OperationInvalid', str(e))
            wait_state(h, job, 'completed', 'canceled')
        # A pull runs until its Abort: the read sees a backup whatever the timing.
        pull = h.call(dom.path, D, 'BackupBegin', (PULL_BACKUP_XML, '', 0), 'sst')
        row('Domain.BackupGetXMLDesc(a backup runs)')
        h.call(pull, J, 'Abort', (0,), 't')
        job = self.object_path(who, row('Domain.BlockCommit(vda, a backing file)'))
        if job:
            wait_state(h, job, 'completed')
        job = self.object_path(who, row('Domain.BlockRebase(vda, COPY)'))
        if job:
            wait_state(h, job, 'ready')
            row('BlockJob1.Abort(0)', path=job)
        job = self.object_path(who, row('Domain.BlockCopy(vda, a new qcow2)'))
        if job:
            wait_state(h, job, 'ready')
            h.call(job, J, 'Abort', (0,), 't')
        job = self.object_path(who, row('Domain.BlockPull(vda)'))
        if job:
            wait_state(h, job, 'completed')
        k2 = self.object_path(who, row('Domain.CreateCheckpoint(0)'))
        row('Checkpoint.Delete(METADATA_ONLY)')
        if k2:    # Undefine below drops snapshot metadata only
            h.call(k2, K, 'Delete', (METADATA_ONLY,), 't')
        c = self.object_path(who, row('Domain.CreateSnapshot(DISK_ONLY)'))
        row('Snapshot.Revert(FORCE)')
        row('Snapshot.Delete(METADATA_ONLY)', path=c or dom.s1)
        row('Domain.Start(0)')
        row('Domain.Stop(0)')
        row('Domain.Undefine(SNAPSHOTS_METADATA)')

    def test_matrix(self):
        h = self.h
        h.grant(DELEGATED, user=q.TEST_USER, domain='A')
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id.indexOf("org.example.snapshot1.") != 0)\n'
                          '        return polkit.Result.NOT_HANDLED;\n'
                          '    if (subject.user == "daemon")\n'
                          '        return polkit.Result.AUTH_ADMIN;\n'
                          '    if (subject.user == "bin")\n'
                          '        return polkit.Result.NO;\n'
                          '});\n')
        A, B = Domain(h, 'A'), Domain(h, 'B')
        A.start()
        B.start()
        got = {}
        self.refused_columns(B, got)
        self.allowed_column('own', A, got)
        B.start()
        self.allowed_column('root', B, got)
        self.assertEqual(h.call(q.MANAGER_PATH, M, 'ListDomains'), [], 'both Undefine calls went through')
        want = auth_matrix.expected()
        diff = ['%s by %s: got %s, want %s' % (row, who, got.get(row, {}).get(who), want[row][who])
                for row in want for who, _ in auth_matrix.CALLERS
                if got.get(row, {}).get(who) != want[row][who]]
        self.assertEqual(diff, [], 'the authorization matrix differs from tests/auth_matrix.py')
        self.assertEqual(set(got), set(want), 'rows called that tests/auth_matrix.py does not list')


if __name__ == '__main__':
    q.main()
