#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Static check of the layers of daemon/ (issue #9; no build, no root).

The folders of daemon/ are layers, lowest first:

    util < store < qemu < core < ops < bus < main.c

Every `#include "…"` of a daemon file is folder-qualified from daemon/
("core/domain.h"; "config.h" is the build's) and names a file of the same
layer or a lower one. A file of ops/ includes no other operation's header
(operations stand side by side; an op header is for bus/ and main.c). An
operation is ops/<op>.c and ops/<op>.h, or, split in parts, the files of
the folder ops/<op>/, whose headers are private to it.
<systemd/sd-bus.h> is included in bus/ and main.c only. Test and bench
sources include daemon headers the same way. Each violation fails with the
file and line.

One QEMU job driver: qemu/job.c (with its parts qemu/job-adopt.c,
job-control.c, job-progress.c and job-internal.h) is the only code that
reads QEMU's job states. Outside it (and qemu/qmp-commands.[ch], which
build the commands and parse the replies for it), no C string literal names job-state
vocabulary (query-jobs, query-block-jobs, JOB_STATUS_CHANGE, BLOCK_JOB_*,
"concluded", job-dismiss, job-finalize, job-complete, job-cancel,
block-job-cancel) and no code calls the QMP helpers that read or steer a
job (qmp_cmd_query_jobs, qmp_cmd_query_block_jobs, qmp_cmd_job_*,
qmp_cmd_block_job_*, qmp_parse_query_jobs*, qmp_parse_query_block_jobs,
qmp_parse_job_status_change, qmp_parse_block_job_event) or uses their
reply types (QmpJobInfo, QmpBlockJobInfo, QmpBlockJobEvent). Comments do
not count, nor the names of crash and kill points. Starting a job
(block-commit, snapshot-save, …) is an operation's business: allowed.

