#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the manual page org.example.Snapshot1(5), the D-Bus API of qsnapd,
from interfaces/*.xml: every interface with its comment, and every method,
signal and property with its signature and its own comment (flags, errors).
Generated at build time, so the page cannot drift from the interfaces.

    gen-bus-man.py VERSION OUTPUT INTERFACE.xml...
"""

import re
import sys
import xml.etree.ElementTree as ET

EMITS = 'org.freedesktop.DBus.Property.EmitsChangedSignal'


def roff(text):
    """Plain text for roff: backslashes escaped, no line starting with a
    control character."""
    text = text.replace('\\', '\\e')
    out = []
    for line in text.split('\n'):
        if line.startswith(('.', "'")):
            line = '\\&' + line
        out.append(line)
    return '\n'.join(out)


def comment_block(text, name=None):
    """A doc comment as roff: lines dedented; indented continuation lines
    and lists kept as they are written (no filling). A comment that starts
    with the member's name ("Start: ...") loses that name."""
    lines = text.strip('\n').split('\n')
    indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    lines = [l[indent:].rstrip() for l in lines]
    if name and lines and lines[0].startswith(name + ':'):
        lines[0] = lines[0][len(name) + 1:].lstrip()
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    body = []
    for l in lines:
        body.append(roff(l) if l else '.sp')
    return '.nf\n' + '\n'.join(body) + '\n.fi\n'


def parse(path):
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.parse(path, parser).getroot()
    return root


def preamble(path):
    """The file's first comment (before <node>): what the interface is."""
    with open(path) as f:
        text = f.read()
    m = re.search(r'<!--(.*?)-->', text[:text.index('<node')], re.S)
    if not m:
        return ''
    body = m.group(1)
    body = re.sub(r'^\s*SPDX-License-Identifier:.*$', '', body, flags=re.M)
    return body


def signature(args):
    return ', '.join('%s %s' % (a.get('type'), a.get('name')) for a in args)


def main():
    version, output, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    out = ['.\\" Generated from interfaces/*.xml by tools/gen-bus-man.py; do not edit.',
           '.TH ORG.EXAMPLE.SNAPSHOT1 5 "" "qsnapd %s" "File Formats and Conventions"' % version,
           '.SH NAME',
           'org.example.Snapshot1 \\- the D\\-Bus API of qsnapd',
           '.SH DESCRIPTION',
           'qsnapd(8) owns the bus name',
           '.B org.example.Snapshot1',
           'on the system bus (or the session bus with \\fB\\-\\-user\\fR). Its objects and interfaces follow;',
           'each section is generated from the introspection XML installed in',
           '.IR /usr/share/dbus\\-1/interfaces ,',
           'which is exactly what the running daemon introspects.',
           'Errors are',
           '.BI org.example.Snapshot1.Error. Name',
           'unless written in full; flags are libvirt\'s values.',
           'qsnapctl(1) is the command line that drives this API.']
    order = ['Manager', 'Domain', 'Snapshot', 'Checkpoint', 'BlockJob1']
    rank = lambda p: next((i for i, k in enumerate(order) if p.endswith('.%s.xml' % k)), len(order))
    for path in sorted(files, key=lambda p: (rank(p), p)):
        root = parse(path)
        for iface in root.findall('interface'):
            name = iface.get('name')
            out += ['.SH INTERFACE %s' % name, comment_block(preamble(path))]
            sections = {'method': [], 'signal': [], 'property': []}
            pending = None
            for child in iface:
                if child.tag is ET.Comment:
                    pending = child.text
                    continue
                if child.tag in sections:
                    sections[child.tag].append((child, pending or ''))
                pending = None
            for kind, title in (('method', 'Methods'), ('signal', 'Signals'), ('property', 'Properties')):
                if not sections[kind]:
                    continue
                out.append('.SS %s' % title)
                for el, doc in sections[kind]:
                    if kind == 'method':
                        ins = [a for a in el.findall('arg') if a.get('direction', 'in') == 'in']
                        outs = [a for a in el.findall('arg') if a.get('direction') == 'out']
                        head = '\\fB%s\\fR(%s)%s' % (el.get('name'), roff(signature(ins)),
                                                     (' \\(-> %s' % roff(signature(outs))) if outs else '')
                    elif kind == 'signal':
                        head = '\\fB%s\\fR(%s)' % (el.get('name'), roff(signature(el.findall('arg'))))
                    else:
                        const = any(a.get('name') == EMITS and a.get('value') == 'const'
                                    for a in el.findall('annotation'))
                        head = '\\fB%s\\fR %s, %s%s' % (el.get('name'), el.get('type'), el.get('access'),
                                                       ', constant' if const else '')
                    out += ['.TP', head]
                    out.append(comment_block(doc, el.get('name')) if doc.strip() else '(no description)')
    out += ['.SH SEE ALSO',
            '.BR qsnapctl (1),',
            '.BR qsnapd (8),',
            '.BR busctl (1),',
            '.BR polkit (8)']
    with open(output, 'w') as f:
        f.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
