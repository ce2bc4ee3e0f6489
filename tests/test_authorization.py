#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Authorization of every domain-changing call (DESIGN.md section 6).

- uid 0 is allowed without polkit ever being asked, even when a rule
  would say no.
- uid 65534 (nobody) is denied with org.freedesktop.DBus.Error.AccessDenied
  for DefineDomain, Start, Stop, Pause, Resume, Undefine and
  GetXMLDesc(SECURE), and with InteractiveAuthorizationRequired for what
  needs the root-equivalent host-admin (auth_admin for any subject):
  QemuMonitorCommand (QMP and HMP) and DefineDomain of a disk outside the
  image roots; after each denial nothing changed: ListDomains, every
  property, the stored <uuid>.xml (byte for byte), the runtime and log
  folders, the running QEMUs (same pids), and no signal was sent.
- nobody can read: properties, ListDomains, GetDomain, GetXMLDesc(0) and
  (INACTIVE), GetManagedObjects, Introspect.
- a rules.d rule by group grants the test user; a rule reading the
  `domain` detail grants one domain only (Start, Stop and DefineDomain
  of other names stay denied); removing a rule takes effect at once.
- two tiers: manage-domains defines a domain whose disks are below an
  --image-root=; another emulator, a monitor socket, QEMU arguments, a disk
  source outside the roots (or a symlink leading out, or a FIFO) and
  QemuMonitorCommand need host-admin (the denial says why); a
  redefinition keeps what the domain already had; REDEFINE of a snapshot
  whose <domain> names another emulator needs host-admin too.
- polkit queries: one that the call never uses again (the domain was
  undefined, or redefined so that another action is needed, while polkit
  was deciding) is dropped (logged; qsnapd exits clean under ASan); checks
  in flight are limited per caller (LimitsExceeded beyond 16).
- a rule answering AUTH_ADMIN makes a call without the
  ALLOW_INTERACTIVE_AUTHORIZATION flag fail with
  InteractiveAuthorizationRequired; the flag reaches polkit as
  AllowUserInteraction (seen on the bus with busctl monitor).
- a slow polkit answer: the daemon keeps serving other calls, does not
  exit on idle while the check is pending, and the call is still denied.

Calls as other users go through gdbus (it prints the D-Bus error name;
busctl prints only the message) and busctl (its JSON output for reads).
"""

import json
import os
import re
import signal
import subprocess
import threading
import time

from gi.repository import GLib

import qsnaptest as q

NOBODY = q.NOBODY_UID
USER = q.TEST_USER
MANAGE = q.ACTION_MANAGE_DOMAINS


# --------------------------------------------------------------------------
# helpers

def variant_text(sig, value):
    """An argument as gdbus call parses it: GVariant text with its type."""
    return GLib.Variant(sig, value).print_(True)


def call_as(h, user, path, iface, method, args=(), interactive=False, timeout=30):
    """gdbus call as user. args: (signature, value) pairs. Returns
    (error_name or None, message or stdout)."""
    argv = ['--dest', q.BUS_NAME, '--object-path', path, '--method', iface + '.' + method,
            '--timeout', str(timeout)]
    if interactive:
        argv.insert(0, '--interactive')
    argv += [variant_text(s, v) for s, v in args]
    rc, out, err = h.gdbus_as(user, 'call', *argv, timeout=timeout + 10)
    if rc == 0:
        return None, out
    m = re.search(r'GDBus\.Error:([A-Za-z0-9_.]+): (.*)', err, re.S)
    if not m:
        raise AssertionError('gdbus call %s.%s as %s failed without a D-Bus error: rc %d, %r'
                             % (iface, method, user, rc, err))
    return m.group(1), m.group(2).strip()


def busctl_json_as(h, user, *args):
    """busctl --json=short ARGS as user: the parsed "data" of the reply."""
    rc, out, err = h.busctl_as(user, '--json=short', *args)
    if rc != 0:
        raise AssertionError('busctl %s as %s failed: %s' % (' '.join(args), user, err.strip()))
    return json.loads(out)['data']


def qemu_pids(h):
    """Every live QEMU whose command line names our temp dir (all our
    domains have their disks there)."""
    return sorted(p for p in q._pids_mentioning(h.root)
                  if 'qemu-system' in (q._proc_cmdline(p) or '').split(' ')[0])


def read_dir(path, content=True):
    """{name: bytes (or size)} of the files in path; {} when it is missing."""
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


def observe(h):
    """Everything a denied call must leave as it was."""
    domains = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
    return {
        'ListDomains': domains,
        'Domains': h.get_property(q.MANAGER_PATH, q.MANAGER_IFACE, 'Domains'),
        'properties': {p: h.get_all(p, q.DOMAIN_IFACE) for p in domains},
        'stored definitions': read_dir(os.path.join(h.state_dir, 'domains')),
        'runtime files': read_dir(h.runtime_dir, content=False),
        'QEMU logs': read_dir(os.path.join(h.state_dir, 'log'), content=False),
        'QEMU processes': qemu_pids(h),
    }


def domain_pid(h, path):
    return h.qemu_pid(path)


def with_devices(xml, devices='', os_children=''):
    """A domain_xml() with more <devices> and <os> children."""
    return xml.replace('  </devices>', devices + '\n  </devices>').replace('  </os>', os_children + '\n  </os>')

class PolkitMonitor:
    """busctl monitor on our bus: every CheckAuthorization call and
    polkitd's answers to them, so a test can see which checks qsnapd sent,
    with which arguments, and whether polkit has answered yet."""

    CALLS = "type='method_call',interface='%s',member='CheckAuthorization'" % q.POLKIT_IFACE
    ANSWERS = "type='method_return',sender='%s'" % q.POLKIT_NAME

    def __init__(self, h):
        self.h = h
        self.calls = []
        self.answers = {}     # (destination, reply cookie) -> polkit's (is_authorized, is_challenge, details)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(['busctl', '--address=' + h.address, 'monitor', '--json=short',
                                      '--match=' + self.CALLS, '--match=' + self.ANSWERS],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     stdin=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        # The monitor is in place once it sees a check of ours: until then,
        # send another now and then.
        try:
            q.wait_until(lambda: self._probe(0.2), 10, 'busctl monitor sees our own CheckAuthorization')
        except AssertionError:
            self.close()
            raise

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get('type') == 'method_return':
                with self._lock:
                    self.answers[(msg.get('destination'), msg.get('reply_cookie'))] = msg['payload']['data'][0]
                continue
            if msg.get('member') != 'CheckAuthorization':
                continue
            subject, action, details, flags, _ = msg['payload']['data']
            with self._lock:
                self.calls.append({'sender': msg.get('sender'), 'cookie': msg.get('cookie'), 'subject': subject,
                                   'action': action, 'details': details, 'flags': flags})

    def snapshot(self):
        with self._lock:
            return list(self.calls)

    def answered(self, call):
        """polkit's answer to call (a snapshot() entry), or None so far."""
        with self._lock:
            return self.answers.get((call['sender'], call['cookie']))

    def _probe(self, timeout):
        """A check of our own; True once the monitor has read it. Its answer
        is not waited for: polkitd evaluates one check at a time, and a slow
        rule in the test would hold it back."""
        token = 'monitor-probe-%d-%f' % (os.getpid(), time.monotonic())
        args = GLib.Variant('((sa{sv})sa{ss}us)', (q.subject_bus_name(self.h.client.unique_name),
                                                   q.ACTION_READ_SECURE, {'qsnaptest-monitor': token}, 0, ''))
        self.h.client.call_async(q.POLKIT_PATH, q.POLKIT_IFACE, 'CheckAuthorization', args, dest=q.POLKIT_NAME)
        return q.spin(lambda: any(c['details'].get('qsnaptest-monitor') == token for c in self.snapshot()), timeout)

    def sync(self):
        """Every check and answer the bus routed before now has been read:
        a check of our own goes through the bus after them, and the monitor
        gets messages in the order the bus routes them."""
        if not self._probe(10):
            raise AssertionError('busctl monitor did not see our own CheckAuthorization within 10 s')

    def from_daemon(self):
        """The checks qsnapd sent (by the unique name owning our bus name)."""
        owner = self.h.client.bus('GetNameOwner', (q.BUS_NAME,), 's')
        self.sync()
        return [c for c in self.snapshot() if c['sender'] == owner]

    def wait_for_check(self, action, details, timeout=10.0):
        """The CheckAuthorization qsnapd sends for action with details, as
        soon as the bus has routed it to polkitd."""
        owner = self.h.client.bus('GetNameOwner', (q.BUS_NAME,), 's')
        return q.wait_until(lambda: next((c for c in self.snapshot() if c['sender'] == owner and
                                          c['action'] == action and c['details'] == details), None),
                            timeout, 'qsnapd asks polkit about %s %s' % (action, details))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        self.proc.stdout.close()


