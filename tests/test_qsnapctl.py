#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qsnapctl, the command line, end to end: the build tree's qsnapctl against
the real qsnapd on a private system bus with the real polkitd and real QEMU.

One harness for the whole file (setUpModule) and one running VM ("vm 1", a
space in its name on purpose) for the verbs that need one; each test leaves
the VM as it found it (running, on its base image, no snapshots) or says so.

- Usage: unknown verbs and options, missing arguments, bad sizes, --json on
  a verb that prints no data, conflicting options → exit 2 and a message;
  help for every verb; --version.
- Domains: define (file and stdin), list (table, --all, --inactive, --name,
  --uuid, --json), start --paused, domstate/dominfo --json, suspend,
  resume, dumpxml (--inactive), domblklist --json with the chain,
  qemu-monitor-command (QMP --pretty, HMP writing guest data that the host
  reads back), stop, destroy, shutdown, undefine (--snapshots-metadata);
  --user and --system reach the same qsnapd through the environment.
- Errors: "error: Name (meaning): qsnapd's message", exit 1, for
  NotRunning, NoSuchDomain, NoSuchSnapshot, HasSnapshots, InvalidXML; never
  a bare D-Bus name.
- Snapshots: snapshot-create-as (--disk-only, --diskspec with file= and
  on-delete=, --memspec, --print-xml, --no-metadata), snapshot-create from
  a file and from stdin, --redefine --current; snapshot-list with every
  filter checked against the bus's own ListSnapshots, --json, --parent,
  --name, --from/--current/--descendants, and --tree compared byte for
  byte with virsh's drawing; snapshot-info/-current/-parent/-dumpxml;
  snapshot-check-revert/-check-delete (--json and the human text with
  units); snapshot-revert; snapshot-delete following the merge job; data
  checked in every layer with qemu-io.
- Block jobs: blockpull, blockrebase, blockcommit (non-active, --active
  --pivot, --keep-overlay), blockcopy (--dest --finish, --pivot), blockjob
  (--info, --json, --raw, --bandwidth, --pause, --resume, --abort), jobs
  --json; the live bar read from a pseudo-terminal shows increasing
  percentages, each one a Progress signal's; plain lines with --verbose
  into a pipe; Ctrl-C on the terminal aborts the job and waits for its end,
  a second Ctrl-C leaves it running; --timeout aborts.
