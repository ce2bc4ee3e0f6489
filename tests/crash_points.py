#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The crash points of qsnapd and the tests that inject them.

qsnapd kills itself at crash_point("NAME") when QSNAPD_TEST_CRASH_AT=NAME,
and kills the domain's QEMU at kill_point("NAME", pid) when
QSNAPD_TEST_KILL_QEMU_AT=NAME (daemon/util.c). This script finds every
such call in daemon/**/*.c (recursively: the folders may change) and,
for each name, the tests under tests/*.py that inject it, and writes the
table of docs/reliability.md's "## Crash points" section.

- A call with a string literal names its point. A call with a computed
  name must have a comment "crash points: NAME NAME ..." (or "kill
  points: ...") on one of the five lines above it, listing every name it
  can take; otherwise this script fails. operation_crash_point(o, "STEP")
  (daemon/core/operation.c: the point "<the operation's crash name>:STEP")
  is such a call: its comment names the point in full. "crash points: -"
  marks a call that has no names of its own (the one inside
  operation_crash_point(), whose callers list theirs).
- A test covers a point when a string constant in it is exactly the
  point's name, inside a test_* method, or in a class-level table that a
  test_* method of that class reads (self.TABLE), in a file that injects
  that kind of point (harness crash_at() or QSNAPD_TEST_CRASH_AT;
  QSNAPD_TEST_KILL_QEMU_AT). The harness checks at run time that the
  point was reached (crash_at(): "Crash point NAME reached" in qsnapd's
  log), so a name that does not exist fails the test that injects it.

    tests/crash_points.py            print the section
    tests/crash_points.py --check    exit 1 when a point has no test, a
                                     computed name is not listed, or
                                     docs/reliability.md differs
    tests/crash_points.py --write    rewrite the section in place
"""

import argparse
import ast
import glob
import os
import re
import sys

HEADING = '## Crash points'
KINDS = {
    'crash_point': ('QSNAPD_TEST_CRASH_AT', 'qsnapd killed with SIGKILL', ('crash_at(', 'QSNAPD_TEST_CRASH_AT')),
    'kill_point': ('QSNAPD_TEST_KILL_QEMU_AT', "the domain's QEMU killed", ('QSNAPD_TEST_KILL_QEMU_AT',)),
}
CALL = re.compile(r'\b(operation_crash_point|crash_point|kill_point)\s*\(')
ANNOTATION = re.compile(r'\b(crash|kill) points:')


def strip_comments(text):
    """C comments and string contents blanked out (lengths and newlines
    kept), so that a call inside a comment is not a call."""
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
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text[i] == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == '\\' else 1
            out.append(' ' * (j + 1 - i))
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def daemon_points(root):
    """{name: kind}, and the problems found (computed names not listed)."""
    points, problems = {}, []
    files = sorted(glob.glob(os.path.join(root, 'daemon', '**', '*.c'), recursive=True))
    if not files:
        problems.append('no C files under %s' % os.path.join(root, 'daemon'))
    for path in files:
        with open(path, errors='replace') as f:
            raw = f.read()
        code = strip_comments(raw)
        lines = raw.splitlines()
        rel = os.path.relpath(path, root)
        for m in CALL.finditer(code):
            kind = m.group(1)
            operation = kind == 'operation_crash_point'
            if operation:
                kind = 'crash_point'
            lineno = code.count('\n', 0, m.start()) + 1
            rest = code[m.end():].lstrip()
            # the definitions (util.c, core/operation.c), not calls
            if re.match(r'(const\s+char|Operation\s*\*)\b', rest):
                continue
            literal = re.match(r'"((?:[^"\\]|\\.)*)"\s*[,)]', rest)
            if literal and not operation:
                points[literal.group(1)] = kind
                continue
            listed = []
            window = '\n'.join(lines[max(0, lineno - 6):lineno])
            for a in ANNOTATION.finditer(window):
                if a.group(1) + '_point' != kind:
                    continue
                # the names run to the end of the comment
                end = window.find('*/', a.end())
                text = window[a.end():end if end >= 0 else len(window)]
                listed += [w for w in re.split(r'[\s*/]+', text) if w]
            if listed[:1] == ['-']:
                continue
            if not listed:
                problems.append('%s:%d: %s() with a computed name and no "%s points: NAME ..." comment above it '
                                'listing the names it takes' % (rel, lineno, kind, kind.split('_')[0]))
            for name in listed:
                points[name] = kind
    return points, problems


