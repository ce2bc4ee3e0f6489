#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bad and odd input (DESIGN.md sections 2, 3, 4, 5 and 7), all as root.

- DefineDomain of malformed XML (tag mismatch, truncated, not XML, an
  unescaped '&', DTD/entity documents) or of an invalid definition (wrong
  root, no or empty name, bad memory, bad UUID, relative paths, duplicate
  targets, …) and of a 5 MiB document: InvalidXML whose message names the
  line, and nothing stored: the domains folder, Domains and ListDomains
  unchanged, no signal.
- Odd names (spaces, unicode, '/', '..', 300 characters, names that differ
  only in case, quotes, '&', '<>', ',', control characters): defined,
  valid object paths that decode back (GetDomain, Name), GetXMLDesc
  round-trips the name, files named by UUID, the same paths after a
  daemon restart; one such domain starts and stops.
- Unknown flag bits for every method taking flags: InvalidArgument and
  nothing changed (even with a known bit set alongside).
- Lookups: GetDomain of unknown names: NoSuchDomain; calls on the path of
  an undefined domain: org.freedesktop.DBus.Error.UnknownObject.
- UUID clashes: AlreadyExists; a redefinition without <uuid> keeps the
  UUID and the object path.
- Lifecycle calls in the wrong state: OperationInvalid / NotRunning, with
  a message that names the domain; no-op Pause/Resume succeed silently.
- QemuMonitorCommand with bad JSON: InvalidArgument.
- Start with a missing image: QemuFailed carrying QEMU's own text, State
  stays shutoff, no runtime files and no QEMU left.