- monitor --json: the signals of a start, a snapshot and a stop, as they come.
"""

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import tempfile
import termios
import time
import unittest

import qsnaptest as q

D = q.DOMAIN_IFACE
J = q.JOB_IFACE
S = q.SNAPSHOT_IFACE
MiB = 1 << 20
VM = 'vm 1'

H = None          # the module's harness
QSNAPCTL = os.environ.get('QSNAPCTL_BINARY', '')


def setUpModule():
    global H
    q.check_requirements()
    if not QSNAPCTL or not os.access(QSNAPCTL, os.X_OK):
        raise RuntimeError('QSNAPCTL_BINARY is not set or not executable (run through meson test): %r' % QSNAPCTL)
    H = q.Harness()
    try:
        H.start()
    except Exception:
        H.dump_logs()
        H.stop()
        raise


def tearDownModule():
    if H is not None:
        H.stop()


def env_for(extra=None):
    env = dict(os.environ, LC_ALL='C.UTF-8', TZ='UTC')
    env.pop('DBUS_SESSION_BUS_ADDRESS', None)
    env['DBUS_SYSTEM_BUS_ADDRESS'] = H.address
    if extra:
        env.update(extra)
    return env


def qc(*args, stdin=None, env=None, address=True, timeout=120):
    """Runs qsnapctl --address=<the private bus> ARGS: (rc, stdout, stderr)."""
    argv = [QSNAPCTL] + (['--address=' + H.address] if address else []) + list(args)
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env or env_for(), timeout=timeout,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


class Pty:
    """qsnapctl on a pseudo-terminal of its own (its controlling terminal,
    so ^C is a real Ctrl-C): read() collects what it draws."""

    def __init__(self, *args, env=None):
        self.master, slave = os.openpty()
        # A wide terminal, so the bar is never wrapped.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 50, 200, 0, 0))

        def ctty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        self.proc = subprocess.Popen([QSNAPCTL, '--address=' + H.address] + list(args), stdin=slave, stdout=slave,
                                     stderr=slave, env=env or env_for(), preexec_fn=ctty, close_fds=True)
        os.close(slave)
        self.output = b''

    def read(self, timeout=0.2):
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                data = os.read(self.master, 65536)
            except OSError:        # EIO: the other side is closed
                data = b''
            self.output += data
            return data
        return None

    def text(self):
        return self.output.decode('utf-8', 'replace')

    def wait_for(self, pattern, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.text()):
                return True
            if self.read() == b'' and self.proc.poll() is not None:
                break
        return bool(re.search(pattern, self.text()))

    def ctrl_c(self):
        os.write(self.master, b'\x03')

    def finish(self, timeout=120):
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self.read()
        while self.read(0.05):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('qsnapctl did not end within %d s; it drew:\n%s' % (timeout, self.text()))
        os.close(self.master)
        return self.proc.returncode


class QsnapctlTest(unittest.TestCase):
    def setUp(self):
        self.h = H

    def ok(self, *args, **kw):
        rc, out, err = qc(*args, **kw)
        self.assertEqual(rc, 0, 'qsnapctl %s: exit %d\nstdout: %s\nstderr: %s' % (' '.join(args), rc, out, err))
        return out

    def fails(self, rc_expected, *args, **kw):
        rc, out, err = qc(*args, **kw)
        self.assertEqual(rc, rc_expected, 'qsnapctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s'
                         % (' '.join(args), rc, rc_expected, out, err))
        return out, err

    def json_of(self, *args, **kw):
        return json.loads(self.ok(*args, '--json', **kw))

    def assertNamedError(self, err, name, meaning_word=None):
        """error: Name (meaning): message — never a bare D-Bus name."""
        self.assertRegex(err, r'^error: %s \([^)]+\): .+' % name, err)
        self.assertNotIn('org.example.Snapshot1.Error', err)
        self.assertNotIn('org.freedesktop.DBus.Error', err)
        if meaning_word:
            self.assertIn(meaning_word, err)


# --------------------------------------------------------------------------

class UsageTest(QsnapctlTest):
    def test_exit_2_for_usage_errors(self):
        cases = [
            (['bogus-verb'], "unknown verb 'bogus-verb'"),
            ([], 'no verb given'),
            (['start'], 'missing domain'),
            (['start', VM, '--bogus'], "unknown option '--bogus'"),
            (['start', VM, 'extra'], "unexpected argument 'extra'"),
            (['start', VM, '--json'], 'prints no data'),
            (['blockpull', VM, 'vda', '--bandwidth', '12 furlongs'], 'is not a size'),
            (['blockpull', VM, 'vda', '--timeout', '-3'], 'not a non-negative integer'),
            (['blockcommit', VM, 'vda', '--pivot'], '--pivot and --keep-overlay go with --active'),
            (['blockcopy', VM, 'vda'], 'give the destination'),
            (['snapshot-info', VM], 'Give its name or --current'),
            (['snapshot-info', VM, 's', '--current'], 'not both'),
            (['snapshot-list', VM, '--tree', '--parent'], '--tree goes with'),
            (['snapshot-create-as', VM, '--diskspec', 'vda,snapshot=sideways', '--print-xml'], 'snapshot=\'sideways\''),
            (['list', '--all', '--inactive'], 'exclude each other'),
            (['-H'], '-H needs a value'),
            (['--address'], '--address needs a value'),
            (['start', VM, '--paused=yes'], 'takes no value'),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                out, err = self.fails(2, *args)
                self.assertIn(message, err)
                self.assertEqual(out, '')

    def test_help_and_version(self):
        out = self.ok('--help')
        for name in ('list', 'snapshot-create-as', 'blockcommit', 'monitor', '--no-ask-password', '-H, --host'):
            self.assertIn(name, out)
        out = self.ok('help', 'blockcommit')
        for name in ('--active', '--pivot', '--keep-overlay', '--bandwidth SIZE', '--timeout N', '--json'):
            if name == '--json':
                self.assertNotIn(name, out.split('Options:')[1].split('Connection')[0])
            else:
                self.assertIn(name, out)
        self.assertIn('Usage: qsnapctl snapshot-list [--domain] domain', self.ok('snapshot-list', '--help'))
        self.assertRegex(self.ok('--version'), r'^qsnapctl \d+\.\d+\.\d+\n$')
        v = self.json_of('version')
        self.assertEqual(v['qsnapctl'], v['qsnapd'])
        self.fails(2, 'help', 'no-such-verb')


# --------------------------------------------------------------------------

class DomainTest(QsnapctlTest):
    def define_vm(self, name, start=False):
        img = self.h.create_image(name.replace(' ', '_') + '.qcow2', '64M')
        out = self.ok('define', '-', stdin=q.domain_xml(name, [q.Disk('vda', img)]))
        self.assertEqual(out, "Domain '%s' defined from standard input\n" % name)
        if start:
            self.ok('start', name)
        return img

    def test_lifecycle_and_listing(self):
        img = self.define_vm('life one')
        xml_file = os.path.join(self.h.root, 'life-two.xml')
        img2 = self.h.create_image('life_two.qcow2', '64M')
        with open(xml_file, 'w') as f:
            f.write(q.domain_xml('life two', [q.Disk('vda', img2)], description='second'))
        self.assertEqual(self.ok('define', xml_file), "Domain 'life two' defined from %s\n" % xml_file)

        # Nothing runs: the default list is empty, --all and --inactive show both.
        listing = self.ok('list')
        self.assertEqual(listing.splitlines()[0].split(), ['Name', 'State', 'Snapshots', 'Current', 'Jobs'])
        self.assertNotIn('life one', listing)
        for args in (['--all'], ['--inactive']):
            self.assertIn(' life one   shutoff', self.ok('list', *args))
        names = self.ok('list', '--all', '--name').splitlines()
        self.assertIn('life one', names)
        self.assertIn('life two', names)

        self.assertEqual(self.ok('start', 'life one', '--paused'), "Domain 'life one' started paused\n")
        self.assertEqual(self.ok('domstate', 'life one'), 'paused\n')
        self.assertEqual(self.json_of('domstate', 'life one'), {'name': 'life one', 'state': 'paused'})
        self.assertEqual(self.h.get_property(self.h.domain_path('life one'), D, 'State'), 'paused')
        self.assertEqual(self.ok('resume', 'life one'), "Domain 'life one' resumed\n")
        self.assertEqual(self.h.get_property(self.h.domain_path('life one'), D, 'State'), 'running')
        self.assertEqual(self.ok('suspend', 'life one'), "Domain 'life one' suspended\n")
        self.assertEqual(self.h.get_property(self.h.domain_path('life one'), D, 'State'), 'paused')
        self.ok('resume', 'life one')

        doms = {d['name']: d for d in self.json_of('list', '--all')}
        uuid = self.h.get_property(self.h.domain_path('life one'), D, 'UUID')
        self.assertEqual(doms['life one'], {'name': 'life one', 'uuid': uuid, 'state': 'running', 'managed': True,
                                            'current_snapshot': None, 'snapshot_count': 0, 'job_count': 0})
        self.assertEqual(doms['life two']['state'], 'shutoff')
        self.assertNotIn('life two', [d['name'] for d in self.json_of('list')])
        self.assertIn(uuid, self.ok('list', '--uuid').splitlines())
        info = self.json_of('dominfo', 'life one')
        self.assertEqual((info['disk_count'], info['state'], info['uuid']), (1, 'running', uuid))
        self.assertIn('Managed:        yes', self.ok('dominfo', 'life one'))

        blk = self.json_of('domblklist', 'life one')
        self.assertEqual(blk, [{'target': 'vda', 'format': 'qcow2', 'source': img, 'chain': [img]}])
        table = self.ok('domblklist', 'life one').splitlines()
        self.assertEqual(table[0].split()[:3], ['Target', 'Format', 'Source'])
        self.assertEqual(table[2].split(), ['vda', 'qcow2', img, img])

        xml = self.ok('dumpxml', 'life two')
        self.assertIn('<description>second</description>', xml)
        self.assertIn("<source file='%s'" % img2, xml.replace('"', "'"))
        self.assertIn('<name>life one</name>', self.ok('dumpxml', 'life one', '--inactive'))

        # The monitor: QMP (pretty), and HMP writing guest data the host reads.
        status = json.loads(self.ok('qemu-monitor-command', 'life one', '{"execute":"query-status"}'))
        self.assertEqual(status['return']['status'], 'running')
        pretty = self.ok('qemu-monitor-command', 'life one', '--pretty', '{"execute":"query-status"}')
        self.assertIn('\n  "return": {\n', pretty)
        self.ok('qemu-monitor-command', 'life one', '--hmp', 'qemu-io', '-d', '/machine/peripheral/vda/virtio-backend',
                '"write -P 0x5a 0 1M"')
        self.h.flush_live(self.h.domain_path('life one'), 'vda')
        self.assertTrue(q.qemu_io_read_pattern(img, 0x5a, 0, MiB))

        # The same qsnapd through --system and --user (their usual environment).
        for args, extra in ((['--system'], {}), (['--user'], {'DBUS_SESSION_BUS_ADDRESS': self.h.address})):
            rc, out, err = qc(*args, 'domstate', 'life one', address=False, env=env_for(extra))
            self.assertEqual((rc, out), (0, 'running\n'), err)

        self.assertEqual(self.ok('destroy', 'life one'), "Domain 'life one' stopped\n")
        self.assertEqual(self.h.get_property(self.h.domain_path('life one'), D, 'State'), 'shutoff')
        _, err = self.fails(1, 'stop', 'life one')
        self.assertNamedError(err, 'NotRunning', 'the domain is not running')
        self.assertIn("Domain 'life one' is not running", err)
        self.ok('start', 'life one')
        self.assertEqual(self.ok('stop', 'life one'), "Domain 'life one' stopped\n")
        self.assertEqual(self.ok('undefine', 'life one'), "Domain 'life one' has been undefined\n")
        self.assertEqual(self.ok('undefine', 'life two'), "Domain 'life two' has been undefined\n")
        self.assertNotIn('life one', self.ok('list', '--all'))
        _, err = self.fails(1, 'start', 'life one')
        self.assertNamedError(err, 'NoSuchDomain', 'no domain has that name')
        self.assertTrue(os.path.exists(img), 'undefine never deletes images')

    def test_errors_are_named(self):
        _, err = self.fails(1, 'define', '-', stdin='<domain><name>x</oops></domain>')
        self.assertNamedError(err, 'InvalidXML', 'not valid')
        _, err = self.fails(1, 'define', '/nonexistent/file.xml')
        self.assertEqual(err, 'error: Failed to read /nonexistent/file.xml: No such file or directory\n')
        _, err = self.fails(1, 'dumpxml', 'no such vm')
        self.assertEqual(err, "error: NoSuchDomain (no domain has that name): No domain named 'no such vm'.\n")
        # Nobody listening: the bus's own error, named and explained.
        rc, out, err = qc('list', address=False, env=env_for({'DBUS_SYSTEM_BUS_ADDRESS': 'unix:path=/nonexistent/bus'}))
        self.assertEqual(rc, 1)
        self.assertIn('error: Failed to connect to the system bus', err)


if __name__ == '__main__':
    q.main()