class AuthTestCase(q.QsnapTestCase):
    maxDiff = None

    def define(self, name, **kw):
        img = self.h.create_image('%s.qcow2' % name.replace('/', '_'))
        return self.h.define_domain(name, [q.Disk('vda', img)], **kw)

    def start(self, path, flags=0):
        self.h.call(path, q.DOMAIN_IFACE, 'Start', (flags,), 't')

    def state(self, path):
        return self.h.get_property(path, q.DOMAIN_IFACE, 'State')

    def monitor(self):
        m = PolkitMonitor(self.h)
        self.addCleanup(m.close)
        return m

    def assertNothingChanged(self, before, recorder, what):
        self.assertEqual(observe(self.h), before, 'state changed after: %s' % what)
        self.h.barrier(*before['ListDomains'])
        self.assertEqual(recorder.records, [], 'signals were sent after: %s' % what)

    def assertCallDenied(self, user, path, iface, method, args=(), error=q.ACCESS_DENIED, interactive=False):
        """The call as user fails with error and changes nothing."""
        h = self.h
        before = observe(h)
        rec = h.record_signals()
        try:
            what = '%s.%s%r on %s as %s' % (iface.rsplit('.', 1)[-1], method, tuple(v for _, v in args), path, user)
            name, message = call_as(h, user, path, iface, method, args, interactive=interactive)
            self.assertEqual(name, error, '%s: expected %s, got %s (%s)' % (what, error, name, message))
            self.assertNothingChanged(before, rec, what)
        finally:
            rec.close()
        return message


# --------------------------------------------------------------------------

