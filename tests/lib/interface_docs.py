# SPDX-License-Identifier: LGPL-2.1-or-later
"""What interfaces/*.xml promise, read from their doc comments: each
method's documented error names (the "Errors:" list of the comment right
before it) and whether it is checked with polkit.

Used by tests/test_policy_files.py (the docs' shape), tests/errors_matrix.py
(every documented error is provoked by a test) and tests/lib/qsnaptest.py
(every error a test receives is documented). Python stdlib only.

An "Errors:" list is a list of entries, one per line at the list's own
indentation (deeper lines continue the entry before them); an entry starts
with one or more names separated by commas, followed by ":" (the reason),
"," or "." (e.g. "NoSuchDisk, NotRunning, Busy, QemuFailed,"). A bare name
is org.example.Snapshot1.Error.<Name>; org.freedesktop.DBus.Error.<Name>
is written in full. "Errors: none." lists nothing.
"""

import glob
import os
import re
import xml.etree.ElementTree as ET

ERROR_PREFIX = 'org.example.Snapshot1.Error.'
DBUS_ERROR_PREFIX = 'org.freedesktop.DBus.Error.'

_NAME = r'(?:[A-Z][A-Za-z]+|org\.freedesktop\.DBus\.Error\.\w+|org\.example\.Snapshot1\.Error\.\w+)'
_ENTRY = re.compile(r'^(%s(?:\s*,\s*%s)*)\s*(?:[:,.]|$)' % (_NAME, _NAME))


def parse_with_comments(path):
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    return ET.parse(path, parser).getroot()


def full_name(name):
    """'Busy' -> 'org.example.Snapshot1.Error.Busy'; full names unchanged."""
    return name if name.startswith('org.') else ERROR_PREFIX + name


def short_name(name):
    """The name as the matrix and the docs' tables write it: ours without
    the prefix, the standard ones as 'AccessDenied', ... too."""
    for prefix in (ERROR_PREFIX, DBUS_ERROR_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def short_interface(interface):
    """'org.example.Snapshot1.Domain' -> 'Domain', 'org.example.BlockJob1'
    -> 'BlockJob1': how the matrix names methods ('Domain.Start')."""
    return interface.rsplit('.', 1)[-1]


def error_names(comment):
    """The full error names a doc comment lists after "Errors:", in the
    order written; None when it has no "Errors:" list."""
    parsed = parse_error_list(comment)
    return None if parsed is None else parsed[0]


def parse_error_list(comment):
    """(names, entries that name no error) of a doc comment's "Errors:"
    list, or None without one."""
    _, sep, tail = comment.partition('Errors:')
    if not sep:
        return None
    lines = tail.split('\n')
    entries = [lines[0].strip()]
    rest = [line for line in lines[1:] if line.strip()]
    if rest:
        indent = min(len(line) - len(line.lstrip()) for line in rest)
        entries += [line.strip() for line in rest if len(line) - len(line.lstrip()) == indent]
    names, unparsed = [], []
    for entry in entries:
        m = _ENTRY.match(entry)
        if not m:
            if entry and entry.rstrip('.') != 'none':
                unparsed.append(entry)
            continue
        for name in re.split(r'\s*,\s*', m.group(1)):
            name = full_name(name)
            if name not in names:
                names.append(name)
    return names, unparsed


class Method:
    def __init__(self, interface, name, doc, path):
        self.interface = interface
        self.name = name
        self.doc = doc or ''
        self.file = path
        errors = error_names(self.doc)
        self.has_error_list = errors is not None
        self.errors = errors or []

    @property
    def short_key(self):
        """'Domain.Start'"""
        return '%s.%s' % (short_interface(self.interface), self.name)

    @property
    def key(self):
        """'org.example.Snapshot1.Domain.Start'"""
        return '%s.%s' % (self.interface, self.name)

    @property
    def polkit(self):
        """Checked with polkit (sometimes, e.g. GetXMLDesc with SECURE): its
        doc lists AccessDenied."""
        return DBUS_ERROR_PREFIX + 'AccessDenied' in self.errors


def interface_dir():
    root = os.environ.get('QSNAPD_SOURCE_ROOT') or \
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, 'interfaces')


def methods(directory=None):
    """{'iface.Method': Method} for every method of interfaces/*.xml, in
    file order."""
    out = {}
    for path in sorted(glob.glob(os.path.join(directory or interface_dir(), '*.xml'))):
        for iface in parse_with_comments(path).findall('interface'):
            previous = None
            for el in iface:
                if el.tag == 'method':
                    doc = previous.text if previous is not None and previous.tag is ET.Comment else ''
                    m = Method(iface.get('name'), el.get('name'), doc, path)
                    out[m.key] = m
                previous = el
    return out


_cache = {}


def documented(interface, method):
    """The documented full error names of interface.method (a set), or None
    when interfaces/ has no such method (an interface without its XML)."""
    if 'methods' not in _cache:
        _cache['methods'] = methods()
    m = _cache['methods'].get('%s.%s' % (interface, method))
    return None if m is None else set(m.errors)
