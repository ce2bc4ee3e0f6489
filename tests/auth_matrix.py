#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The authorization matrix: every method of interfaces/*.xml, called by
each kind of caller, and what the caller gets. tests/test_auth_matrix.py
makes every call of the table on one harness and fails unless what it got
is EXPECTED below; this script writes the table into docs/reliability.md
("## Authorization matrix") and checks it is current (the `static` test
`auth-matrix-doc`, which also fails when a method of interfaces/ has no row).

    tests/auth_matrix.py            print the section
    tests/auth_matrix.py --check    exit 1 when a method has no row or the section is not current
    tests/auth_matrix.py --write    rewrite the section in place
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import interface_docs  # noqa: E402

HEADING = '## Authorization matrix'

# The callers (columns), in order: key, heading.
CALLERS = [
    ('root', 'root (uid 0)'),
    ('nobody', "nobody (uid 65534): polkit's defaults"),
    ('own', 'qsnaptest, granted for domain A: on A'),
    ('other', 'qsnaptest, granted for domain A: on B'),
    ('ask', 'daemon (uid 1): a rule answers AUTH_ADMIN, no agent'),
    ('no', 'bin (uid 2): a rule answers NO'),
]

OK = 'allowed'
DENIED = 'AccessDenied'
ASK = 'InteractiveAuthorizationRequired'

_READ = {c: OK for c, _ in CALLERS}


def _checked(own=OK, nobody=DENIED, other=DENIED):
    """A polkit-checked call: root is never asked; the rest as polkit says."""
    return {'root': OK, 'nobody': nobody, 'own': own, 'other': other, 'ask': ASK, 'no': DENIED}


# Row: (method 'Interface.Member', the call's arguments as the table shows
# them, {caller: result}). Every method of interfaces/*.xml has a row.
EXPECTED = [
    ('Manager.ListDomains', '', _READ),
    ('Manager.GetDomain', 'name', _READ),
    ('Manager.DefineDomain', 'a redefinition, disks below the image root', _checked()),
    ('Domain.Start', '0', _checked()),
    ('Domain.Stop', '0', _checked()),
    ('Domain.Pause', '', _checked()),
    ('Domain.Resume', '', _checked()),
    ('Domain.Undefine', 'SNAPSHOTS_METADATA', _checked()),
    ('Domain.GetXMLDesc', '0', _READ),
    ('Domain.GetXMLDesc', 'SECURE', _checked()),
    ('Domain.OpenConsole', 'serial0', _checked()),
    ('Domain.OpenGraphicsFD', '0', _checked()),
    # host-admin is not delegated per domain (docs/security.md): its
    # default, auth_admin for everyone, stands.
    ('Domain.QemuMonitorCommand', 'query-status', _checked(own=ASK, nobody=ASK, other=ASK)),
    ('Domain.CreateSnapshot', 'DISK_ONLY', _checked()),
    ('Domain.ListSnapshots', '0', _READ),
    ('Domain.LookupSnapshot', 'name', _READ),
    ('Domain.CreateCheckpoint', '0', _checked()),
    ('Domain.ListCheckpoints', '0', _READ),
    ('Domain.LookupCheckpoint', 'name', _READ),
    ('Domain.BlockPull', 'vda', _checked()),
    ('Domain.BlockRebase', 'vda, COPY', _checked()),
    ('Domain.BlockCommit', 'vda, a backing file', _checked()),
    ('Domain.BlockCopy', 'vda, a new qcow2', _checked()),
    ('Domain.BackupBegin', 'push, vda, a new target', _checked()),
    ('Domain.BackupGetXMLDesc', 'a backup runs', _READ),
    ('Snapshot.GetXMLDesc', '0', _READ),
    ('Snapshot.GetXMLDesc', 'SECURE', _checked()),
    ('Snapshot.ListChildren', '0', _READ),
    ('Snapshot.Delete', 'METADATA_ONLY', _checked()),
    ('Snapshot.CheckDelete', '0', _READ),
    ('Snapshot.Revert', 'FORCE', _checked()),
    ('Snapshot.CheckRevert', 'FORCE', _READ),
    ('Checkpoint.GetXMLDesc', '0', _READ),
    ('Checkpoint.GetXMLDesc', 'SECURE', _checked()),
    ('Checkpoint.ListChildren', '0', _READ),
    ('Checkpoint.Delete', 'METADATA_ONLY', _checked()),
    ('BlockJob1.Abort', '0', _checked()),
    ('BlockJob1.Pivot', '', _checked()),
    ('BlockJob1.SetSpeed', '0', _checked()),
    ('BlockJob1.Pause', '', _checked()),
    ('BlockJob1.Resume', '', _checked()),
]