class RootTest(AuthTestCase):
    def test_root_is_allowed_without_asking_polkit(self):
        h = self.h
        # A rule that would refuse these very domains to anybody it is asked
        # about: root's calls must not depend on it (polkit is not asked).
        prefix = 'root-%d-' % os.getpid()
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    var d = action.lookup("domain");\n'
                          '    if (action.id.indexOf("org.example.snapshot1.") == 0 && d && d.indexOf(%s) == 0)\n'
                          '        return polkit.Result.NO;\n'
                          '});\n' % json.dumps(prefix))
        mon = self.monitor()
        name = prefix + 'vm'
        path = self.define(name)
        self.assertEqual(self.state(path), 'shutoff')
        self.start(path)
        self.assertEqual(self.state(path), 'running')
        pid = domain_pid(h, path)
        self.assertTrue(q._alive(pid))
        h.call(path, q.DOMAIN_IFACE, 'Pause')
        self.assertEqual(self.state(path), 'paused')
        h.call(path, q.DOMAIN_IFACE, 'Resume')
        self.assertEqual(self.state(path), 'running')
        self.assertEqual(h.qmp(path, 'query-status')['return']['status'], 'running')
        self.assertIn('running', h.hmp(path, 'info status'))
        xml = h.call(path, q.DOMAIN_IFACE, 'GetXMLDesc', (1,), 't')
        self.assertIn('<name>%s</name>' % name, xml)
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([pid], 10), [])
        h.call(path, q.DOMAIN_IFACE, 'Undefine', (0,), 't')
        self.assertEqual(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'), [])
        self.assertEqual(mon.from_daemon(), [], 'qsnapd asked polkit about calls of uid 0')


class NobodyTest(AuthTestCase):
    """alpha running, beta shut off, gamma paused; nobody may look, not touch."""

    def setUp(self):
        super().setUp()
        self.alpha = self.define('alpha')
        self.beta = self.define('beta')
        self.gamma = self.define('gamma')
        self.start(self.alpha)
        self.start(self.gamma, 1)
        self.assertEqual([self.state(p) for p in (self.alpha, self.beta, self.gamma)],
                         ['running', 'shutoff', 'paused'])

    def test_denied_and_nothing_changed(self):
        h = self.h
        D = q.DOMAIN_IFACE
        alpha_uuid = h.get_property(self.alpha, D, 'UUID')
        img = h.create_image('intruder.qcow2')
        new_xml = q.domain_xml('intruder', [q.Disk('vda', img)])
        # Same name and UUID as alpha, other contents: a redefinition.
        redefine_xml = q.domain_xml('alpha', [q.Disk('vda', img)], uuid=alpha_uuid, memory_mib=256,
                                    description='changed by nobody')
        alpha_pid, gamma_pid = domain_pid(h, self.alpha), domain_pid(h, self.gamma)
        # host-admin is auth_admin for any subject: polkit would ask for an
        # admin password, so the answer without interaction is
        # InteractiveAuthorizationRequired; the rest is "no" for nobody.
        ADMIN = q.INTERACTIVE_AUTH_REQUIRED
        cases = [
            # a disk outside the image roots (none configured): host-admin
            (q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', [('s', new_xml), ('t', 0)], ADMIN),
            # alpha's own folder: manage-domains
            (q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', [('s', redefine_xml), ('t', 0)], q.ACCESS_DENIED),
            (self.beta, D, 'Start', [('t', 0)], q.ACCESS_DENIED),
            (self.beta, D, 'Start', [('t', 1)], q.ACCESS_DENIED),
            (self.alpha, D, 'Stop', [('t', 0)], q.ACCESS_DENIED),
            (self.alpha, D, 'Stop', [('t', 1)], q.ACCESS_DENIED),
            (self.gamma, D, 'Stop', [('t', 0)], q.ACCESS_DENIED),
            (self.alpha, D, 'Pause', [], q.ACCESS_DENIED),
            (self.gamma, D, 'Resume', [], q.ACCESS_DENIED),
            (self.beta, D, 'Undefine', [('t', 0)], q.ACCESS_DENIED),
            (self.beta, D, 'Undefine', [('t', 3)], q.ACCESS_DENIED),
            (self.alpha, D, 'QemuMonitorCommand', [('s', '{"execute": "stop"}'), ('t', 0)], ADMIN),
            (self.alpha, D, 'QemuMonitorCommand', [('s', '{"execute": "quit"}'), ('t', 0)], ADMIN),
            (self.alpha, D, 'QemuMonitorCommand', [('s', '{"execute": "query-status"}'), ('t', 0)], ADMIN),
            (self.gamma, D, 'QemuMonitorCommand', [('s', '{"execute": "cont"}'), ('t', 0)], ADMIN),
            (self.alpha, D, 'QemuMonitorCommand', [('s', 'stop'), ('t', 1)], ADMIN),
            (self.alpha, D, 'QemuMonitorCommand', [('s', 'quit'), ('t', 1)], ADMIN),
            (self.alpha, D, 'QemuMonitorCommand', [('s', 'info status'), ('t', 1)], ADMIN),
            (self.alpha, D, 'GetXMLDesc', [('t', 1)], q.ACCESS_DENIED),
            (self.alpha, D, 'GetXMLDesc', [('t', 3)], q.ACCESS_DENIED),
            (self.beta, D, 'GetXMLDesc', [('t', 1)], q.ACCESS_DENIED),
        ]
        for path, iface, method, args, error in cases:
            with self.subTest(method=method, path=path, args=[v if s != 's' or len(v) < 40 else v[:30] + '…'
                                                              for s, v in args]):
                message = self.assertCallDenied(NOBODY, path, iface, method, args, error=error)
                self.assertIn('org.example.snapshot1.' + ('host-admin' if error == ADMIN else ''), message)
        # The same through busctl (another client library), with and without
        # interactive authorization allowed.
        for extra in ([], ['--allow-interactive-authorization=no']):
            before = observe(h)
            rc, _, err = h.busctl_as(NOBODY, *extra, 'call', q.BUS_NAME, self.beta, D, 'Start', 't', '0')
            self.assertNotEqual(rc, 0, 'busctl Start as nobody succeeded')
            self.assertEqual(observe(h), before)
        self.assertEqual(sorted(qemu_pids(h)), sorted([alpha_pid, gamma_pid]))
        self.assertEqual([self.state(p) for p in (self.alpha, self.beta, self.gamma)],
                         ['running', 'shutoff', 'paused'])

    def test_noop_pause_resume_needs_no_authorization(self):
        # Pause of a paused domain and Resume of a running one change
        # nothing. STYLE.md puts "return early if nothing would change"
        # before "authorize", so they succeed without asking polkit, and
        # still change nothing (docs/decisions.md).
        h = self.h
        for path, method in ((self.gamma, 'Pause'), (self.alpha, 'Resume')):
            before = observe(h)
            rec = h.record_signals()
            try:
                name, message = call_as(h, NOBODY, path, q.DOMAIN_IFACE, method)
                self.assertIsNone(name, '%s as nobody: %s' % (method, message))
                self.assertNothingChanged(before, rec, method)
            finally:
                rec.close()

    def test_reads_are_allowed(self):
        h = self.h
        D = q.DOMAIN_IFACE
        root_list = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')
        self.assertEqual(busctl_json_as(h, NOBODY, 'call', q.BUS_NAME, q.MANAGER_PATH, q.MANAGER_IFACE,
                                        'ListDomains'), [root_list])
        self.assertEqual(busctl_json_as(h, NOBODY, 'get-property', q.BUS_NAME, q.MANAGER_PATH,
                                        q.MANAGER_IFACE, 'Domains'), root_list)
        self.assertTrue(busctl_json_as(h, NOBODY, 'get-property', q.BUS_NAME, q.MANAGER_PATH,
                                       q.MANAGER_IFACE, 'Version'))
        for name, path, state in (('alpha', self.alpha, 'running'), ('beta', self.beta, 'shutoff'),
                                  ('gamma', self.gamma, 'paused')):
            with self.subTest(domain=name):
                self.assertEqual(busctl_json_as(h, NOBODY, 'call', q.BUS_NAME, q.MANAGER_PATH, q.MANAGER_IFACE,
                                                'GetDomain', 's', name), [path])
                for prop, want in (('Name', name), ('State', state),
                                   ('UUID', h.get_property(path, D, 'UUID')), ('Managed', True)):
                    self.assertEqual(busctl_json_as(h, NOBODY, 'get-property', q.BUS_NAME, path, D, prop), want)
                disks = busctl_json_as(h, NOBODY, 'get-property', q.BUS_NAME, path, D, 'Disks')
                self.assertEqual([tuple(d) for d in disks], list(h.get_property(path, D, 'Disks')))
                # GetAll through gdbus too.
                err, out = call_as(h, NOBODY, path, q.PROPERTIES_IFACE, 'GetAll', [('s', D)])
                self.assertIsNone(err, out)
                self.assertIn("'State': <'%s'>" % state, out)
                for flags in (0, 2):
                    xml = busctl_json_as(h, NOBODY, 'call', q.BUS_NAME, path, D, 'GetXMLDesc', 't', str(flags))
                    self.assertEqual(xml, [h.call(path, D, 'GetXMLDesc', (flags,), 't')])
        objects = busctl_json_as(h, NOBODY, 'call', q.BUS_NAME, q.MANAGER_PATH, q.OBJECT_MANAGER_IFACE,
                                 'GetManagedObjects')[0]
        self.assertEqual(sorted(objects), sorted(root_list))
        for path in root_list:
            self.assertIn(D, objects[path])
        err, out = call_as(h, NOBODY, self.alpha, 'org.freedesktop.DBus.Introspectable', 'Introspect')
        self.assertIsNone(err, out)
        self.assertIn(D, out)


class GrantTest(AuthTestCase):
    # The test user defines domains on images in images_dir: an image root,
    # so manage-domains is enough (no host-admin).
    harness_options = {'image_root': True}

    def test_group_rule_grants_the_test_user(self):
        h = self.h
        D = q.DOMAIN_IFACE
        path = self.define('beta')
        # Without a rule: denied (polkit's default for a user with no
        # active session is "no").
        self.assertCallDenied(USER, path, D, 'Start', [('t', 0)])

        rule = h.grant(group=q.TEST_GROUP)
        err, out = call_as(h, USER, path, D, 'Start', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertEqual(self.state(path), 'running')
        pid = domain_pid(h, path)
        self.assertTrue(q._alive(pid))
        for method, args, state in (('Pause', [], 'paused'), ('Resume', [], 'running')):
            err, out = call_as(h, USER, path, D, method, args)
            self.assertIsNone(err, out)
            self.assertEqual(self.state(path), state)
        err, out = call_as(h, USER, path, D, 'QemuMonitorCommand', [('s', '{"execute":"query-status"}'), ('t', 0)])
        self.assertIsNone(err, out)
        self.assertIn('running', out)
        err, out = call_as(h, USER, path, D, 'GetXMLDesc', [('t', 1)])
        self.assertIsNone(err, out)
        # The rule is for the group: nobody is still refused.
        self.assertCallDenied(NOBODY, path, D, 'Stop', [('t', 0)])
        err, out = call_as(h, USER, path, D, 'Stop', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertEqual(self.state(path), 'shutoff')
        self.assertEqual(q._wait_gone([pid], 10), [])

        img = h.create_image('user-made.qcow2')
        err, out = call_as(h, USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                           [('s', q.domain_xml('user-made', [q.Disk('vda', img)])), ('t', 0)])
        self.assertIsNone(err, out)
        made = h.domain_path('user-made')
        err, out = call_as(h, USER, made, D, 'Undefine', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertNotIn(made, h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains'))

        # qsnapd keeps no authorization of its own: without the rule, denied again.
        h.remove_polkit_rule(rule)
        self.assertCallDenied(USER, path, D, 'Start', [('t', 0)])

    def test_domain_detail_rule_grants_one_domain(self):
        h = self.h
        D = q.DOMAIN_IFACE
        alpha = self.define('alpha')
        h.grant(actions=[MANAGE], group=q.TEST_GROUP, domain='alpha')
        mon = self.monitor()

        # A new domain of another name: denied, nothing stored.
        img = h.create_image('beta.qcow2')
        self.assertCallDenied(USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                              [('s', q.domain_xml('beta', [q.Disk('vda', img)])), ('t', 0)])
        # Names that only look like alpha are other domains.
        for near in ('Alpha', 'alpha ', 'alpha2'):
            with self.subTest(name=near):
                self.assertCallDenied(USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                                      [('s', q.domain_xml(near, [q.Disk('vda', img)])), ('t', 0)])

        beta = self.define('beta')
        err, out = call_as(h, USER, alpha, D, 'Start', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertEqual(self.state(alpha), 'running')
        self.assertCallDenied(USER, beta, D, 'Start', [('t', 0)])
        self.start(beta)
        self.assertCallDenied(USER, beta, D, 'Stop', [('t', 0)])
        # host-admin (auth_admin for everybody): a password would be asked.
        self.assertCallDenied(USER, beta, D, 'QemuMonitorCommand', [('s', 'info status'), ('t', 1)],
                              error=q.INTERACTIVE_AUTH_REQUIRED)
        # Redefining alpha is alpha's business: allowed.
        err, out = call_as(h, USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
                           [('s', q.domain_xml('alpha', [q.Disk('vda', h.image_path('alpha.qcow2'))],
                                               description='by the user')), ('t', 0)])
        self.assertIsNone(err, out)
        self.assertIn('by the user', h.call(alpha, D, 'GetXMLDesc', (2,), 't'))
        err, out = call_as(h, USER, alpha, D, 'Stop', [('t', 0)])
        self.assertIsNone(err, out)
        self.assertEqual(self.state(alpha), 'shutoff')
        self.assertEqual(self.state(beta), 'running')

        # What polkit was told: the action and the domain's name, per call;
        # the monitor passthrough is the root-equivalent tier.
        seen = [(c['action'], c['details']) for c in mon.from_daemon()]
        self.assertIn((MANAGE, {'domain': 'beta'}), seen)
        self.assertIn((MANAGE, {'domain': 'alpha'}), seen)
        self.assertIn((MANAGE, {'domain': 'alpha '}), seen)
        self.assertIn((q.ACTION_HOST_ADMIN, {'domain': 'beta'}), seen)
        self.assertEqual({a for a, _ in seen}, {MANAGE, q.ACTION_HOST_ADMIN})


class InteractiveTest(AuthTestCase):
    def test_auth_admin_needs_interaction(self):
        h = self.h
        D = q.DOMAIN_IFACE
        alpha = self.define('alpha')
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id == %s && subject.user == %s && action.lookup("domain") == "alpha")\n'
                          '        return polkit.Result.AUTH_ADMIN;\n'
                          '});\n' % (json.dumps(MANAGE), json.dumps(USER)))
        mon = self.monitor()

        # Without the flag: InteractiveAuthorizationRequired, nothing changed.
        message = self.assertCallDenied(USER, alpha, D, 'Start', [('t', 0)], error=q.INTERACTIVE_AUTH_REQUIRED)
        self.assertIn(MANAGE, message)
        rc, _, err = h.busctl_as(USER, '--allow-interactive-authorization=no', 'call', q.BUS_NAME, alpha, D,
                                 'Start', 't', '0')
        self.assertNotEqual(rc, 0)
        self.assertIn('Interactive authentication required', err)
        without = mon.from_daemon()
        self.assertEqual([(c['action'], c['details'], c['flags']) for c in without],
                         [(MANAGE, {'domain': 'alpha'}, 0)] * 2)

        # With the flag, qsnapd passes AllowUserInteraction (1) on to polkit.
        # No authentication agent runs here, and polkitd then answers exactly
        # as without the flag: not authorized, is_challenge true (checked
        # directly below). qsnapd turns a challenge into
        # InteractiveAuthorizationRequired, as systemd's daemons do, so the
        # caller's error name is the same; what differs is what polkit was
        # asked. A real agent would have been asked to authenticate.
        peer = h.bus_peer_as(USER)
        for flags in (0, 1):
            ok, challenge, _ = h.check_authorization(q.subject_bus_name(peer.unique_name), MANAGE,
                                                     {'domain': 'alpha'}, flags)
            self.assertEqual((ok, challenge), (False, True), 'polkitd without an agent, flags %d' % flags)
        self.assertCallDenied(USER, alpha, D, 'Start', [('t', 0)], error=q.INTERACTIVE_AUTH_REQUIRED,
                              interactive=True)
        # busctl allows interactive authorization unless told otherwise.
        rc, _, err = h.busctl_as(USER, 'call', q.BUS_NAME, alpha, D, 'Start', 't', '0')
        self.assertNotEqual(rc, 0)
        self.assertEqual(self.state(alpha), 'shutoff')
        with_flag = mon.from_daemon()[len(without):]
        self.assertEqual([(c['action'], c['details'], c['flags']) for c in with_flag],
                         [(MANAGE, {'domain': 'alpha'}, 1)] * 2)
        # The subject is the caller's bus name, never qsnapd's own.
        owner = h.client.bus('GetNameOwner', (q.BUS_NAME,), 's')
        for c in without + with_flag:
            self.assertEqual(c['subject'][0], 'system-bus-name')
            self.assertNotEqual(c['subject'][1]['name']['data'], owner)

    def test_no_is_access_denied_with_or_without_flag(self):
        # polkit's "no" (nobody has no session): AccessDenied, never a
        # request for interaction, whatever the flag says.
        alpha = self.define('alpha')
        for interactive in (False, True):
            with self.subTest(interactive=interactive):
                self.assertCallDenied(NOBODY, alpha, q.DOMAIN_IFACE, 'Start', [('t', 0)], interactive=interactive)


class SlowPolkitTest(AuthTestCase):
    harness_options = {'idle_timeout': 2}

    def test_slow_denial(self):
        h = self.h
        D = q.DOMAIN_IFACE
        slow = self.define('slowpoke')
        other = self.define('other')
        self.start(slow)
        qemu = domain_pid(h, slow)
        # polkitd evaluates rules one at a time: this one holds it for 4 s
        # and then says no.
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id == %s && subject.user == "nobody" && action.lookup("domain") == "slowpoke") {\n'
                          '        polkit.spawn(["/bin/sleep", "4"]);\n'
                          '        return polkit.Result.NO;\n'
                          '    }\n'
                          '});\n' % json.dumps(MANAGE))
        mon = self.monitor()
        before = observe(h)    # also restarts qsnapd's idle timer
        daemon = h.daemon_pid()
        t0 = time.monotonic()
        caller = subprocess.Popen(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                                   'gdbus', 'call', '--address', h.address, '--dest', q.BUS_NAME,
                                   '--object-path', slow, '--method', D + '.Stop', 'uint64 0'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: caller.poll() is None and caller.kill())
        check = mon.wait_for_check(MANAGE, {'domain': 'slowpoke'})
        # While polkit thinks, qsnapd answers everybody else: all of this is
        # done before polkit has answered that check.
        self.assertEqual(self.state(slow), 'running')
        self.assertEqual(len(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')), 2)
        self.start(other)
        h.call(other, D, 'Stop', (0,), 't')
        mon.sync()
        self.assertIsNone(mon.answered(check), 'polkit answered before the other calls were done: this proves '
                          'nothing about qsnapd serving them meanwhile')
        self.assertIsNone(caller.poll(), 'the denied Stop was answered before polkit')
        out, err = caller.communicate(timeout=30)
        elapsed = time.monotonic() - t0
        self.assertNotEqual(caller.returncode, 0, out)
        self.assertIn('GDBus.Error:' + q.ACCESS_DENIED, err)
        self.assertGreater(elapsed, 3.5, 'the rule did not slow polkit down; the test tests nothing')
        mon.sync()
        self.assertEqual(mon.answered(check)[:2], [False, False], "polkit's answer to the slow check")
        # More than the idle timeout passed with only the check in flight:
        # qsnapd must still be the same process.
        self.assertTrue(q._alive(daemon), 'qsnapd exited while a polkit check was pending')
        self.assertEqual(h.daemon_pid(), daemon)
        self.assertTrue(q._alive(qemu))
        after = observe(h)
        # 'other' was started and stopped meanwhile: its log grew.
        before['QEMU logs'].pop(h.get_property(other, D, 'UUID') + '.log', None)
        after['QEMU logs'].pop(h.get_property(other, D, 'UUID') + '.log', None)
        self.assertEqual(after, before)
        # And once nothing is pending it does exit on idle; the VM stays.
        self.assertEqual(q._wait_gone([daemon], 10), [], 'qsnapd did not exit on idle afterwards')
        self.assertTrue(q._alive(qemu))

    def test_state_rechecked_after_slow_grant(self):
        # The answer comes after the domain changed: the call is judged
        # against the state it finds then, not the one it was asked in.
        h = self.h
        D = q.DOMAIN_IFACE
        slow = self.define('slowpoke')
        self.start(slow)
        h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id == %s && subject.user == %s && action.lookup("domain") == "slowpoke") {\n'
                          '        polkit.spawn(["/bin/sleep", "4"]);\n'
                          '        return polkit.Result.YES;\n'
                          '    }\n'
                          '});\n' % (json.dumps(MANAGE), json.dumps(USER)))
        mon = self.monitor()
        self.assertEqual(self.state(slow), 'running')
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=h.address, LC_ALL='C')
        caller = subprocess.Popen(['setpriv'] + q._user_args(USER) +
                                  ['gdbus', 'call', '--address', h.address, '--dest', q.BUS_NAME,
                                   '--object-path', slow, '--method', D + '.Pause'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, env=env)
        self.addCleanup(lambda: caller.poll() is None and caller.kill())
        # qsnapd checked Pause against a running domain and asked polkit;
        # the domain stops before polkit answers (it sleeps 4 s first).
        check = mon.wait_for_check(MANAGE, {'domain': 'slowpoke'})
        h.call(slow, D, 'Stop', (0,), 't')
        self.assertEqual(self.state(slow), 'shutoff')
        mon.sync()
        self.assertIsNone(mon.answered(check), 'polkit answered before Stop was done: the re-check after a '
                          'slow answer was not exercised')
        out, err = caller.communicate(timeout=30)
        mon.sync()
        self.assertEqual(mon.answered(check)[:2], [True, False], "polkit's answer to the slow check")
        self.assertNotEqual(caller.returncode, 0, 'Pause of a domain stopped meanwhile succeeded: %s' % out)
        self.assertIn('GDBus.Error:' + q.ERROR_PREFIX + 'NotRunning', err)
        self.assertEqual(self.state(slow), 'shutoff')
        self.assertEqual(qemu_pids(h), [])



HOST_ADMIN = q.ACTION_HOST_ADMIN
SNAPSHOTS = q.ACTION_MANAGE_SNAPSHOTS
LIBVIRT_QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0'


class TierTest(AuthTestCase):
    """manage-domains within the image roots; host-admin beyond them."""
    harness_options = {'image_root': True}

    def define_as_user(self, xml):
        return call_as(self.h, USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', [('s', xml), ('t', 0)])

    def assertNeedsHostAdmin(self, xml, why):
        message = self.assertCallDenied(USER, q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', [('s', xml), ('t', 0)],
                                        error=q.INTERACTIVE_AUTH_REQUIRED)
        self.assertIn(HOST_ADMIN, message)
        self.assertIn(why, message)

    def test_device_folders_do_not_widen_the_disks(self):
        # An admin put the domain's kernel in a folder outside the roots:
        # that folder is the domain's own for read-only device files only,
        # never for a disk or a file QEMU writes (a serial log there could
        # truncate the kernel).
        h = self.h
        h.grant([MANAGE], group=q.TEST_GROUP, domain='vm')
        inside = h.create_image('vm.qcow2')
        boot = os.path.join(h.root, 'boot')
        os.mkdir(boot)
        for f in ('vmlinuz', 'vmlinuz-old', 'initrd'):
            open(os.path.join(boot, f), 'w').close()
        kernel = '<kernel>%s/vmlinuz</kernel>' % boot
        h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain',
               (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]), os_children=kernel), 0), 'st')
        # Within the domain's tier: the same kernel, another one beside it, an initrd.
        for os_children in (kernel, '<kernel>%s/vmlinuz-old</kernel><initrd>%s/initrd</initrd>' % (boot, boot)):
            err, out = self.define_as_user(with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                                                        os_children=os_children))
            self.assertIsNone(err, out)
        stored = observe(h)['stored definitions']
        for xml, why in (
                (with_devices(q.domain_xml('vm', [q.Disk('vda', inside), q.Disk('vdb', boot + '/vmlinuz', 'raw')]),
                              os_children=kernel), 'source of disk vdb'),
                (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                              "<serial type='file'><source path='%s/vmlinuz'/></serial>" % boot, os_children=kernel),
                 'the file %s/vmlinuz' % boot),
                (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                              "<channel type='unix'><source mode='bind' path='%s/x.sock'/>"
                              "<target type='virtio' name='x'/></channel>" % boot, os_children=kernel),
                 'the file %s/x.sock' % boot)):
            with self.subTest(why=why):
                self.assertNeedsHostAdmin(xml, why)
        self.assertEqual(observe(h)['stored definitions'], stored)

    def test_define_within_and_beyond_the_roots(self):
        h = self.h
        h.grant([MANAGE, SNAPSHOTS], group=q.TEST_GROUP, domain='vm')
        mon = self.monitor()
        inside = h.create_image('vm.qcow2')
        outside_dir = os.path.join(h.root, 'outside')
        os.mkdir(outside_dir)
        outside = q.qemu_img_create(os.path.join(outside_dir, 'vm.qcow2'))
        os.symlink(outside, h.image_path('link-out.qcow2'))
        os.mkfifo(h.image_path('fifo.qcow2'))
        os.symlink(outside_dir, h.image_path('dir-out'))

        # manage-domains: a disk below the root, a file not there yet, the default emulator.
        err, out = self.define_as_user(q.domain_xml('vm', [q.Disk('vda', inside),
                                                          q.Disk('vdb', h.image_path('later.qcow2'))]))
        self.assertIsNone(err, out)
        path = h.domain_path('vm')
        # Device files below the root: manage-domains is enough.
        err, out = self.define_as_user(with_devices(
            q.domain_xml('vm', [q.Disk('vda', inside)]),
            "<disk type='file' device='cdrom'><source file='%s'/><target dev='sda'/></disk>"
            "<serial type='file'><source path='%s'/></serial>" % (h.image_path('cd.iso'), h.image_path('ttyS0.log')),
            os_children='<kernel>%s</kernel>' % h.image_path('vmlinuz')))
        self.assertIsNone(err, out)
        # UEFI from the system's OVMF, the store in qsnapd's default place
        # or below the root: manage-domains is enough.
        for nvram in ('', h.image_path('vm_VARS.fd')):
            err, out = self.define_as_user(with_devices(
                q.domain_xml('vm', [q.Disk('vda', inside)]),
                os_children="<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
                            "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>%s</nvram>" % nvram))
            self.assertIsNone(err, out)
        err, out = self.define_as_user(q.domain_xml('vm', [q.Disk('vda', inside)]))
        self.assertIsNone(err, out)
        stored = observe(h)['stored definitions']

        monitor = os.path.join(h.root, 'other.qmp')
        cases = [
            (q.domain_xml('vm', [q.Disk('vda', inside)], emulator='/bin/sh'), 'emulator /bin/sh'),
            (q.domain_xml('vm', [q.Disk('vda', inside)], monitor=monitor), 'monitor socket ' + monitor),
            (q.domain_xml('vm', [q.Disk('vda', inside)],
                          extra="  <qemu:commandline xmlns:qemu='%s'><qemu:arg value='-S'/></qemu:commandline>"
                          % LIBVIRT_QEMU_NS), 'passes arguments to QEMU'),
            (q.domain_xml('vm', [q.Disk('vda', '/etc/shadow', 'raw')]), 'source of disk vda'),
            (q.domain_xml('vm', [q.Disk('vda', inside), q.Disk('vdb', outside)]), 'source of disk vdb'),
            (q.domain_xml('vm', [q.Disk('vda', h.image_path('link-out.qcow2'))]), 'source of disk vda'),
            (q.domain_xml('vm', [q.Disk('vda', h.image_path('dir-out/new.qcow2'))]), 'source of disk vda'),
            (q.domain_xml('vm', [q.Disk('vda', h.image_path('fifo.qcow2'))]), 'source of disk vda'),
            (q.domain_xml('vm', [q.Disk('vda', h.image_path('../outside/vm.qcow2'))]), 'source of disk vda'),
            # Files a device makes QEMU open or create (issue #14): the same gate.
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]), os_children='<kernel>%s</kernel>'
                          % os.path.join(outside_dir, 'vmlinuz')), 'the file %s/vmlinuz' % outside_dir),
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          "<disk type='file' device='cdrom'><source file='/etc/shadow'/><target dev='sda'/></disk>"),
             'the file /etc/shadow'),
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          "<serial type='file'><source path='/etc/cron.d/qsnap'/></serial>"), 'the file /etc/cron.d/qsnap'),
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          "<serial type='unix'><source mode='bind' path='%s/s.sock'/></serial>" % outside_dir),
             'the file %s/s.sock' % outside_dir),
            # UEFI (issue #14): firmware from elsewhere, a store outside the root.
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          os_children="<loader readonly='yes' type='pflash'>%s/code.fd</loader>" % outside_dir),
             'UEFI <loader> %s/code.fd' % outside_dir),
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          os_children="<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
                                      "<nvram template='/etc/shadow'/>"), 'template /etc/shadow'),
            (with_devices(q.domain_xml('vm', [q.Disk('vda', inside)]),
                          os_children="<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
                                      "<nvram>/etc/shadow</nvram>"), 'UEFI variable store'),
        ]
        for xml, why in cases:
            with self.subTest(why=why):
                self.assertNeedsHostAdmin(xml, why)
        self.assertEqual(observe(h)['stored definitions'], stored)
        # A new domain too (the rule is for 'vm' only, but the tier comes first).
        self.assertNeedsHostAdmin(q.domain_xml('other', [q.Disk('vda', outside)]), 'source of disk vda')

        # QemuMonitorCommand: root-equivalent whatever manage-domains says.
        self.start(path)
        message = self.assertCallDenied(USER, path, q.DOMAIN_IFACE, 'QemuMonitorCommand',
                                        [('s', '{"execute": "query-status"}'), ('t', 0)],
                                        error=q.INTERACTIVE_AUTH_REQUIRED)
        self.assertIn(HOST_ADMIN, message)
        h.call(path, q.DOMAIN_IFACE, 'Stop', (0,), 't')

        # REDEFINE of a snapshot whose <domain> Revert would apply.
        def snapshot_xml(name, emulator):
            return ('<domainsnapshot><name>%s</name><state>shutoff</state>%s</domainsnapshot>'
                    % (name, q.domain_xml('vm', [q.Disk('vda', inside)], emulator=emulator)))
        message = self.assertCallDenied(USER, path, q.DOMAIN_IFACE, 'CreateSnapshot',
                                        [('s', snapshot_xml('evil', '/bin/sh')), ('t', 1)],
                                        error=q.INTERACTIVE_AUTH_REQUIRED)
        self.assertIn(HOST_ADMIN, message)
        self.assertIn('emulator /bin/sh', message)
        err, out = call_as(h, USER, path, q.DOMAIN_IFACE, 'CreateSnapshot',
                           [('s', snapshot_xml('fine', q.QEMU_SYSTEM)), ('t', 1)])
        self.assertIsNone(err, out)
        self.assertEqual(h.call(path, q.DOMAIN_IFACE, 'ListSnapshots', (0,), 't'), [path + '/snapshot/fine'])

        # With host-admin for vm: the outside disk is fine, and afterwards a
        # redefinition keeping it needs manage-domains only.
        rule = h.grant([HOST_ADMIN], group=q.TEST_GROUP, domain='vm')
        err, out = self.define_as_user(q.domain_xml('vm', [q.Disk('vda', inside), q.Disk('vdb', outside)]))
        self.assertIsNone(err, out)
        err, out = call_as(h, USER, path, q.DOMAIN_IFACE, 'GetXMLDesc', [('t', 0)])
        self.assertIn(outside, out)
        h.remove_polkit_rule(rule)
        err, out = self.define_as_user(q.domain_xml('vm', [q.Disk('vda', inside), q.Disk('vdb', outside)],
                                                    description='kept'))
        self.assertIsNone(err, out)
        # ... but not another file beside it in a folder it did not have.
        self.assertNeedsHostAdmin(q.domain_xml('vm', [q.Disk('vda', inside), q.Disk('vdb', '/etc/shadow', 'raw')]),
                                  'source of disk vdb')

        seen = [(c['action'], c['details']) for c in mon.from_daemon()]
        self.assertIn((HOST_ADMIN, {'domain': 'vm'}), seen)
        self.assertIn((HOST_ADMIN, {'domain': 'other'}), seen)
        self.assertIn((MANAGE, {'domain': 'vm'}), seen)
        self.assertNotIn((MANAGE, {'domain': 'other'}), seen)