def _reads_attribute(fn, attr):
    return any(isinstance(n, ast.Attribute) and n.attr == attr for n in ast.walk(fn))


def test_references(root):
    """{string constant: set of (file, test)} over tests/*.py, for the
    constants in test_* methods or in class tables a test_* reads; and
    {file: source text}."""
    refs, sources = {}, {}
    for path in sorted(glob.glob(os.path.join(root, 'tests', '*.py'))):
        rel = os.path.relpath(path, root)
        with open(path) as f:
            sources[rel] = f.read()
        tree = ast.parse(sources[rel], path)
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            tests = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith('test')]
            for item in cls.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith('test'):
                    users = [item]
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names = [t.id for t in targets if isinstance(t, ast.Name)]
                    users = [t for t in tests if any(_reads_attribute(t, a) for a in names)]
                else:
                    continue
                for node in ast.walk(item):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str):
                        for t in users:
                            refs.setdefault(node.value, set()).add((rel, '%s.%s' % (cls.name, t.name)))
    return refs, sources


def coverage(root):
    points, problems = daemon_points(root)
    refs, sources = test_references(root)
    rows = []
    for name in sorted(points):
        kind = points[name]
        env, _, markers = KINDS[kind]
        covering = sorted((f, t) for f, t in refs.get(name, ()) if any(m in sources[f] for m in markers))
        if not covering:
            problems.append('%s point %s has no test: no test_* in tests/*.py injects it (%s)' % (
                kind.split('_')[0], name, env))
        rows.append((name, kind, covering))
    return rows, problems


def section(rows):
    out = [HEADING, '',
           'Every point where a test can stop qsnapd (`crash_point()`: qsnapd kills itself with',
           'SIGKILL when `QSNAPD_TEST_CRASH_AT` names the point) or kill the domain\'s QEMU',
           '(`kill_point()`, `QSNAPD_TEST_KILL_QEMU_AT`), and the tests that inject it. Each',
           'test states the one outcome its point must have (finished or rolled back, and the',
           'log line of the recovery) and checks the state afterwards. Generated by',
           '`tests/crash_points.py --write` from the calls in `daemon/**/*.c`; the `static` test',
           '`crash-points` fails when a point has no test or this table is not what the script',
           'generates.', '',
           '| point | what happens there | tests |',
           '|---|---|---|']
    for name, kind, covering in rows:
        tests = '<br>'.join('`%s` %s' % (f, t) for f, t in covering) or '**none**'
        out.append('| `%s` | %s | %s |' % (name, KINDS[kind][1], tests))
    return '\n'.join(out) + '\n'


def replace_section(doc, new):
    """doc with its "## Crash points" section (up to the next "## " heading)
    replaced by new, or new appended."""
    lines = doc.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip('\n') == HEADING), None)
    if start is None:
        return doc + ('' if doc.endswith('\n\n') or not doc else '\n' if doc.endswith('\n') else '\n\n') + new
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
    tail = lines[end:]
    return ''.join(lines[:start]) + new + ('\n' if tail else '') + ''.join(tail)


def current_section(doc):
    lines = doc.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip('\n') == HEADING), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
    return ''.join(lines[start:end]).rstrip('\n') + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help='the source tree (default: the one holding this script)')
    p.add_argument('--doc', default=None, help='the document (default: ROOT/docs/reliability.md)')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--check', action='store_true')
    g.add_argument('--write', action='store_true')
    args = p.parse_args()
    doc_path = args.doc or os.path.join(args.root, 'docs', 'reliability.md')
    rows, problems = coverage(args.root)
    new = section(rows)
    if args.write:
        doc = open(doc_path).read() if os.path.exists(doc_path) else '# Reliability\n'
        with open(doc_path, 'w') as f:
            f.write(replace_section(doc, new))
    elif args.check:
        doc = open(doc_path).read() if os.path.exists(doc_path) else ''
        have = current_section(doc)
        if have != new:
            problems.append('the "%s" section of %s is not what tests/crash_points.py generates: run '
                            'tests/crash_points.py --write' % (HEADING, os.path.relpath(doc_path, args.root)))
        for problem in problems:
            print('crash_points: ' + problem, file=sys.stderr)
        if not problems:
            print('%d points, each injected by a test; %s is current' % (len(rows), os.path.relpath(doc_path, args.root)))
        return 1 if problems else 0
    else:
        sys.stdout.write(new)
    for problem in problems:
        print('crash_points: ' + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