"""

import os
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import qsnaptest as q

D = q.DOMAIN_IFACE
M = q.MANAGER_IFACE
MP = q.MANAGER_PATH
INVALID_XML = q.ERROR_PREFIX + 'InvalidXML'
INVALID_ARGUMENT = q.ERROR_PREFIX + 'InvalidArgument'
ALREADY_EXISTS = q.ERROR_PREFIX + 'AlreadyExists'
NO_SUCH_DOMAIN = q.ERROR_PREFIX + 'NoSuchDomain'
NOT_RUNNING = q.ERROR_PREFIX + 'NotRunning'
OPERATION_INVALID = q.ERROR_PREFIX + 'OperationInvalid'
QEMU_FAILED = q.ERROR_PREFIX + 'QemuFailed'
UNKNOWN_OBJECT = 'org.freedesktop.DBus.Error.UnknownObject'


def fixture(name):
    with open(q.source_path('tests', 'fixtures', 'domain', name)) as f:
        return f.read()


def line_of(text, needle):
    """The 1-based line of the first occurrence of needle in text."""
    i = text.index(needle)
    return text.count('\n', 0, i) + 1


def read_dir(path, content=True):
    result = {}
    if not os.path.isdir(path):
        return result
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if content and os.path.isfile(full):
            with open(full, 'rb') as f:
                result[name] = f.read()
        else:
            result[name] = os.lstat(full).st_size
    return result


def qemu_pids(h):
    return sorted(p for p in q._pids_mentioning(h.root)
                  if 'qemu-system' in (q._proc_cmdline(p) or '').split(' ')[0])


def observe(h):
    """Everything a refused call must leave as it was."""
    domains = h.call(MP, M, 'ListDomains')
    return {
        'ListDomains': domains,
        'Domains': h.get_property(MP, M, 'Domains'),
        'properties': {p: h.get_all(p, D) for p in domains},
        'stored definitions': read_dir(os.path.join(h.state_dir, 'domains')),
        'runtime files': read_dir(h.runtime_dir, content=False),
        'QEMU logs': read_dir(os.path.join(h.state_dir, 'log'), content=False),
        'QEMU processes': qemu_pids(h),
    }


class BadInputTestCase(q.QsnapTestCase):
    maxDiff = None

    def define_xml(self, xml, flags=0):
        return self.h.call(MP, M, 'DefineDomain', (xml, flags), 'st', timeout=60)

    def state(self, path):
        return self.h.get_property(path, D, 'State')

    def uuid(self, path):
        return self.h.get_property(path, D, 'UUID')

    def define(self, name, **kw):
        img = self.h.create_image('%d.qcow2' % len(os.listdir(self.h.images_dir)))
        return self.h.define_domain(name, [q.Disk('vda', img)], **kw)

    def assertRefused(self, error, fn, *args, **kw):
        """fn(*args) fails with error and changes nothing; the message."""
        h = self.h
        before = observe(h)
        rec = h.record_signals()
        try:
            with self.assertDBusError(error) as caught:
                fn(*args, **kw)
            self.assertEqual(observe(h), before, 'state changed after a refused call')
            h.barrier(*before['ListDomains'])
            self.assertEqual(rec.records, [], 'signals were sent after a refused call')
        finally:
            rec.close()
        return caught.exception.message


class MalformedXMLTest(BadInputTestCase):
    def test_malformed_documents_name_the_line(self):
        h = self.h
        existing = self.define('existing')
        img = h.create_image('m.qcow2')
        good = q.domain_xml('m', [q.Disk('vda', img)])
        self.define_xml(good.replace('<name>m<', '<name>control<'))    # the helper's XML itself is fine
        vcpu_broken = good.replace('<vcpu>1</vcpu>', '<vcpu>1</vcpux>')
        amp = good.replace('<name>m</name>', '<name>a & b</name>')
        unclosed = good.replace('  </devices>\n', '')
        cases = {
            'tag mismatch (fixture)': (fixture('malformed-tag-mismatch.xml'), 4),
            'truncated (fixture)': (fixture('malformed-truncated.xml'), 3),
            'truncated in the middle': (good[:good.index('<source')] + '<sou', line_of(good, '<source')),
            'not XML': ('this is not XML at all\n', 1),
            'tag mismatch': (vcpu_broken, line_of(vcpu_broken, '</vcpux>')),
            'unescaped ampersand': (amp, line_of(amp, 'a & b')),
            'unclosed element': (unclosed, unclosed.count('\n')),
            'two roots': (good + good, line_of(good + good, '<domain') + good.count('\n')),
            'billion laughs (fixture)': (fixture('billion-laughs.xml'), None),
            'external entity (fixture)': (fixture('xxe.xml'), None),
        }
        for what, (xml, line) in cases.items():
            with self.subTest(what):
                message = self.assertRefused(INVALID_XML, self.define_xml, xml)
                m = re.search(r'\bline (\d+)', message)
                self.assertTrue(m, 'the message does not name the line: %r' % message)
                if line is not None:
                    self.assertEqual(int(m.group(1)), line, message)
        self.assertEqual(self.state(existing), 'shutoff')

    def test_invalid_definitions(self):
        h = self.h
        self.define('existing')
        img = h.create_image('i.qcow2')
        good = q.domain_xml('i', [q.Disk('vda', img)])
        two = q.domain_xml('i', [q.Disk('vda', img), q.Disk('vda', h.create_image('i2.qcow2'))])

        def bad(old, new, at=None, base=good):
            """base with old replaced by new; the line of at (or of new)."""
            self.assertIn(old, base)
            text = base.replace(old, new, 1)
            return text, line_of(text, at or new) if (at or new.strip()) else None
        cases = {
            'wrong root': ('<dom><name>x</name></dom>', 1),
            'missing name': bad('  <name>i</name>\n', ''),
            'empty name': bad('<name>i</name>', '<name></name>'),
            'blank name': bad('<name>i</name>', '<name>   </name>'),
            'two names': bad('<name>i</name>', '<name>i</name>\n  <name>j</name>', at='<name>j'),
            'memory not a number': bad("<memory unit='MiB'>128</memory>", "<memory unit='MiB'>lots</memory>"),
            'memory zero': bad("<memory unit='MiB'>128</memory>", "<memory unit='MiB'>0</memory>"),
            'memory unit unknown': bad("<memory unit='MiB'>128</memory>", "<memory unit='parsecs'>128</memory>"),
            'memory negative': bad("<memory unit='MiB'>128</memory>", "<memory unit='MiB'>-1</memory>"),
            'bad uuid': bad('<name>i</name>', '<name>i</name>\n  <uuid>not-a-uuid</uuid>', at='<uuid>'),
            'short uuid': bad('<name>i</name>', '<name>i</name>\n  <uuid>1234</uuid>', at='<uuid>'),
            'relative disk path': bad('<source file=%s/>' % quoteattr(img), "<source file='images/i.qcow2'/>"),
            'empty disk path': bad('<source file=%s/>' % quoteattr(img), "<source file=''/>"),
            'disk without source': (good.replace('<source file=%s/>' % quoteattr(img), ''), line_of(good, '<disk')),
            # Reported at the second <disk>.
            'duplicate target': (two, two.count('\n', 0, two.index('<disk', two.index('<disk') + 1)) + 1),
            'relative emulator': bad('<emulator>%s</emulator>' % q.QEMU_SYSTEM,
                                     '<emulator>qemu-system-x86_64</emulator>'),
            'unsupported domain type': bad('<domain type=%s' % quoteattr('kvm' if q.kvm_works() else 'qemu'),
                                           "<domain type='xen'"),
            'bad target dev': bad('<target dev=%s' % quoteattr('vda'), "<target dev='VDA!'"),
            'unknown disk format': bad('type=%s/>' % quoteattr('qcow2'), "type='vmdk-ish'/>"),
        }
        for what, (xml, line) in cases.items():
            with self.subTest(what):
                message = self.assertRefused(INVALID_XML, self.define_xml, xml)
                self.assertRegex(message, r'\bline \d+')
                if line is not None:
                    self.assertIn('line %d' % line, message)
        # The duplicate target names both lines.
        message = self.assertRefused(INVALID_XML, self.define_xml, two)
        self.assertIn("'vda'", message)

    def test_five_mib_document(self):
        h = self.h
        self.define('existing')
        xml = q.domain_xml('huge', description='x' * (5 << 20))
        message = self.assertRefused(INVALID_XML, self.define_xml, xml)
        self.assertIn('limit', message)
        self.assertEqual(self.h.call(MP, M, 'ListDomains'), [h.domain_path('existing')])


class OddNamesTest(BadInputTestCase):
    NAMES = [
        'vm with spaces',
        'vm ünïcødé ☃',
        'a/b',
        '/',
        '_2f',          # what '/' is escaped to: must not collide with it
        '..',
        '.',
        'x' * 300,
        'Case', 'case', 'CASE',
        'q"u\'o&t<e>s',
        'a,b,,c',
        ' padded ',
        'tab\there',
        'line\nbreak',
        '名前 🎉',
        '-leading-dash',
    ]

    def check_name(self, name, path):
        h = self.h
        self.assertTrue(q.GLib.Variant.is_object_path(path), path)
        self.assertTrue(path.startswith('/org/example/Snapshot1/domain/'), path)
        self.assertEqual(path.count('/'), 5, 'the name must be one path element: %s' % path)
        self.assertEqual(h.domain_path(name), path)
        self.assertEqual(h.get_property(path, D, 'Name'), name)
        for flags in (0, 2):
            root = ET.fromstring(h.call(path, D, 'GetXMLDesc', (flags,), 't'))
            self.assertEqual(root.findtext('name'), name)

    def test_odd_names(self):
        h = self.h
        rec = h.record_signals()
        paths = {}
        for name in self.NAMES:
            with self.subTest(name=name[:40]):
                paths[name] = self.define_xml(q.domain_xml(name))
                self.check_name(name, paths[name])
        self.assertEqual(len(set(paths.values())), len(self.NAMES), 'two names share an object path')
        listed = h.call(MP, M, 'ListDomains')
        self.assertEqual(sorted(listed), sorted(paths.values()))
        objects = h.client.managed_objects()
        self.assertEqual({objects[p][D]['Name'] for p in listed}, set(self.NAMES))
        rec.wait_for(lambda s: s.member == 'InterfacesAdded' and s.args[0] == paths[self.NAMES[-1]])
        added = [s.args[0] for s in rec.records if s.member == 'InterfacesAdded']
        self.assertEqual(sorted(added), sorted(paths.values()))
        rec.close()

        # Files are named by UUID, whatever the name.
        uuids = {name: self.uuid(p) for name, p in paths.items()}
        self.assertEqual(sorted(os.listdir(os.path.join(h.state_dir, 'domains'))),
                         sorted(u + '.xml' for u in uuids.values()))

        h.restart_daemon()
        self.assertEqual(sorted(h.call(MP, M, 'ListDomains')), sorted(paths.values()))
        for name in self.NAMES:
            with self.subTest(name=name[:40], after='restart'):
                self.check_name(name, paths[name])
                self.assertEqual(self.uuid(paths[name]), uuids[name])

        # Undefine removes exactly its own file.
        h.call(paths['/'], D, 'Undefine', (0,), 't')
        self.assertNotIn(uuids['/'] + '.xml', os.listdir(os.path.join(h.state_dir, 'domains')))
        self.assertEqual(h.domain_path('_2f'), paths['_2f'])
        with self.assertDBusError(NO_SUCH_DOMAIN):
            h.domain_path('/')

    def test_odd_name_starts(self):
        # The name goes into QEMU's -name option: ',' and quotes must not break it.
        h = self.h
        name = 'vm, "q" & <x>, ☃'
        path = self.define(name)
        self.assertEqual(h.domain_path(name), path)
        h.call(path, D, 'Start', (0,), 't')
        self.assertEqual(self.state(path), 'running')
        self.assertEqual(h.qmp(path, 'query-name')['return'].get('name'), name)
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')


class FlagsTest(BadInputTestCase):
    def test_unknown_flag_bits(self):
        h = self.h
        running = self.define('running')
        off = self.define('off')
        h.call(running, D, 'Start', (0,), 't')
        img = h.create_image('new.qcow2')
        new_xml = q.domain_xml('new', [q.Disk('vda', img)])
        redefine = q.domain_xml('off', [q.Disk('vda', img)], uuid=self.uuid(off), description='changed')
        big = 1 << 63
        cases = [
            ('DefineDomain new', MP, M, 'DefineDomain', (new_xml, 1), 'st'),
            ('DefineDomain new', MP, M, 'DefineDomain', (new_xml, 2), 'st'),
            ('DefineDomain new', MP, M, 'DefineDomain', (new_xml, big), 'st'),
            ('DefineDomain redefine', MP, M, 'DefineDomain', (redefine, 4), 'st'),
            ('Start', off, D, 'Start', (2,), 't'),
            ('Start PAUSED|2', off, D, 'Start', (3,), 't'),
            ('Start', off, D, 'Start', (big,), 't'),
            ('Stop', running, D, 'Stop', (2,), 't'),
            ('Stop GRACEFUL|2', running, D, 'Stop', (3,), 't'),
            ('Stop', running, D, 'Stop', (big | 1,), 't'),
            ('Undefine', off, D, 'Undefine', (4,), 't'),
            ('Undefine 1|2|4', off, D, 'Undefine', (7,), 't'),
            ('Undefine', off, D, 'Undefine', (big,), 't'),
            ('GetXMLDesc', running, D, 'GetXMLDesc', (4,), 't'),
            ('GetXMLDesc SECURE|INACTIVE|4', running, D, 'GetXMLDesc', (7,), 't'),
            ('QemuMonitorCommand', running, D, 'QemuMonitorCommand', ('{"execute":"stop"}', 2), 'st'),
            ('QemuMonitorCommand HMP|2', running, D, 'QemuMonitorCommand', ('stop', 3), 'st'),
            ('QemuMonitorCommand', running, D, 'QemuMonitorCommand', ('{"execute":"stop"}', big), 'st'),
        ]
        for what, path, iface, method, args, sig in cases:
            with self.subTest(what, flags=hex(args[-1])):
                message = self.assertRefused(INVALID_ARGUMENT, h.call, path, iface, method, args, sig)
                self.assertIn(method, message)
        self.assertEqual(self.state(running), 'running')
        self.assertEqual(self.state(off), 'shutoff')
        # The known bits still work.
        self.assertIn('<name>off</name>', h.call(off, D, 'GetXMLDesc', (3,), 't'))
        h.call(off, D, 'Undefine', (3,), 't')
        self.assertNotIn(off, h.call(MP, M, 'ListDomains'))


class LookupTest(BadInputTestCase):
    def test_unknown_names_and_paths(self):
        h = self.h
        alpha = self.define('alpha')
        for name in ('nope', 'ALPHA', 'alpha ', ''):
            with self.subTest(name=name):
                message = self.assertRefused(NO_SUCH_DOMAIN, h.call, MP, M, 'GetDomain', (name,), 's')
                self.assertIn("'%s'" % name, message)

        doomed = self.define('doomed')
        h.call(doomed, D, 'Undefine', (0,), 't')
        never = '/org/example/Snapshot1/domain/never_20defined'
        for path in (doomed, never):
            for method, args, sig in (('Start', (0,), 't'), ('Stop', (0,), 't'), ('Pause', None, None),
                                      ('Undefine', (0,), 't'), ('GetXMLDesc', (0,), 't'),
                                      ('QemuMonitorCommand', ('{"execute":"query-status"}', 0), 'st')):
                with self.subTest(path=path, method=method):
                    self.assertRefused(UNKNOWN_OBJECT, h.call, path, D, method, args, sig)
            with self.subTest(path=path, method='Properties'):
                self.assertRefused(UNKNOWN_OBJECT, h.get_property, path, D, 'State')
                self.assertRefused(UNKNOWN_OBJECT, h.get_all, path, D)
        self.assertEqual(h.call(MP, M, 'ListDomains'), [alpha])
        self.assertEqual(sorted(h.client.managed_objects()), [alpha])


class RedefineTest(BadInputTestCase):
    def test_uuid_clashes(self):
        h = self.h
        alpha = self.define('alpha')
        beta = self.define('beta')
        ua, ub = self.uuid(alpha), self.uuid(beta)
        img = h.image_path('0.qcow2')
        # Same name, another UUID (a fresh one, or beta's).
        for uuid in ('0a0b0c0d-0000-4000-8000-000000000001', ub):
            with self.subTest(name='alpha', uuid=uuid):
                self.assertRefused(ALREADY_EXISTS, self.define_xml,
                                   q.domain_xml('alpha', [q.Disk('vda', img)], uuid=uuid))
        # A new name with an existing UUID, in any of its spellings.
        for uuid in (ua, ua.upper(), ua.replace('-', '')):
            with self.subTest(name='gamma', uuid=uuid):
                message = self.assertRefused(ALREADY_EXISTS, self.define_xml,
                                             q.domain_xml('gamma', [q.Disk('vda', img)], uuid=uuid))
                self.assertIn('alpha', message)
        self.assertEqual((self.uuid(alpha), self.uuid(beta)), (ua, ub))

    def test_redefinition_keeps_uuid_and_path(self):
        h = self.h
        alpha = self.define('alpha')
        uuid = self.uuid(alpha)
        stored = os.path.join(h.state_dir, 'domains', uuid + '.xml')
        rec = h.record_signals()
        img = h.create_image('second.qcow2')
        path = self.define_xml(q.domain_xml('alpha', [q.Disk('vda', img)], description='second'))
        self.assertEqual(path, alpha)
        self.assertEqual(self.uuid(alpha), uuid)
        self.assertEqual(os.listdir(os.path.join(h.state_dir, 'domains')), [uuid + '.xml'])
        with open(stored) as f:
            text = f.read()
        self.assertIn('second', text)
        self.assertIn(img, text)
        self.assertEqual(h.get_property(alpha, D, 'Disks')[0][2], img)
        h.barrier()
        self.assertEqual([s for s in rec.records if s.member in ('InterfacesAdded', 'InterfacesRemoved')], [],
                         'a redefinition is not a new object')
        # Same with the UUID spelled in upper case: still the same domain.
        path = self.define_xml(q.domain_xml('alpha', [q.Disk('vda', img)], uuid=uuid.upper(), description='third'))
        self.assertEqual((path, self.uuid(alpha)), (alpha, uuid))
        rec.close()

    def test_redefinition_without_uuid_ignores_comments(self):
        # "Redefinition without a <uuid> keeps the UUID" must look at the
        # elements, not at the text: a comment that mentions <uuid> is not one.
        h = self.h
        alpha = self.define('alpha')
        uuid = self.uuid(alpha)
        xml = q.domain_xml('alpha', [q.Disk('vda', h.image_path('0.qcow2'))], description='commented')
        xml = xml.replace('  <name>', '  <!-- no <uuid> here: keep the one qsnapd has -->\n  <name>', 1)
        try:
            path = self.define_xml(xml)
        except q.DBusCallError as e:
            self.fail('redefinition without a <uuid> element refused: %s' % e)
        self.assertEqual((path, self.uuid(alpha)), (alpha, uuid))
        self.assertIn('commented', h.call(alpha, D, 'GetXMLDesc', (2,), 't'))


class LifecycleErrorsTest(BadInputTestCase):
    def setUp(self):
        super().setUp()
        self.on = self.define('on')
        self.off = self.define('off')
        self.paused = self.define('paused')
        self.h.call(self.on, D, 'Start', (0,), 't')
        self.h.call(self.paused, D, 'Start', (1,), 't')

    def wrong_state_cases(self):
        return [
            (OPERATION_INVALID, self.on, 'Start', (0,), 't'),
            (OPERATION_INVALID, self.on, 'Start', (1,), 't'),
            (OPERATION_INVALID, self.paused, 'Start', (0,), 't'),
            (NOT_RUNNING, self.off, 'Stop', (0,), 't'),
            (NOT_RUNNING, self.off, 'Stop', (1,), 't'),
            (NOT_RUNNING, self.off, 'Pause', None, None),
            (NOT_RUNNING, self.off, 'Resume', None, None),
            (OPERATION_INVALID, self.on, 'Undefine', (0,), 't'),
            (OPERATION_INVALID, self.paused, 'Undefine', (0,), 't'),
            (NOT_RUNNING, self.off, 'QemuMonitorCommand', ('{"execute":"query-status"}', 0), 'st'),
            (NOT_RUNNING, self.off, 'QemuMonitorCommand', ('info status', 1), 'st'),
        ]

    def test_wrong_state(self):
        h = self.h
        for error, path, method, args, sig in self.wrong_state_cases():
            with self.subTest(method=method, path=path, args=args):
                self.assertRefused(error, h.call, path, D, method, args, sig)
        self.assertEqual([self.state(p) for p in (self.on, self.off, self.paused)], ['running', 'shutoff', 'paused'])

    def test_wrong_state_messages_say_what_is_wrong(self):
        # Section 7: "Each message says what was wrong and what to do" -- the
        # domain's name and its state, not strerror() of the errno behind
        # the error name ("Stale file handle", "No such process").
        h = self.h
        names = {self.on: 'on', self.off: 'off', self.paused: 'paused'}
        for error, path, method, args, sig in self.wrong_state_cases():
            with self.subTest(method=method, path=path, args=args):
                with self.assertDBusError(error) as caught:
                    h.call(path, D, method, args, sig)
                message = caught.exception.message
                self.assertIn("'%s'" % names[path], message)
                self.assertNotIn('Stale file handle', message)
                self.assertNotIn('No such process', message)

    def test_noop_pause_resume(self):
        h = self.h
        rec = h.record_signals()
        h.call(self.paused, D, 'Pause')
        h.call(self.on, D, 'Resume')
        h.barrier(self.paused, self.on)
        self.assertEqual((self.state(self.paused), self.state(self.on)), ('paused', 'running'))
        self.assertEqual(rec.property_values(self.paused, 'State') + rec.property_values(self.on, 'State'), [])
        rec.close()

    def test_bad_monitor_commands(self):
        h = self.h
        for command in ('{bad', '[1]', '"query-status"', '42', '{"foo": 1}', '{"execute": 5}',
                        '{"execute": null}', '{"arguments": {}}', '', '   '):
            with self.subTest(command=command):
                self.assertRefused(INVALID_ARGUMENT, h.call, self.on, D, 'QemuMonitorCommand', (command, 0), 'st')
        with self.subTest(command='empty HMP'):
            self.assertRefused(INVALID_ARGUMENT, h.call, self.on, D, 'QemuMonitorCommand', ('', 1), 'st')
        # QEMU's own refusals come back as its reply, unchanged.
        reply = h.qmp(self.on, 'no-such-command')
        self.assertEqual(reply['error']['class'], 'CommandNotFound')
        self.assertEqual(self.state(self.on), 'running')

    def test_monitor_command_rejects_trailing_garbage(self):
        # Not one JSON document: json-c parses the first object and ignores
        # the rest; libvirt's parser refuses such text.
        h = self.h
        for command in ('{"execute": "query-status"} trailing', '{"execute": "query-status"}}',
                        '{"execute": "query-status"} {"execute": "stop"}'):
            with self.subTest(command=command):
                self.assertRefused(INVALID_ARGUMENT, h.call, self.on, D, 'QemuMonitorCommand', (command, 0), 'st')
        self.assertEqual(self.state(self.on), 'running')


class QemuFailedTest(BadInputTestCase):
    def test_missing_image(self):
        h = self.h
        missing = h.image_path('missing.qcow2')
        path = h.define_domain('broken', [q.Disk('vda', missing)])
        uuid = self.uuid(path)
        rec = h.record_signals()
        with self.assertDBusError(QEMU_FAILED) as caught:
            h.call(path, D, 'Start', (0,), 't')
        message = caught.exception.message
        # QEMU's own words.
        self.assertIn('No such file or directory', message)
        self.assertIn('Could not open', message)
        self.assertIn(missing, message)
        self.assertEqual(self.state(path), 'shutoff')
        h.barrier(path)
        states = rec.property_values(path, 'State')
        self.assertTrue(not states or states[-1] == 'shutoff', states)
        rec.close()
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if f.startswith(uuid)], [])
        self.assertEqual(qemu_pids(h), [])
        # Once the image is there, the same domain starts.
        q.qemu_img_create(missing)
        h.call(path, D, 'Start', (0,), 't')
        self.assertEqual(self.state(path), 'running')
        h.call(path, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')

    def test_missing_base_of_transient_disk(self):
        h = self.h
        missing = h.image_path('missing-base.qcow2')
        path = h.define_domain('broken-transient', [q.Disk('vda', missing, transient=True)])
        uuid = self.uuid(path)
        with self.assertDBusError(QEMU_FAILED) as caught:
            h.call(path, D, 'Start', (0,), 't')
        self.assertIn(missing, caught.exception.message)
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual([f for f in os.listdir(h.runtime_dir) if f.startswith(uuid)], [])
        self.assertEqual(qemu_pids(h), [])


if __name__ == '__main__':
    q.main()