class PolkitQueryTest(AuthTestCase):
    """A slow polkit answer for a call whose domain went away, or changed so
    that another action is needed: the answer is dropped, not kept."""

    def slow_rule(self, action, seconds, result='YES'):
        self.h.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                               '    if (action.id == %s && subject.user == %s) {\n'
                               '        polkit.spawn(["/bin/sleep", "%d"]);\n'
                               '        return polkit.Result.%s;\n'
                               '    }\n'
                               '});\n' % (json.dumps(action), json.dumps(USER), seconds, result))

    def call_in_background(self, path, iface, method, *args):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.h.address, LC_ALL='C')
        p = subprocess.Popen(['setpriv'] + q._user_args(USER) +
                             ['gdbus', 'call', '--address', self.h.address, '--dest', q.BUS_NAME,
                              '--object-path', path, '--method', iface + '.' + method] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def wait_checks(self, mon, n, timeout=10):
        """Until qsnapd has sent n CheckAuthorization calls (it is waiting)."""
        self.assertTrue(q.spin(lambda: len(mon.from_daemon()) >= n, timeout), 'qsnapd did not ask polkit')

    def unused_answers(self):
        with open(self.h.daemon_log, errors='replace') as f:
            return re.findall(r'polkit: the answer about (.*) was not used', f.read())

    def test_domain_gone_or_changed_while_polkit_decides(self):
        h = self.h
        D = q.DOMAIN_IFACE
        self.slow_rule(MANAGE, 3)
        mon = self.monitor()

        # 1. Undefined meanwhile: the answer finds no object to call again.
        gone = self.define('gone')
        caller = self.call_in_background(gone, D, 'Start', 'uint64 0')
        self.wait_checks(mon, 1)
        h.call(gone, D, 'Undefine', (0,), 't')
        out, err = caller.communicate(timeout=30)
        self.assertNotEqual(caller.returncode, 0, out)
        self.assertIn('UnknownObject', err)
        self.assertTrue(q.spin(lambda: len(self.unused_answers()) >= 1, 5), 'the unused answer was not dropped')
        self.assertIn('%s domain=gone' % MANAGE, self.unused_answers()[0])

        # 2. Redefined meanwhile so that the same call now needs host-admin:
        # the manage-domains answer is not taken for it.
        img = h.create_image('changing.qcow2')
        other_dir = os.path.join(h.root, 'elsewhere')
        os.mkdir(other_dir)
        other = q.qemu_img_create(os.path.join(other_dir, 'changing.qcow2'))
        h.define_domain('changing', [q.Disk('vda', img)])
        before = mon.from_daemon()
        xml = q.domain_xml('changing', [q.Disk('vda', h.image_path('changing-2.qcow2'))], description='by the user')
        caller = self.call_in_background(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', variant_text('s', xml),
                                         'uint64 0')
        self.wait_checks(mon, len(before) + 1)
        h.define_domain('changing', [q.Disk('vda', other)])
        out, err = caller.communicate(timeout=30)
        self.assertNotEqual(caller.returncode, 0, out)
        self.assertIn(q.INTERACTIVE_AUTH_REQUIRED, err)
        self.assertIn(HOST_ADMIN, err)
        self.assertNotIn('by the user', h.call(h.domain_path('changing'), D, 'GetXMLDesc', (0,), 't'))
        self.assertEqual([(c['action'], c['details']) for c in mon.from_daemon()[len(before):]],
                         [(MANAGE, {'domain': 'changing'}), (HOST_ADMIN, {'domain': 'changing'})])
        self.assertTrue(q.spin(lambda: len(self.unused_answers()) >= 2, 5), 'the unused answer was not dropped')
        self.assertIn('%s domain=changing' % MANAGE, self.unused_answers()[1])

        # qsnapd goes on, and exits clean (ASan: no leak, no use after free).
        self.assertEqual(len(h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'ListDomains')), 1)
        h.stop_daemon()
        self.assertEqual(h.daemon_exit_problems(), [])