def row_key(method, args):
    return '%s(%s)' % (method, args)


def expected():
    """{row key: {caller: result}}"""
    return {row_key(m, a): dict(r) for m, a, r in EXPECTED}


def problems(root):
    out = []
    methods = {m.short_key for m in interface_docs.methods(os.path.join(root, 'interfaces')).values()}
    rows = {m for m, _, _ in EXPECTED}
    for m in sorted(methods - rows):
        out.append('%s has no row in tests/auth_matrix.py EXPECTED' % m)
    for m in sorted(rows - methods):
        out.append('tests/auth_matrix.py: %s is no method of interfaces/*.xml' % m)
    for m, a, r in EXPECTED:
        if set(r) != {c for c, _ in CALLERS}:
            out.append('tests/auth_matrix.py: row %s does not name every caller' % row_key(m, a))
    return out


def section():
    short = {OK: 'allowed', DENIED: 'AccessDenied', ASK: 'InteractiveAuthorizationRequired'}
    out = [HEADING, '',
           'Every method, called by each kind of caller, and the answer it got. One test',
           '(`tests/test_auth_matrix.py`) makes every call of this table on one harness,',
           'with the real polkitd, and fails unless it got exactly this; the table is',
           'written by `tests/auth_matrix.py --write` from the same data, and the `static`',
           'test `auth-matrix-doc` fails when it is not current or a method of interfaces/ has',
           'no row. The polkit rules (rules.d): qsnaptest is granted every action except',
           'host-admin for domain A only (`action.lookup("domain") == "A"`); daemon gets',
           '`AUTH_ADMIN` and bin `NO` for every action of ours. "allowed" means the call',
           'went through and did what it does (on A for qsnaptest, else on B): every',
           'refused call is made in the state in which the caller\'s allowed call',
           'succeeds (a running domain for Pause, a paused one for Resume, a READY job',
           'for Pivot, ...), so the answer is polkit\'s, not a state check\'s. A refused',
           'call changes nothing (the test compares the domain\'s properties, jobs and',
           'files before and after each refused column). Methods without polkit answer',
           'every caller; GetXMLDesc needs read-secure only with SECURE.', '',
           '| method (arguments) | ' + ' | '.join(h for _, h in CALLERS) + ' |',
           '|---|' + '---|' * len(CALLERS)]
    for m, a, r in EXPECTED:
        out.append('| %s | ' % ('`%s`' % m + (' (%s)' % a if a else '')) +
                   ' | '.join(short[r[c]] for c, _ in CALLERS) + ' |')
    return '\n'.join(out) + '\n'


def _bounds(lines):
    start = next((i for i, l in enumerate(lines) if l.rstrip('\n') == HEADING), None)
    if start is None:
        return None, None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
    return start, end


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument('--doc', default=None, help='default: ROOT/docs/reliability.md')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--check', action='store_true')
    g.add_argument('--write', action='store_true')
    args = p.parse_args()
    doc_path = args.doc or os.path.join(args.root, 'docs', 'reliability.md')
    found = problems(args.root)
    new = section()
    with open(doc_path) as f:
        lines = f.read().splitlines(keepends=True)
    start, end = _bounds(lines)
    if args.write:
        if start is None:
            text = ''.join(lines).rstrip('\n') + '\n\n' + new
        else:
            tail = lines[end:]
            text = ''.join(lines[:start]) + new + ('\n' if tail else '') + ''.join(tail)
        with open(doc_path, 'w') as f:
            f.write(text)
    elif args.check:
        have = None if start is None else ''.join(lines[start:end]).rstrip('\n') + '\n'
        if have != new:
            found.append('the "%s" section of %s is not what tests/auth_matrix.py generates: run '
                         'tests/auth_matrix.py --write' % (HEADING, os.path.relpath(doc_path, args.root)))
        if not found:
            print('%d rows x %d callers; %s is current' % (len(EXPECTED), len(CALLERS),
                                                           os.path.relpath(doc_path, args.root)))
    else:
        sys.stdout.write(new)
    for problem in found:
        print('auth_matrix: ' + problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
