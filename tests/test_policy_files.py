#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Static checks of interfaces/ and policy/ (no bus, no root needed).

- Each interfaces/*.xml: the introspect.dtd DOCTYPE, one interface named
  like the file, a doc comment right before every member, and only error
  names from DESIGN.md section 7 (plus the standard D-Bus ones below);
  polkit-checked members list AccessDenied and
  InteractiveAuthorizationRequired.
- policy/org.example.Snapshot1.conf: root owns the name; the default
  context denies the destination, then allows exactly our interfaces.
- policy/org.example.snapshot1.policy: the six actions and their defaults;
  host-admin is auth_admin everywhere and no action's defaults ever say
  "_keep" for it.
"""

import glob
import os
import re
import unittest
import xml.etree.ElementTree as ET

import interface_docs
import qsnaptest as q

DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">')

DESIGN_ERRORS = {'NoSuchDomain', 'NoSuchSnapshot', 'NoSuchCheckpoint', 'NoSuchDisk', 'NoSuchJob', 'InvalidXML',
                 'InvalidArgument', 'AlreadyExists', 'Busy', 'OperationInvalid', 'HasSnapshots', 'PathNotAllowed',
                 'NoSpace', 'NotRunning', 'QemuFailed', 'Unsupported',
                 # Added since DESIGN §7, each with its reason in docs/decisions.md:
                 'AgentUnresponsive'}  # issue #14, QUIESCE
STANDARD_ERRORS = {'org.freedesktop.DBus.Error.AccessDenied',
                   'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired',
                   'org.freedesktop.DBus.Error.LimitsExceeded',
                   'org.freedesktop.DBus.Error.UnknownObject'}

BUS_INTERFACES = {q.MANAGER_IFACE, q.DOMAIN_IFACE, q.SNAPSHOT_IFACE, q.CHECKPOINT_IFACE, q.JOB_IFACE,
                  'org.freedesktop.DBus.Properties', 'org.freedesktop.DBus.Introspectable',
                  'org.freedesktop.DBus.Peer', 'org.freedesktop.DBus.ObjectManager'}

# action: (allow_any, allow_inactive, allow_active), DESIGN.md section 6
ACTION_DEFAULTS = {
    q.ACTION_MANAGE_DOMAINS: ('no', 'no', 'auth_admin_keep'),
    q.ACTION_MANAGE_SNAPSHOTS: ('no', 'no', 'auth_admin_keep'),
    q.ACTION_BLOCK_JOBS: ('no', 'no', 'auth_admin_keep'),
    q.ACTION_BACKUP: ('no', 'no', 'auth_admin'),
    q.ACTION_READ_SECURE: ('no', 'no', 'auth_admin_keep'),
    # root-equivalent: asked every time, from any session, never kept
    q.ACTION_HOST_ADMIN: ('auth_admin', 'auth_admin', 'auth_admin'),
}


parse_with_comments = interface_docs.parse_with_comments


class InterfaceFilesTest(unittest.TestCase):
    def files(self):
        files = sorted(glob.glob(q.source_path('interfaces', '*.xml')))
        self.assertTrue(files, 'no interfaces/*.xml')
        return files

    def test_shape(self):
        for path in self.files():
            with self.subTest(file=os.path.basename(path)):
                with open(path) as f:
                    self.assertTrue(f.read().startswith(DOCTYPE), 'missing the introspect.dtd DOCTYPE')
                root = parse_with_comments(path)
                self.assertEqual(root.tag, 'node')
                ifaces = root.findall('interface')
                self.assertEqual(len(ifaces), 1, 'one interface per file')
                self.assertEqual(ifaces[0].get('name') + '.xml', os.path.basename(path))

    def test_doc_comments_and_errors(self):
        for path in self.files():
            iface = parse_with_comments(path).find('interface')
            previous = None
            for el in iface:
                if el.tag in ('method', 'signal', 'property'):
                    with self.subTest(file=os.path.basename(path), member=el.get('name')):
                        self.assertTrue(previous is not None and previous.tag is ET.Comment,
                                        'no doc comment right before %s' % el.get('name'))
                        doc = previous.text
                        self.assertIn(el.get('name') + ':', doc, 'the doc comment must start with the member name')
                        if el.tag == 'method':
                            parsed = interface_docs.parse_error_list(doc)
                            self.assertIsNotNone(parsed, 'a method doc lists its errors ("Errors: none." if none)')
                            errors, unparsed = parsed
                            self.assertEqual(unparsed, [], 'entries of the Errors: list that start with no error '
                                             'name (tests/lib/interface_docs.py reads "Name: why" or "A, B,")')
                            for name in errors:
                                if name.startswith(q.ERROR_PREFIX):
                                    self.assertIn(name[len(q.ERROR_PREFIX):], DESIGN_ERRORS)
                                else:
                                    self.assertIn(name, STANDARD_ERRORS)
                            if 'polkit:' in doc:
                                self.assertIn('org.freedesktop.DBus.Error.AccessDenied', errors)
                                self.assertIn('org.freedesktop.DBus.Error.InteractiveAuthorizationRequired', errors)
                            if 'flags' in [a.get('name') for a in el.findall('arg')]:
                                self.assertIn(q.ERROR_PREFIX + 'InvalidArgument', errors, 'unknown flag bits → InvalidArgument')
                previous = el


class ActionsInDocsTest(unittest.TestCase):
    """The interface docs name only actions the policy defines, and the
    root-equivalent members name host-admin."""

    def docs(self):
        out = {}
        for path in sorted(glob.glob(q.source_path('interfaces', '*.xml'))):
            previous = None
            for el in parse_with_comments(path).find('interface'):
                if el.tag == 'method' and previous is not None and previous.tag is ET.Comment:
                    out[el.get('name')] = previous.text
                previous = el
            with open(path) as f:
                out[os.path.basename(path)] = f.read()
        return out

    def test_actions_exist(self):
        for where, text in self.docs().items():
            for action in re.findall(r'org\.example\.snapshot1\.[a-z-]+', text):
                self.assertIn(action.rstrip('-'), ACTION_DEFAULTS, '%s names an unknown action' % where)

    def test_host_admin_members(self):
        docs = self.docs()
        self.assertIn('polkit: org.example.snapshot1.host-admin', docs['QemuMonitorCommand'])
        self.assertNotIn('manage-domains', docs['QemuMonitorCommand'])
        self.assertIn('org.example.snapshot1.host-admin', docs['DefineDomain'])
        self.assertIn('host-admin', docs['CreateSnapshot'])


class BusPolicyTest(unittest.TestCase):
    def test_policy(self):
        root = ET.parse(q.source_path('policy', 'org.example.Snapshot1.conf')).getroot()
        self.assertEqual(root.tag, 'busconfig')
        policies = root.findall('policy')
        rootpol = [p for p in policies if p.get('user') == 'root']
        default = [p for p in policies if p.get('context') == 'default']
        self.assertEqual((len(rootpol), len(default), len(policies)), (1, 1, 2))
        self.assertIn({'own': q.BUS_NAME}, [dict(a.attrib) for a in rootpol[0].findall('allow')])
        self.assertIn({'send_destination': q.BUS_NAME}, [dict(a.attrib) for a in rootpol[0].findall('allow')])

        rules = list(default[0])
        self.assertEqual((rules[0].tag, dict(rules[0].attrib)), ('deny', {'send_destination': q.BUS_NAME}),
                         'the default context first denies everything sent to the name')
        allowed = set()
        for r in rules[1:]:
            self.assertEqual(r.tag, 'allow')
            self.assertNotIn('own', r.attrib)
            if 'receive_sender' in r.attrib:
                continue
            self.assertEqual(r.get('send_destination'), q.BUS_NAME)
            self.assertEqual(set(r.attrib), {'send_destination', 'send_interface'})
            allowed.add(r.get('send_interface'))
        self.assertEqual(allowed, BUS_INTERFACES)


class PolkitPolicyTest(unittest.TestCase):
    def test_actions(self):
        root = ET.parse(q.source_path('policy', 'org.example.snapshot1.policy')).getroot()
        self.assertEqual(root.tag, 'policyconfig')
        self.assertTrue(root.findtext('vendor'))
        actions = {a.get('id'): a for a in root.findall('action')}
        self.assertEqual(set(actions), set(ACTION_DEFAULTS))
        for action_id, want in ACTION_DEFAULTS.items():
            with self.subTest(action=action_id):
                a = actions[action_id]
                self.assertTrue(a.findtext('description'))
                self.assertTrue(a.findtext('message'))
                d = a.find('defaults')
                self.assertEqual((d.findtext('allow_any'), d.findtext('allow_inactive'), d.findtext('allow_active')),
                                 want)


if __name__ == '__main__':
    unittest.main(verbosity=2)