LIMITS_SCRIPT = r"""
import json, sys
from gi.repository import Gio, GLib
address, path = sys.argv[1], sys.argv[2]
loop = GLib.MainLoop()
results = {}

def connect():
    return Gio.DBusConnection.new_for_address_sync(
        address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None, None)

def fire(conn, who, n):
    results[who] = []
    def done(c, res, _):
        try:
            c.call_finish(res)
            results[who].append('ok')
        except GLib.Error as e:
            results[who].append(Gio.DBusError.get_remote_error(e))
    for _ in range(n):
        conn.call('org.example.Snapshot1', path, 'org.example.Snapshot1.Domain', 'Start',
                  GLib.Variant('(t)', (0,)), None, Gio.DBusCallFlags.NONE, 60000, None, done, None)
    # A Ping after them: its answer means qsnapd has read every call before it.
    conn.call_sync('org.example.Snapshot1', '/org/example/Snapshot1', 'org.freedesktop.DBus.Peer', 'Ping',
                   None, None, Gio.DBusCallFlags.NONE, 10000, None)

def drain(seconds):
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()

conns = {who: connect() for who in 'ABCDE'}
fire(conns['A'], 'A', 17)
fire(conns['B'], 'B', 1)
for who in 'CDE':
    fire(conns[who], who, 16)
drain(1.0)
print(json.dumps(results), flush=True)
# polkitd is let go now: every pending call gets its answer.
def all_answered():
    return sum(len(v) for v in results.values()) == 17 + 1 + 48
for _ in range(600):
    if all_answered():
        break
    drain(0.1)
print(json.dumps(results), flush=True)
"""