Function and file lengths are held to the limits below in the folders
(and main.c) named in ENFORCE_SIZES: every one now (issue #9); a folder left
out would have its offenders printed only.
The checker is run on a small made-up tree first, so it is known to catch
each kind of violation.
"""

import os
import re
import sys
import tempfile
import unittest

LAYERS = ('util', 'store', 'qemu', 'core', 'ops', 'bus')
TOP = 'main.c'  # above every folder
MAX_FUNCTION_LINES = 120
MAX_FILE_LINES = 1200
ENFORCE_SIZES = LAYERS + (TOP,)

# The one QEMU job driver (qemu/job.c and the files it is split into, joined
# by qemu/job-internal.h) and the command layer under it.
JOB_DRIVER_FILES = ('qemu/job.c', 'qemu/job-adopt.c', 'qemu/job-control.c', 'qemu/job-progress.c',
                    'qemu/job-internal.h', 'qemu/qmp-commands.c', 'qemu/qmp-commands.h')
JOB_STATE_WORDS = ('query-jobs', 'query-block-jobs', 'JOB_STATUS_CHANGE', 'BLOCK_JOB_', 'concluded', 'job-dismiss',
                   'job-finalize', 'job-complete', 'job-cancel', 'block-job-cancel')
JOB_STATE_CODE = re.compile(r'\b(qmp_cmd_query_jobs|qmp_cmd_query_block_jobs|qmp_cmd_job_\w+|qmp_cmd_block_job_\w+|'
                            r'qmp_parse_query_jobs\w*|qmp_parse_query_block_jobs|qmp_parse_job_status_change|'
                            r'qmp_parse_block_job_event|QmpJobInfo|QmpBlockJobInfo|QmpBlockJobEvent)\b')
STRING_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
POINT_NAME = re.compile(r'\b(?:crash_point|kill_point|operation_crash_point)\s*\([^;]*')

QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SD_BUS_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](systemd/)?sd-bus[^>"]*\.h[>"]')


def source_root():
    return os.environ.get('QSNAPD_SOURCE_ROOT') or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rank(rel):
    """The layer of a path relative to daemon/: 0 for util/… up to
    len(LAYERS) for main.c; None when it is in no layer."""
    if rel == TOP:
        return len(LAYERS)
    head = rel.split('/', 1)[0]
    if '/' in rel and head in LAYERS:
        return LAYERS.index(head)
    return None


def layer_name(r):
    return TOP if r == len(LAYERS) else LAYERS[r]


def sources(folder):
    """*.c and *.h below folder, as paths relative to it, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(('.c', '.h')):
                found.append(os.path.relpath(os.path.join(dirpath, f), folder))
    return found


def read_lines(path):
    with open(path, encoding='utf-8') as f:
        return f.read().split('\n')


def operation_of(rel):
    """The operation an ops/ path belongs to: ops/<op>.c and ops/<op>.h, or
    any file of the folder ops/<op>/ (an operation split in parts); None
    outside ops/."""
    parts = rel.split('/')
    if len(parts) < 2 or parts[0] != 'ops':
        return None
    return os.path.splitext(parts[1])[0]


def is_private(rel):
    """A header inside an operation's own folder: for that operation only."""
    parts = rel.split('/')
    return len(parts) > 2 and parts[0] == 'ops'


def check_daemon(root):
    """Every layering problem of root/daemon, as 'daemon/<file>:<line>: why'."""
    daemon = os.path.join(root, 'daemon')
    problems = []
    for rel in sources(daemon):
        here = rank(rel)
        where = 'daemon/' + rel
        if here is None:
            problems.append('%s:1: not in a layer folder (%s) nor daemon/%s' % (where, ', '.join(LAYERS), TOP))
            continue
        for n, line in enumerate(read_lines(os.path.join(daemon, rel)), 1):
            if SD_BUS_INCLUDE.match(line) and here < LAYERS.index('bus'):
                problems.append('%s:%d: includes sd-bus.h below bus/ (%s)' % (where, n, layer_name(here)))
            m = QUOTED_INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            if target == 'config.h':
                continue
            there = rank(target)
            if there is None or there == len(LAYERS) or not os.path.isfile(os.path.join(daemon, target)):
                problems.append('%s:%d: includes "%s", which is not a folder-qualified daemon header '
                                '(e.g. "core/domain.h")' % (where, n, target))
                continue
            if there > here:
                problems.append('%s:%d: includes "%s", a higher layer (%s above %s)'
                                % (where, n, target, layer_name(there), layer_name(here)))
            elif here == there == LAYERS.index('ops'):
                if operation_of(rel) != operation_of(target):
                    problems.append('%s:%d: includes "%s", another operation\'s header (operations stand side '
                                    'by side; shared services belong in core/)' % (where, n, target))
            if there == LAYERS.index('ops') and is_private(target) and operation_of(rel) != operation_of(target):
                problems.append('%s:%d: includes "%s", the private header of operation %s (its public header is '
                                'ops/%s.h)' % (where, n, target, operation_of(target), operation_of(target)))
    return problems


def strip_comments(text):
    """C comments blanked out (newlines kept, so line numbers hold)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif text[i] in '"\'':
            quote, j = text[i], i + 1
            while j < n and text[j] != quote and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def check_job_driver(root):
    """Every reading of QEMU job states outside the job driver, as
    'daemon/<file>:<line>: why'."""
    daemon = os.path.join(root, 'daemon')
    problems = []
    for rel in sources(daemon):
        if rel in JOB_DRIVER_FILES:
            continue
        with open(os.path.join(daemon, rel), encoding='utf-8') as f:
            code = strip_comments(f.read())
        for n, line in enumerate(code.split('\n'), 1):
            line = POINT_NAME.sub('', line)
            for m in JOB_STATE_CODE.finditer(line):
                problems.append('daemon/%s:%d: uses %s: only the job driver (qemu/job*.c) reads QEMU job states'
                                % (rel, n, m.group(1)))
            for lit in STRING_LITERAL.finditer(line):
                for w in JOB_STATE_WORDS:
                    if w in lit.group(1):
                        problems.append('daemon/%s:%d: names "%s": only the job driver (qemu/job.c) reads QEMU job '
                                        'states' % (rel, n, w))
    return problems


def check_users(root, folder):
    """Includes of test or bench sources: a header beside them, or a
    folder-qualified daemon header."""
    base = os.path.join(root, folder)
    daemon = os.path.join(root, 'daemon')
    problems = []
    for rel in sources(base):
        for n, line in enumerate(read_lines(os.path.join(base, rel)), 1):
            m = QUOTED_INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            beside = os.path.isfile(os.path.join(base, os.path.dirname(rel), target))
            in_daemon = rank(target) not in (None, len(LAYERS)) and os.path.isfile(os.path.join(daemon, target))
            if not beside and not in_daemon and target != 'config.h':
                problems.append('%s/%s:%d: includes "%s", neither a header beside it nor a folder-qualified '
                                'daemon header' % (folder, rel, n, target))
    return problems


def functions(lines):
    """(name, first line, number of lines) of each function defined in a C
    file written in the project's style: the signature starts in column 0
    and ends with '{', the body ends with '}' alone in column 0."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not re.match(r'[A-Za-z_]', line) or re.match(r'(typedef|struct|enum|union)\b', line):
            i += 1
            continue
        j, sig = i, line.rstrip()
        while (sig.endswith(',') or sig.endswith('(')) and j + 1 < len(lines):
            j += 1
            sig += ' ' + lines[j].strip()
        name = re.search(r'(\w+)\s*\(', sig)
        if not sig.endswith('{') or not name or '=' in sig[:name.start()]:
            i = j + 1
            continue
        k = j + 1
        while k < len(lines) and lines[k].rstrip() != '}':
            k += 1
        yield name.group(1), i + 1, k - i + 1
        i = k + 1


def size_offenders(root):
    """Files over MAX_FILE_LINES and functions over MAX_FUNCTION_LINES."""
    daemon = os.path.join(root, 'daemon')
    found = []
    for rel in sources(daemon):
        lines = read_lines(os.path.join(daemon, rel))
        n_lines = len(lines) - (1 if lines and lines[-1] == '' else 0)
        if n_lines > MAX_FILE_LINES:
            found.append('daemon/%s: %d lines (limit %d)' % (rel, n_lines, MAX_FILE_LINES))
        for name, first, length in functions(lines):
            if length > MAX_FUNCTION_LINES:
                found.append('daemon/%s:%d: %s() has %d lines (limit %d)'
                             % (rel, first, name, length, MAX_FUNCTION_LINES))
    return found


def enforced(found):
    """The offenders (as size_offenders() words them) in ENFORCE_SIZES folders
    (or main.c)."""
    return [f for f in found if f.split('/')[1].split(':')[0] in ENFORCE_SIZES]


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


class CheckerTest(unittest.TestCase):
    """The checker on a made-up tree: each rule must catch its case."""

    def test_catches_each_rule(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, 'daemon/util/u.h', '#pragma once\n')
            write(root, 'daemon/util/up.c', '#include "util/u.h"\n#include "core/c.h"\n')
            write(root, 'daemon/core/c.h', '#pragma once\n#include "util/u.h"\n')
            write(root, 'daemon/core/bus.c', '#include <systemd/sd-event.h>\n#include <systemd/sd-bus.h>\n')
            write(root, 'daemon/ops/one.h', '#pragma once\n#include "core/c.h"\n')
            write(root, 'daemon/ops/one.c', '#include "config.h"\n#include "ops/one.h"\n#include "ops/two.h"\n')
            write(root, 'daemon/ops/two.h', '#pragma once\n')
            write(root, 'daemon/ops/plain.c', '#include "one.h"\n#include "store/gone.h"\n')
            write(root, 'daemon/ops/one/part.c', '#include "ops/one.h"\n#include "ops/one/internal.h"\n')
            write(root, 'daemon/ops/one/internal.h', '#pragma once\n#include "ops/one.h"\n')
            write(root, 'daemon/ops/two/run.c', '#include "ops/two.h"\n#include "ops/one/internal.h"\n')
            write(root, 'daemon/bus/c.c', '#include "ops/one.h"\n#include "ops/one/internal.h"\n')
            write(root, 'daemon/bus/b.c', '#include <systemd/sd-bus.h>\n#include "ops/one.h"\n')
            write(root, 'daemon/stray.c', '\n')
            write(root, 'daemon/main.c', '#include <systemd/sd-bus.h>\n#include "bus/b.h"\n#include "ops/two.h"\n')
            write(root, 'daemon/bus/b.h', '#pragma once\n')
            write(root, 'tests/t.c', '#include "test-check.h"\n#include "core/c.h"\n#include "c.h"\n')
            write(root, 'tests/test-check.h', '#pragma once\n')

            got = check_daemon(root)
            expected = [
                'daemon/core/bus.c:2: includes sd-bus.h below bus/ (core)',
                'daemon/ops/one.c:3: includes "ops/two.h", another operation\'s header',
                'daemon/ops/plain.c:1: includes "one.h", which is not a folder-qualified daemon header',
                'daemon/ops/plain.c:2: includes "store/gone.h", which is not a folder-qualified daemon header',
                'daemon/stray.c:1: not in a layer folder',
                'daemon/util/up.c:2: includes "core/c.h", a higher layer (core above util)',
                'daemon/ops/two/run.c:2: includes "ops/one/internal.h", another operation\'s header',
                'daemon/ops/two/run.c:2: includes "ops/one/internal.h", the private header of operation one',
                'daemon/bus/c.c:2: includes "ops/one/internal.h", the private header of operation one',
            ]
            self.assertEqual(len(got), len(expected), '\n'.join(got))
            for e in expected:
                self.assertTrue(any(p.startswith(e) for p in got), 'missing: %s\ngot:\n%s' % (e, '\n'.join(got)))

            got = check_users(root, 'tests')
            self.assertEqual(len(got), 1, got)
            self.assertTrue(got[0].startswith('tests/t.c:3: includes "c.h"'), got)

    def test_catches_job_state_readers(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, 'daemon/qemu/job.c', 'x = qmp_cmd_query_jobs(q); s = "concluded"; qmp_cmd_job_dismiss(q);\n')
            write(root, 'daemon/qemu/qmp-commands.c', 'qmp_send(q, "query-jobs", NULL); qmp_send(q, "job-dismiss");\n')
            write(root, 'daemon/ops/op.c', '\n'.join([
                '/* query-jobs in a comment, "concluded" too */',
                'kill_point("job-finalize", pid); crash_point("x:job-dismiss");',
                'operation_crash_point(o, "concluded");',
                'qmp_cmd_query_jobs(qmp, cb, op);',
                'if (streq(status, "concluded")) return;',
                'qmp_subscribe(qmp, "JOB_STATUS_CHANGE", cb, op);',
                'QmpJobInfo info; // a comment with qmp_parse_query_jobs',
                'x = "BLOCK_JOB_READY"; qmp_cmd_job_finalize(qmp, id, cb, op);',
                'qmp_send(qmp, "job-dismiss", args, cb, op); qmp_parse_job_status_change(data, &id, &st);',
                'qmp_cmd_block_commit(qmp, id, dev, top, base, NULL, 0, cb, op); /* starting one is fine */',
                'job_finalize(j, true, NULL); job_pivot(j, NULL, NULL, &m); /* the driver\'s API is fine */',
            ]) + '\n')
            write(root, 'daemon/core/c.h', '#define BLOCK_JOB_KIND 1 /* an identifier, no literal */\n')
            got = check_job_driver(root)
            expected = [
                'daemon/ops/op.c:4: uses qmp_cmd_query_jobs',
                'daemon/ops/op.c:5: names "concluded"',
                'daemon/ops/op.c:6: names "JOB_STATUS_CHANGE"',
                'daemon/ops/op.c:7: uses QmpJobInfo',
                'daemon/ops/op.c:8: uses qmp_cmd_job_finalize',
                'daemon/ops/op.c:8: names "BLOCK_JOB_"',
                'daemon/ops/op.c:9: uses qmp_parse_job_status_change',
                'daemon/ops/op.c:9: names "job-dismiss"',
            ]
            self.assertEqual(len(got), len(expected), '\n'.join(got))
            for e in expected:
                self.assertTrue(any(p.startswith(e) for p in got), 'missing: %s\ngot:\n%s' % (e, '\n'.join(got)))

    def test_function_lengths(self):
        text = '\n'.join([
            '#include "util/util.h"',
            'typedef struct A {',
            '        int x;',
            '} A;',
            'static const int table[2] = {',
            '        1, 2,',
            '};',
            'DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);',
            'static int short_one(int a) {',
            '        return a;',
            '}',
            '',
            'int wrapped(int a,',
            '            int b) {',
            '        if (a) {',
            '                return b;',
            '        }',
            '        return 0;',
            '}',
            'static inline void f(void) {',
            '}',
        ])
        self.assertEqual(list(functions(text.split('\n'))),
                         [('short_one', 9, 3), ('wrapped', 13, 7), ('f', 20, 2)])

    def test_size_limits(self):
        long_body = ''.join('        x++;\n' for _ in range(MAX_FUNCTION_LINES))
        with tempfile.TemporaryDirectory() as root:
            write(root, 'daemon/store/big.c', 'static int f(void) {\n' + long_body + '}\n')
            write(root, 'daemon/ops/big.c', 'static int g(void) {\n' + long_body + '}\n')
            write(root, 'daemon/bus/long.c', '\n' * MAX_FILE_LINES + 'int x;\n')
            write(root, 'daemon/util/fine.c', 'static int h(void) {\n        return 0;\n}\n')
            write(root, 'daemon/main.c', 'int main(void) {\n' + long_body + '}\n')
            found = size_offenders(root)
            self.assertEqual(len(found), 4, found)
            self.assertEqual(sorted(enforced(found)),
                             ['daemon/bus/long.c: %d lines (limit %d)' % (MAX_FILE_LINES + 1, MAX_FILE_LINES),
                              'daemon/main.c:1: main() has %d lines (limit %d)'
                              % (MAX_FUNCTION_LINES + 2, MAX_FUNCTION_LINES),
                              'daemon/ops/big.c:1: g() has %d lines (limit %d)'
                              % (MAX_FUNCTION_LINES + 2, MAX_FUNCTION_LINES),
                              'daemon/store/big.c:1: f() has %d lines (limit %d)'
                              % (MAX_FUNCTION_LINES + 2, MAX_FUNCTION_LINES)])


class LayersTest(unittest.TestCase):
    """The real tree."""

    def test_daemon(self):
        daemon = os.path.join(source_root(), 'daemon')
        self.assertTrue(os.path.isfile(os.path.join(daemon, TOP)), 'no daemon/%s under %s (set QSNAPD_SOURCE_ROOT)'
                        % (TOP, source_root()))
        self.assertGreater(len(sources(daemon)), 20)
        problems = check_daemon(source_root())
        self.assertEqual(problems, [], '\n' + '\n'.join(problems))

    def test_one_job_driver(self):
        problems = check_job_driver(source_root())
        self.assertEqual(problems, [], '\n' + '\n'.join(problems))

    def test_tests_and_bench(self):
        problems = check_users(source_root(), 'tests') + check_users(source_root(), 'bench')
        self.assertEqual(problems, [], '\n' + '\n'.join(problems))

    def test_sizes(self):
        found = size_offenders(source_root())
        reported = [f for f in found if f not in enforced(found)]
        if reported:
            print('\nreport only (not in %s): %d over the limits of %d lines per function, %d per file:\n  %s'
                  % ('/, '.join(ENFORCE_SIZES) + '/', len(reported), MAX_FUNCTION_LINES, MAX_FILE_LINES,
                     '\n  '.join(reported)), file=sys.stderr)
        self.assertEqual(enforced(found), [])


if __name__ == '__main__':
    unittest.main(verbosity=2)