class LimitsTest(AuthTestCase):
    """Checks in flight: at most 16 per caller and 64 in all; beyond,
    LimitsExceeded at once; the others are answered when polkit answers."""

    def test_pending_checks_are_bounded(self):
        h = self.h
        path = self.define('limited')
        polkitd = h.client.name_owner_pid(q.POLKIT_NAME)
        self.assertTrue(polkitd)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=h.address, LC_ALL='C')
        # polkitd stopped: every check qsnapd sends stays pending.
        os.kill(polkitd, signal.SIGSTOP)
        self.addCleanup(lambda: q._alive(polkitd) and os.kill(polkitd, signal.SIGCONT))
        script = subprocess.Popen(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % q.NOBODY_GID, '--clear-groups',
                                   '/usr/bin/python3', '-c', LIMITS_SCRIPT, h.address, path],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, env=env)
        self.addCleanup(lambda: script.poll() is None and script.kill())
        first = json.loads(script.stdout.readline() or 'null')
        self.assertIsNotNone(first, script.stderr.read() if script.poll() is not None else 'no output')
        LIMITS = 'org.freedesktop.DBus.Error.LimitsExceeded'
        # A: the 17th of its own; B: one call, pending; C, D: 16 each,
        # pending; E: its 16th would be the 65th in all.
        self.assertEqual(first, {'A': [LIMITS], 'B': [], 'C': [], 'D': [], 'E': [LIMITS]})
        # Meanwhile qsnapd answers everybody who needs no polkit.
        self.assertEqual(h.get_property(path, q.DOMAIN_IFACE, 'State'), 'shutoff')
        with open(h.daemon_log, errors='replace') as f:
            log = f.read()
        self.assertIn('16 of its checks and 16 in all are pending', log)
        self.assertIn('15 of its checks and 64 in all are pending', log)
        os.kill(polkitd, signal.SIGCONT)
        out, err = script.communicate(timeout=90)
        final = json.loads(out.strip().splitlines()[-1])
        self.assertEqual({who: sorted(set(v)) for who, v in final.items()},
                         {'A': sorted({LIMITS, q.ACCESS_DENIED}), 'B': [q.ACCESS_DENIED], 'C': [q.ACCESS_DENIED],
                          'D': [q.ACCESS_DENIED], 'E': sorted({LIMITS, q.ACCESS_DENIED})})
        self.assertEqual({who: len(v) for who, v in final.items()}, {'A': 17, 'B': 1, 'C': 16, 'D': 16, 'E': 16})
        self.assertEqual(self.state(path), 'shutoff')
        # Nothing is left pending: the next call is checked as usual.
        self.assertCallDenied(NOBODY, path, q.DOMAIN_IFACE, 'Start', [('t', 0)])


if __name__ == '__main__':
    q.main()
