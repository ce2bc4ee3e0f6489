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
- Checkpoints: checkpoint-create (stdin, --redefine --redefine-validate of
  an edited checkpoint-dumpxml), checkpoint-create-as (--diskspec),
  checkpoint-list with every filter checked against ListCheckpoints, --from
  against ListChildren, --tree drawn as virsh draws it, --parent --size
  with the bytes written since, --json; checkpoint-info/-parent/-dumpxml
  (--no-domain --size); checkpoint-delete (--metadata, --children) leaving
  no bitmap in QEMU; NoSuchCheckpoint, AlreadyExists, NoSuchDisk named; a
  bitmap removed by hand shown unusable with qsnapd's reason, and deleted.
- Backups: backup-begin --wait on a terminal draws increasing percentages
  from the job's Progress signals and names the target, which equals the
  disk (qemu-img compare/check); Ctrl-C aborts it and the target is gone;
  --verbose into a pipe prints plain lines; an existing target is
  AlreadyExists without --reuse-external; an incremental since a checkpoint
  copies only what was written since (checkpoint-list --size said so) and
  full <- incremental equals the disk; the checkpoints made by
  --checkpointxml and by CHECKPOINTXML on stdin are there after; a
  pull backup prints its NBD URI (UNIX socket, or TCP with the port qsnapd
  chose), which qemu-img reads back equal to the disk; backup-dumpxml; Busy; domjobabort ends it; OperationInvalid after.
- monitor --json: the signals of a start, a snapshot and a stop, as they come.
- Every flag of the bus API reached by its named option: each command's
  method call read off a bus monitor (member, flags, bandwidth in units).
- Bash completion of partial words through a real bash; man --warnings
  renders qsnapctl(1), qsnapd(8) and the generated org.example.Snapshot1(5),
  which name every verb, option and bus member.
- -H through a real sshd on 127.0.0.1 with throwaway keys.
- polkit: denials named; --no-ask-password and no terminal get
  InteractiveAuthorizationRequired (the prompt itself: tests/test_systemd.sh,
  which also drives -M).
"""

import fcntl
import glob
import json
import os
import re
import select
import shlex
import socket
import signal
import struct
import subprocess
import tempfile
import termios
import time
import unittest
import xml.etree.ElementTree as ET

import qsnaptest as q

D = q.DOMAIN_IFACE
C = q.CHECKPOINT_IFACE
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
    # Backups copy at most 4 MiB/s a disk (qsnapd's test hook), so that backup-begin --wait draws a bar.
    os.environ['QSNAPD_TEST_BACKUP_SPEED'] = str(4 * MiB)
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

    def __init__(self, *args, env=None, prefix=(), address=True):
        self.master, slave = os.openpty()
        # A wide terminal, so the bar is never wrapped.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 50, 200, 0, 0))

        def ctty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        self.proc = subprocess.Popen(list(prefix) + [QSNAPCTL] + (['--address=' + H.address] if address else [])
                                     + list(args), stdin=slave, stdout=slave,
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


class BusMonitor:
    """busctl monitor on the private bus (BecomeMonitor, root), one JSON
    message per line; wait_for() returns the first message that matches."""

    def __init__(self, matches):
        argv = ['busctl', '--address=' + H.address, 'monitor', '--json=short']
        for m in matches:
            argv += ['--match', m]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.fd = self.proc.stdout.fileno()
        self.buf = b''
        self.seen = []
        # Monitoring is on once our own probe call shows up.
        probe = 'qsnapctl-test-probe-%d' % os.getpid()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self._read(0.2):
            subprocess.run(['busctl', '--address=' + H.address, 'call', 'org.freedesktop.DBus',
                            '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetConnectionCredentials', 's', probe],
                           capture_output=True)

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        data = os.read(self.fd, 65536)
        if not data:
            return False
        self.buf += data
        while b'\n' in self.buf:
            line, self.buf = self.buf.split(b'\n', 1)
            try:
                self.seen.append(json.loads(line))
            except ValueError:
                pass
        return True

    def mark(self):
        """Everything seen so far; pass as start= to wait_for()."""
        while self._read(0):
            pass
        return len(self.seen)

    def wait_for(self, predicate, timeout=30, start=0):
        deadline = time.monotonic() + timeout
        while True:
            for m in self.seen[start:]:
                if predicate(m):
                    return m
            if time.monotonic() >= deadline:
                raise AssertionError('bus monitor: no matching message within %d s; saw %s'
                                     % (timeout, self.seen[-20:]))
            self._read(0.5)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()


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

    def complete(self, words, typed_line=None):
        """words: what bash splits (as typed); the last one is completed."""
        script = os.path.join(q.source_root(), 'tools', 'qsnapctl', 'qsnapctl.bash-completion')
        line = typed_line if typed_line is not None else ' '.join(words)
        prog = ('source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\nCOMP_LINE=%s\nCOMP_POINT=${#COMP_LINE}\n'
                '_qsnapctl\nprintf "%%s\\n" "${COMPREPLY[@]}"\n'
                % (shlex.quote(script), ' '.join(shlex.quote(w) for w in words), len(words) - 1, shlex.quote(line)))
        env = env_for({'PATH': os.path.dirname(QSNAPCTL) + ':' + os.environ['PATH']})
        r = subprocess.run(['bash', '--norc', '--noprofile', '-c', prog], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [x for x in r.stdout.split('\n') if x]

    def assertBarFollowsSignals(self, text, rec, label):
        """The bar qsnapctl drew on a terminal (text) went up to 100 % through at least three values, never back,
        each one a Progress signal recorded by rec (or the first reading) carried."""
        drawn = [int(p) for p in re.findall(r'\] +(\d+) %', text)]

        def signalled():
            return {0, 100} | {int(r.args[0] * 100 // r.args[1]) for r in rec.records if r.args[1]}
        # The test's own recorder may get the last signals after qsnapctl
        # drew them: wait until it has every value drawn (or give up).
        q.spin(lambda: set(drawn) <= signalled(), 5)
        self.assertGreaterEqual(len(set(drawn)), 3, text)
        self.assertEqual(drawn, sorted(drawn), 'the bar never goes back: %s' % drawn)
        self.assertTrue(set(drawn) <= signalled(), 'drawn %s, signalled %s' % (drawn, sorted(signalled())))
        self.assertEqual(drawn[-1], 100)
        self.assertIn('\r\x1b[K%s: [' % label, text)

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
            (['list', '--name', '--uuid'], '--name and --uuid exclude each other'),
            (['checkpoint-info', VM], 'missing checkpointname'),
            (['checkpoint-parent', VM], 'missing checkpointname'),
            (['checkpoint-create', VM, '--redefine'], '--redefine needs the XML'),
            (['checkpoint-create', VM, 'c.xml', '--redefine-validate'], '--redefine-validate goes with --redefine'),
            (['checkpoint-create-as', VM, '--diskspec', 'vda,checkpoint=maybe', '--print-xml'], "checkpoint='maybe'"),
            (['checkpoint-create-as', VM, '--diskspec', 'vda,colour=red', '--print-xml'], "unknown item 'colour=red'"),
            (['checkpoint-create-as', VM, '--diskspec', 'vda,checkpoint=no,bitmap=b', '--print-xml'],
             'bitmap= goes with checkpoint=bitmap'),
            (['checkpoint-create-as', VM, '--diskspec', ',bitmap=b', '--print-xml'], 'the first item is the disk'),
            (['checkpoint-list', VM, '--tree', '--size'], '--tree goes with'),
            (['checkpoint-list', VM, '--descendants'], '--descendants goes with --from'),
            (['checkpoint-list', VM, '--from', 'c1', '--roots'], '--roots does not go with --from'),
            (['checkpoint-dumpxml', VM, 'c1', '--json'], 'prints no data'),
            (['checkpoint-delete', VM, 'c1', '--children=yes'], 'takes no value'),
            (['backup-begin', VM, '-', '-'], 'only one of the two documents'),
            (['backup-begin', VM, '--async'], '--async goes with'),
            (['backup-begin', VM, '--json', '--wait'], '--json goes without --wait'),
            (['backup-begin', VM, '--timeout', 'soon'], 'not a non-negative integer'),
            (['backup-begin', VM, 'b.xml', 'c.xml', 'extra'], "unexpected argument 'extra'"),
            (['backup-dumpxml'], 'missing domain'),
            (['domjobabort'], 'missing domain'),
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
        self.assertIn('Usage: qsnapctl checkpoint-info [--domain] domain [--checkpointname] checkpointname [OPTIONS]',
                      self.ok('checkpoint-info', '--help'))
        self.assertIn('Usage: qsnapctl backup-begin [--domain] domain [[--backupxml] backupxml] '
                      '[[--checkpointxml] checkpointxml] [OPTIONS]', self.ok('help', 'backup-begin'))
        for verb, opts in (('checkpoint-list', ['--tree', '--from NAME', '--descendants', '--size', '--json']),
                           ('checkpoint-create-as', ['--diskspec NAME', '--redefine-validate', '--print-xml']),
                           ('backup-begin', ['--reuse-external', '--wait', '--verbose', '--timeout N'])):
            out = self.ok('help', verb)
            for o in opts:
                self.assertIn('  ' + o, out, verb)
        self.assertIn('--json', self.ok('help', 'backup-begin'))
        self.assertNotIn('--json', self.ok('help', 'backup-dumpxml'))
        self.assertRegex(self.ok('--version'), r'^qsnapctl \d+\.\d+\.\d+\n$')
        v = self.json_of('version')
        self.assertEqual(v['qsnapctl'], v['qsnapd'])
        self.fails(2, 'help', 'no-such-verb')


    def test_every_error_has_a_meaning(self):
        """Each error name qsnapd answers (daemon/util/error.c) has a meaning in qsnapctl's table, so that
        an error is never printed as a bare name."""
        with open(q.source_path('daemon', 'util', 'error.c')) as f:
            names = set(re.findall(r'\] = "([A-Z][A-Za-z]+)"', f.read()))
        with open(q.source_path('tools', 'qsnapctl', 'cli-bus.c')) as f:
            meanings = set(re.findall(r'\{ "([A-Z][A-Za-z]+)",', f.read()))
        self.assertGreater(len(names), 15)
        self.assertEqual(sorted(names - meanings), [], 'qsnapctl has no meaning for these errors')

    def test_checkpoint_print_xml(self):
        """checkpoint-create-as --print-xml: the <domaincheckpoint> its options describe, escaped, no bus call
        needed beyond the connection (the domain need not exist)."""
        out = self.ok('checkpoint-create-as', 'no such vm', 'mon<day>', "it's a test", '--diskspec', 'vda',
                      '--diskspec', 'vdb,checkpoint=no', '--diskspec', 'vdc,bitmap=b,,1', '--print-xml')
        root = ET.fromstring(out)
        self.assertEqual(root.tag, 'domaincheckpoint')
        self.assertEqual(root.findtext('name'), 'mon<day>')
        self.assertEqual(root.findtext('description'), "it's a test")
        self.assertEqual([d.attrib for d in root.findall('disks/disk')],
                         [{'name': 'vda'}, {'name': 'vdb', 'checkpoint': 'no'},
                          {'name': 'vdc', 'checkpoint': 'bitmap', 'bitmap': 'b,1'}])
        self.assertEqual(ET.fromstring(self.ok('checkpoint-create-as', VM, '--print-xml')).findall('*'), [])


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
        self.assertIn('\nhint: is the D-Bus system bus running', err, 'what to look at')
        # qsnapd's messages name the bus flags; qsnapctl says which option each is.
        img = self.h.create_image('hint.qcow2', '64M')
        self.ok('define', '-', stdin=q.domain_xml('hint vm', [q.Disk('vda', img)]))
        self.ok('snapshot-create-as', 'hint vm', 'h1')
        _, err = self.fails(1, 'undefine', 'hint vm')
        self.assertNamedError(err, 'HasSnapshots')
        self.assertIn('SNAPSHOTS_METADATA', err)
        self.assertTrue(err.endswith('\nhint: in qsnapctl, SNAPSHOTS_METADATA is --snapshots-metadata.\n'), err)
        # ... but not an option the command line gives already.
        _, err = self.fails(1, 'snapshot-create-as', 'hint vm', 'h2', '--disk-only', '--quiesce')
        self.assertIn('QUIESCE', err)
        self.assertNotIn('hint:', err)
        self.ok('undefine', 'hint vm', '--snapshots-metadata')
        _, err = self.fails(1, 'dumpxml', 'hint vm')
        self.assertNotIn('hint:', err)



# --------------------------------------------------------------------------

TREE_S1_S2_S3_S4 = ('s1\n'
                    '  |\n'
                    '  +- s2\n'
                    '  |   |\n'
                    '  |   +- s3\n'
                    '  |     \n'
                    '  +- s4\n'
                    '    \n')

CHECKPOINT_LIST_FLAGS = {'roots': 1, 'topological': 2, 'leaves': 4, 'no-leaves': 8}
LIST_FLAGS = {'roots': 1, 'metadata': 2, 'leaves': 4, 'no-leaves': 8, 'no-metadata': 16, 'inactive': 32,
              'active': 64, 'disk-only': 128, 'internal': 256, 'external': 512, 'topological': 1024}


def last_name(path):
    return path.rsplit('/', 1)[1]


class SnapshotTest(QsnapctlTest):
    def test_snapshots(self):
        h = self.h
        base = h.create_image('snapbase.qcow2', '64M')
        self.ok('define', '-', stdin=q.domain_xml('snap vm', [q.Disk('vda', base)]))
        dom = h.domain_path('snap vm')
        self.ok('start', 'snap vm')
        h.write_pattern_live(dom, 'vda', 0x11, 0, MiB)

        self.assertEqual(self.ok('snapshot-create-as', 'snap vm', 's1', 'the first', '--disk-only'),
                         'Domain snapshot s1 created\n')
        s1_overlay = os.path.join(h.images_dir, 'snapbase.s1')
        self.assertEqual(h.get_property(dom, D, 'Disks')[0][2], s1_overlay)
        h.write_pattern_live(dom, 'vda', 0x22, MiB, MiB)

        # --diskspec with a file of our own and the on_delete extension; --print-xml first.
        s2_overlay = os.path.join(h.images_dir, 'second, layer.qcow2')
        spec = 'vda,snapshot=external,driver=qcow2,file=%s,on-delete=backward' % s2_overlay.replace(',', ',,')
        xml = self.ok('snapshot-create-as', 'snap vm', '--name', 's2', '--memspec', 'snapshot=no', '--diskspec', spec,
                      '--print-xml')
        self.assertEqual(xml, "<domainsnapshot>\n  <name>s2</name>\n  <memory snapshot='no'/>\n  <disks>\n"
                              "    <disk name='vda' snapshot='external'>\n      <driver type='qcow2'/>\n"
                              "      <source file='%s'/>\n      <on_delete merge='backward'/>\n    </disk>\n"
                              "  </disks>\n</domainsnapshot>\n" % s2_overlay)
        self.assertEqual(h.get_property(dom, D, 'Snapshots'), [dom + '/snapshot/s1'], '--print-xml takes nothing')
        self.ok('snapshot-create-as', 'snap vm', '--name', 's2', '--diskspec', spec, '--disk-only')
        self.assertEqual(h.get_property(dom, D, 'Disks')[0][2], s2_overlay)
        self.assertIn("<on_delete merge='backward'/>", self.ok('snapshot-dumpxml', 'snap vm', 's2').replace('"', "'"))
        h.write_pattern_live(dom, 'vda', 0x33, 2 * MiB, MiB)

        # snapshot-create from standard input, then from a file with --redefine.
        self.assertEqual(self.ok('snapshot-create', 'snap vm', '-', '--disk-only',
                                 stdin='<domainsnapshot><name>s3</name><description>from stdin</description>'
                                       '</domainsnapshot>'), 'Domain snapshot s3 created\n')
        s3_xml = self.ok('snapshot-dumpxml', 'snap vm', 's3')
        self.assertIn('<description>from stdin</description>', s3_xml)
        self.assertEqual(self.ok('snapshot-delete', 'snap vm', 's3', '--metadata'), 'Domain snapshot s3 deleted\n')
        self.assertEqual(h.get_property(dom, D, 'CurrentSnapshot'), dom + '/snapshot/s2')
        xml_file = os.path.join(h.root, 's3.xml')
        with open(xml_file, 'w') as f:
            f.write(s3_xml)
        self.assertEqual(self.ok('snapshot-create', 'snap vm', xml_file, '--redefine', '--current'),
                         'Domain snapshot s3 redefined\n')
        self.assertEqual(h.get_property(dom, D, 'CurrentSnapshot'), dom + '/snapshot/s3')
        out, err = self.fails(1, 'snapshot-create', 'snap vm', xml_file, '--redefine')
        self.assertNamedError(err, 'AlreadyExists')
        # --no-metadata: taken, nothing recorded.
        nometa = os.path.join(h.images_dir, 'nometa.qcow2')
        self.assertEqual(self.ok('snapshot-create-as', 'snap vm', 'nm', '--disk-only', '--no-metadata',
                                 '--diskspec', 'vda,file=' + nometa), 'Domain snapshot taken (no metadata kept)\n')
        self.assertEqual(h.get_property(dom, D, 'Disks')[0][2], nometa)
        self.assertEqual(len(h.get_property(dom, D, 'Snapshots')), 3)

        # A branch: back to s1 (a new overlay), then s4 on it.
        out, err = self.fails(1, 'snapshot-revert', 'snap vm', 's1')
        self.assertNamedError(err, 'OperationInvalid')
        self.assertEqual(self.ok('snapshot-revert', 'snap vm', 's1', '--force', '--running'),
                         "Domain 'snap vm' reverted to snapshot s1 (now running)\n")
        active = h.get_property(dom, D, 'Disks')[0][2]
        self.assertEqual(active, os.path.join(h.images_dir, 'snapbase.s1-revert1'))
        h.verify_pattern_live(dom, 'vda', 0x11, 0, MiB)
        h.verify_pattern_live(dom, 'vda', 0x00, MiB, MiB, what="s1 froze the base: no 0x22")
        self.ok('snapshot-create-as', 'snap vm', 's4', '--disk-only')

        names = lambda out: out.split()
        self.assertEqual(self.ok('snapshot-list', 'snap vm', '--tree'), TREE_S1_S2_S3_S4)
        self.assertEqual(self.ok('snapshot-list', 'snap vm', '--tree', '--from', 's2'), 's2\n  |\n  +- s3\n    \n')
        for flag, bit in LIST_FLAGS.items():
            with self.subTest(flag=flag):
                expect = [last_name(p) for p in h.call(dom, D, 'ListSnapshots', (bit,), 't')]
                self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--' + flag, '--name')), expect)
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--name')), ['s1', 's2', 's3', 's4'])
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--leaves', '--name')), ['s3', 's4'])
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--from', 's1', '--name')), ['s2', 's4'])
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--from', 's1', '--descendants', '--name')),
                         ['s2', 's3', 's4'])
        self.assertEqual(self.ok('snapshot-list', 'snap vm', '--current', '--name'), '')
        table = self.ok('snapshot-list', 'snap vm', '--parent').splitlines()
        self.assertEqual(table[0].split(), ['Name', 'Creation', 'Time', 'State', 'Parent'])
        self.assertRegex(table[2], r'^ s1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000\s+disk-snapshot\s+-$')
        self.assertRegex(table[5], r'^ s4\s+.*\s+disk-snapshot\s+s1$')
        snaps = {s['name']: s for s in self.json_of('snapshot-list', 'snap vm')}
        s1 = snaps['s1']
        self.assertEqual(s1['creation_time'], h.get_property(dom + '/snapshot/s1', S, 'CreationTime'))
        self.assertEqual({k: v for k, v in s1.items() if k != 'creation_time'},
                         {'name': 's1', 'domain': 'snap vm', 'description': 'the first', 'state': 'disk-snapshot',
                          'location': 'external', 'memory': 'no', 'parent': None, 'children': ['s2', 's4'],
                          'current': False, 'metadata': True})
        self.assertTrue(snaps['s4']['current'])
        info = self.json_of('snapshot-info', 'snap vm', 's1')
        self.assertEqual((info['descendants'], info['children']), (3, ['s2', 's4']))
        text = self.ok('snapshot-info', 'snap vm', '--current')
        for line in ('Name:           s4', 'Domain:         snap vm', 'Current:        yes', 'Parent:         s1',
                     'Children:       0', 'Location:       external'):
            self.assertIn(line + '\n', text)
        self.assertEqual(self.ok('snapshot-current', 'snap vm', '--name'), 's4\n')
        self.assertIn('<name>s4</name>', self.ok('snapshot-current', 'snap vm'))
        self.assertEqual(self.json_of('snapshot-current', 'snap vm'), {'domain': 'snap vm', 'current': 's4'})
        self.assertEqual(self.ok('snapshot-parent', 'snap vm', 's3'), 's2\n')
        self.assertEqual(self.json_of('snapshot-parent', 'snap vm', '--current'), {'name': 's4', 'parent': 's1'})
        _, err = self.fails(1, 'snapshot-parent', 'snap vm', 's1')
        self.assertEqual(err, "error: Snapshot 's1' has no parent (it is a root).\n")
        _, err = self.fails(1, 'snapshot-info', 'snap vm', 'nope')
        self.assertNamedError(err, 'NoSuchSnapshot', 'no snapshot of that name')

        # Dry runs: a disk-only revert of a running domain needs --force.
        chk = self.json_of_rc(1, 'snapshot-check-revert', 'snap vm', 's2')
        self.assertFalse(chk['ok'])
        self.assertEqual(chk['reason'], h.call(dom + '/snapshot/s2', S, 'CheckRevert', (0,), 't')[1])
        self.assertTrue(chk['reason'])
        out, _ = self.fails(1, 'snapshot-check-revert', 'snap vm', 's2')
        self.assertEqual(out, "A revert of domain 'snap vm' to snapshot s2 would be refused: %s\n" % chk['reason'])
        self.assertEqual(self.json_of('snapshot-check-revert', 'snap vm', 's2', '--force'),
                         {'snapshot': 's2', 'ok': True, 'reason': ''})
        ok, reason, need = h.call(dom + '/snapshot/s4', S, 'CheckDelete', (0,), 't')
        chk = self.json_of('snapshot-check-delete', 'snap vm', 's4')
        self.assertEqual((chk['ok'], chk['reason'], chk['bytes_needed']), (ok, reason, need))
        self.assertGreater(need, 0)
        self.assertEqual(chk['free_dir'], h.images_dir)
        st = os.statvfs(h.images_dir)
        self.assertAlmostEqual(chk['free_bytes'], st.f_bavail * st.f_frsize, delta=256 * MiB)
        text = self.ok('snapshot-check-delete', 'snap vm', 's4')
        self.assertRegex(text, r"^A delete of snapshot s4 of domain 'snap vm' would go ahead now\.\n"
                               r"Data to merge:  \d+(\.\d)? [KMG]iB\nFree space:     \d+(\.\d)? [KMGT]iB in %s\n$"
                         % re.escape(h.images_dir))

        # Delete the current snapshot: its overlay is merged by a job that qsnapctl follows.
        out = self.ok('snapshot-delete', 'snap vm', '--current')
        self.assertRegex(out, r'^Snapshot delete: completed \(.*\)\n$')
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--name')), ['s1', 's2', 's3'])
        self.assertEqual(self.ok('snapshot-current', 'snap vm', '--name'), 's1\n')
        h.verify_pattern_live(dom, 'vda', 0x11, 0, MiB)
        self.assertEqual(self.ok('snapshot-delete', 'snap vm', 's2', '--children', '--metadata'),
                         'Domain snapshot s2 and its descendants deleted\n')
        self.assertEqual(names(self.ok('snapshot-list', 'snap vm', '--name')), ['s1'])

        self.ok('stop', 'snap vm')
        _, err = self.fails(1, 'undefine', 'snap vm')
        self.assertNamedError(err, 'HasSnapshots')
        self.ok('undefine', 'snap vm', '--snapshots-metadata')
        q.qemu_img_check(active)

    def json_of_rc(self, rc, *args):
        out, err = self.fails(rc, *args, '--json')
        return json.loads(out)


# --------------------------------------------------------------------------

class BlockJobTest(QsnapctlTest):
    """One VM on base <- mid <- top: 0x11 at 0 in base, 0x22 at 1 MiB and a
    32 MiB filler 0x44 at 4 MiB in mid, 0x33 at 2 MiB in top."""

    def setUp(self):
        super().setUp()
        h = self.h
        self.base = h.create_image('jbase.qcow2', '64M')
        self.mid = h.create_image('jmid.qcow2', '64M', backing=self.base)
        self.top = h.create_image('jtop.qcow2', '64M', backing=self.mid)
        q.qemu_io_write_pattern(self.base, 0x11, 0, MiB)
        q.qemu_io_write_pattern(self.mid, 0x22, MiB, MiB)
        q.qemu_io_write_pattern(self.mid, 0x44, 4 * MiB, 32 * MiB)
        q.qemu_io_write_pattern(self.top, 0x33, 2 * MiB, MiB)
        self.ok('define', '-', stdin=q.domain_xml('job vm', [q.Disk('vda', self.top)]))
        self.dom = h.domain_path('job vm')
        self.ok('start', 'job vm')
        self.addCleanup(self.cleanup_vm)

    def cleanup_vm(self):
        qc('stop', 'job vm')
        qc('undefine', 'job vm', '--snapshots-metadata')

    def chain(self):
        return self.h.get_property(self.dom, D, 'Disks')[0][3].split(' <- ')

    def job_path(self):
        """The domain's newest job (ended ones linger in Jobs for 60 s)."""
        jobs = self.h.get_property(self.dom, D, 'Jobs')
        return max(jobs, key=lambda j: (self.h.get_property(j, J, 'StartTime'), j))

    def overlay(self, name, filler_mib=0):
        """A new active overlay (no metadata), with filler_mib of guest data."""
        path = os.path.join(self.h.images_dir, name)
        self.ok('snapshot-create-as', 'job vm', '--disk-only', '--no-metadata', '--diskspec', 'vda,file=' + path)
        if filler_mib:
            self.h.write_pattern_live(self.dom, 'vda', 0x55, 8 * MiB, filler_mib * MiB)
        return path

    def test_bar_from_progress_signals(self):
        h = self.h
        rec = h.record_signals(self.dom, J, 'Progress')
        pty = Pty('blockcommit', 'job vm', 'vda', '--top', self.mid, '--base', 'vda[2]', '--delete',
                  '--bandwidth', '8MiB/s', '--wait')
        rc = pty.finish()
        text = pty.text()
        self.assertEqual(rc, 0, text)
        self.assertBarFollowsSignals(text, rec, 'Block Commit')
        self.assertRegex(text, r'\d+(\.\d)? MiB of \d+(\.\d)? MiB  \d+(\.\d)? [KM]iB/s  ETA \d+:\d\d')
        self.assertRegex(text, r'\nBlock Commit: completed \(\d+ MiB in \d+:\d\d\)\r?\n$')
        self.assertEqual(self.chain(), [self.base, self.top])
        self.assertFalse(os.path.exists(self.mid), '--delete removed the committed file')
        for pattern, off in ((0x11, 0), (0x22, MiB), (0x33, 2 * MiB), (0x44, 4 * MiB)):
            h.verify_pattern_live(self.dom, 'vda', pattern, off, MiB)

        # Into a pipe: no bar; with --verbose plain lines; then blockpull.
        rc, out, err = qc('blockpull', 'job vm', 'vda', '--verbose', '--bandwidth', '16M')
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertNotIn('\r', out)
        self.assertRegex(lines[-1], r'^Block Pull: completed \(\d+ MiB in \d+:\d\d\)$')
        for line in lines[:-1]:
            self.assertRegex(line, r'^Block Pull: \d+ % \(\d+(\.\d)? ([KM]i)?B of \d+ MiB(, \d+(\.\d)? [KM]iB/s)?(, ETA \d+:\d\d)?\)$')
        self.assertEqual(self.chain(), [self.top])
        h.verify_pattern_live(self.dom, 'vda', 0x11, 0, MiB)

    def test_ctrl_c_aborts_and_waits(self):
        h = self.h
        o1 = self.overlay('o1.qcow2', filler_mib=24)
        before = self.chain()
        pty = Pty('blockcommit', 'job vm', 'vda', '--active', '--pivot', '--bandwidth', '1M', '--wait')
        self.assertTrue(pty.wait_for(r'\] +\d+ %'), pty.text())
        job = self.job_path()
        pty.ctrl_c()
        rc = pty.finish()
        text = pty.text()
        self.assertEqual(rc, 1, text)
        self.assertIn('interrupted: aborting the job and waiting for it to end', text)
        self.assertIn('Active Block Commit: interrupted; the job was aborted and has ended (canceled)', text)
        self.assertEqual(h.get_property(job, J, 'State'), 'canceled')
        self.assertEqual(self.chain(), before)
        self.assertEqual(h.get_property(self.dom, D, 'Disks')[0][2], o1)

        # A second Ctrl-C stops waiting. QEMU is stopped (SIGSTOP) so that
        # the aborted job cannot end before the second Ctrl-C; that comes
        # once a bus monitor has seen qsnapctl's Abort reach qsnapd and
        # qsnapd get the caller's credentials back (it acts on the call
        # then, whether or not the caller is still there).
        pty = Pty('blockcommit', 'job vm', 'vda', '--active', '--pivot', '--bandwidth', '1M', '--wait')
        self.assertTrue(pty.wait_for(r'\] +\d+ %'), pty.text())
        job = self.job_path()
        qemu = h.qemu_pid(self.dom)
        mon = BusMonitor(["type='method_call',interface='org.example.BlockJob1',member='Abort'",
                          "type='method_call',destination='org.freedesktop.DBus'",
                          "type='method_return',sender='org.freedesktop.DBus'"])
        os.kill(qemu, signal.SIGSTOP)
        try:
            pty.ctrl_c()
            self.assertTrue(pty.wait_for('interrupted: aborting'), pty.text())
            abort = mon.wait_for(lambda m: m.get('member') == 'Abort' and m.get('path') == job)
            creds = mon.wait_for(lambda m: m.get('member', '').startswith('GetConnection')
                                 and m['payload']['data'] == [abort['sender']])
            mon.wait_for(lambda m: m.get('type') == 'method_return' and m.get('reply_cookie') == creds['cookie']
                         and m.get('destination') == creds['sender'])
            pty.ctrl_c()
            rc = pty.finish(timeout=20)
            self.assertEqual(rc, 1, pty.text())
            self.assertIn('no longer waiting; the job goes on without qsnapctl', pty.text())
            self.assertNotIn('has ended', pty.text())
            self.assertIn(h.get_property(job, J, 'State'), ('running', 'ready'))
        finally:
            os.kill(qemu, signal.SIGCONT)
            mon.close()
        self.assertTrue(q.spin(lambda: h.get_property(job, J, 'State') == 'canceled', 30))
        self.assertEqual(self.chain(), before)

        # --timeout aborts too.
        rc, out, err = qc('blockcommit', 'job vm', 'vda', '--active', '--pivot', '--bandwidth', '1M', '--timeout', '1')
        self.assertEqual(rc, 1, out + err)
        self.assertIn('timed out: aborting the job', err)
        self.assertIn('timed out; the job was aborted and has ended (canceled)', out)
        self.assertEqual(h.get_property(self.job_path(), J, 'State'), 'canceled')
        self.assertEqual(self.chain(), before)

    def test_blockjob_jobs_copy_rebase(self):
        h = self.h
        o1 = self.overlay('c1.qcow2', filler_mib=48)  # 24 s at 2 MiB/s: still running through the checks below, under load too
        out = self.ok('blockcommit', 'job vm', 'vda', '--active', '--bandwidth', '1M')
        self.assertRegex(out, r'^Active Block Commit started \(job active\.commit-vda-[0-9a-f]+\)\n$')
        job = self.job_path()
        info = self.ok('blockjob', 'job vm', 'vda')
        self.assertRegex(info, r'^Active Block Commit: \[ *\d+ %\]  .* of .*, state running\n    Bandwidth limit: 1.0 MiB/s\n')
        j = self.json_of('blockjob', 'job vm', o1)        # the disk named by its file
        self.assertEqual((j['type'], j['disk'], j['domain'], j['path'], j['bandwidth'], j['state']),
                         ('active-commit', 'vda', 'job vm', job, MiB, 'running'))
        self.assertIn(' Type=active-commit\n', self.ok('blockjob', 'job vm', 'vda', '--raw'))
        self.assertEqual(self.ok('blockjob', 'job vm', 'vda', '--bandwidth', '2M'),
                         'Active Block Commit on vda: bandwidth limit 2.0 MiB/s\n')
        self.assertEqual(h.get_property(job, J, 'Bandwidth'), 2 * MiB)
        self.assertEqual(self.ok('blockjob', 'job vm', 'vda', '--pause'), 'Active Block Commit on vda: paused\n')
        self.assertTrue(q.spin(lambda: h.get_property(job, J, 'State') == 'paused', 10))
        self.assertEqual(self.ok('blockjob', 'job vm', 'vda', '--resume'), 'Active Block Commit on vda: resumed\n')
        self.assertTrue(q.spin(lambda: h.get_property(job, J, 'State') == 'running', 10))
        jobs = [x for x in self.json_of('jobs') if x['path'] == job]
        self.assertEqual(len(jobs), 1)
        self.assertEqual(self.json_of('jobs', 'job vm')[-1]['path'], job)
        self.assertIn(' job vm   vda    active-commit   running', self.ok('jobs'))
        _, err = self.fails(1, 'blockjob', 'job vm', 'vda', '--pivot')
        self.assertNamedError(err, 'OperationInvalid')
        self.ok('blockjob', 'job vm', 'vda', '--bandwidth', '0')
        self.assertTrue(q.spin(lambda: h.get_property(job, J, 'State') == 'ready', 60))
        self.assertEqual(self.ok('blockjob', 'job vm', 'vda', '--pivot'), 'Active Block Commit on vda: pivoted\n')
        self.assertTrue(q.spin(lambda: h.get_property(job, J, 'State') == 'completed', 30))
        self.assertEqual(self.chain(), [self.base], 'base "" is the bottom of the chain')
        h.verify_pattern_live(self.dom, 'vda', 0x33, 2 * MiB, MiB)

        # blockcommit --active --keep-overlay: ends at READY, the overlay stays active.
        self.overlay('c2.qcow2')
        out = self.ok('blockcommit', 'job vm', 'vda', '--active', '--keep-overlay')
        self.assertRegex(out, r'^Active Block Commit: finished; the disk stays as it was')
        self.assertEqual(self.chain()[-1], os.path.join(h.images_dir, 'c2.qcow2'))

        # blockcopy --finish keeps the disk, --pivot switches.
        copy1, copy2 = os.path.join(h.images_dir, 'copy1.qcow2'), os.path.join(h.images_dir, 'copy2.raw')
        active = self.chain()[-1]
        out = self.ok('blockcopy', 'job vm', 'vda', copy1, '--finish', '--verbose')
        self.assertRegex(out.splitlines()[-1], r'^Block Copy: finished; the disk stays as it was')
        self.assertEqual(self.chain()[-1], active)
        q.qemu_img_compare(active, copy1)
        out = self.ok('blockcopy', 'job vm', 'vda', '--dest', copy2, '--format', 'raw', '--pivot')
        self.assertRegex(out, r'^Block Copy: successfully pivoted')
        self.assertEqual(h.get_property(self.dom, D, 'Disks')[0][:3], ('vda', 'raw', copy2))
        out = self.ok('blockcopy', 'job vm', 'vda', '--dest', os.path.join(h.images_dir, 'copy3.qcow2'), '--wait')
        self.assertIn('Block Copy: ready; now in mirroring phase', out)
        self.ok('blockjob', 'job vm', 'vda', '--abort')
        self.assertEqual(h.get_property(self.job_path(), J, 'State'), 'canceled')

        # blockrebase onto a base: copy2 <- r1 <- r2 becomes copy2 <- r2.
        r1 = self.overlay('r1.qcow2')
        h.write_pattern_live(self.dom, 'vda', 0x66, 48 * MiB, MiB)
        r2 = self.overlay('r2.qcow2')
        out = self.ok('blockrebase', 'job vm', 'vda', '--base', copy2, '--wait')
        self.assertRegex(out, r'^Block Pull: completed')
        self.assertEqual(self.chain(), [copy2, r2])
        h.verify_pattern_live(self.dom, 'vda', 0x66, 48 * MiB, MiB)
        h.verify_pattern_live(self.dom, 'vda', 0x11, 0, MiB)
        self.assertTrue(os.path.exists(r1))
        _, err = self.fails(1, 'blockpull', 'job vm', 'vdz')
        self.assertNamedError(err, 'NoSuchDisk')
        self.assertEqual(self.ok('blockjob', 'job vm', 'vdb'), 'No current block job for vdb\n')


# --------------------------------------------------------------------------

class CheckpointTest(QsnapctlTest):
    """The checkpoint verbs on a running VM: c1, 1 MiB written, c2 (from
    standard input), 1 MiB more, c3; then c3 re-parented under c1 by
    dumpxml, delete --metadata and create --redefine-validate, so that the
    tree branches. Every listing is checked against the bus's own
    ListCheckpoints/ListChildren; sizes are the bytes written since."""

    def setUp(self):
        super().setUp()
        h = self.h
        img = self.img = h.create_image('ckpt.qcow2', '32M')
        self.ok('define', '-', stdin=q.domain_xml('ck vm', [q.Disk('vda', img)]))
        self.dom = h.domain_path('ck vm')
        self.ok('start', 'ck vm')
        self.addCleanup(lambda: (qc('stop', 'ck vm'), qc('undefine', 'ck vm', '--checkpoints-metadata')))

    def names(self, paths):
        return [last_name(p) for p in paths]

    def bus_list(self, bit):
        return self.names(self.h.call(self.dom, D, 'ListCheckpoints', (bit,), 't'))

    def test_checkpoints(self):
        h = self.h
        V = 'ck vm'
        self.assertEqual(self.ok('checkpoint-create-as', V, 'c1', 'the first'), 'Domain checkpoint c1 created\n')
        h.write_pattern_live(self.dom, 'vda', 0xc1, 0, MiB)
        self.assertEqual(self.ok('checkpoint-create', V, '-', stdin='<domaincheckpoint><name>c2</name></domaincheckpoint>'),
                         'Domain checkpoint c2 created\n')
        h.write_pattern_live(self.dom, 'vda', 0xc2, 4 * MiB, MiB)
        self.ok('checkpoint-create-as', V, '--name', 'c3', '--diskspec', 'vda,checkpoint=bitmap')
        self.assertEqual(self.bus_list(0), ['c1', 'c2', 'c3'])
        self.assertEqual(self.ok('checkpoint-parent', V, 'c3'), 'c2\n')

        # Re-parent c3 under c1: its XML, forget its metadata (the bitmap stays), redefine it with parent c1.
        xml = self.ok('checkpoint-dumpxml', V, 'c3')
        root = ET.fromstring(xml)
        self.assertEqual(root.findtext('parent/name'), 'c2')
        self.assertIsNotNone(root.find('domain'), 'the recorded <domain> is there without --no-domain')
        self.assertEqual(self.ok('checkpoint-delete', V, 'c3', '--metadata'), 'Domain checkpoint c3 deleted\n')
        self.assertEqual(self.bus_list(0), ['c1', 'c2'])
        root.find('parent/name').text = 'c1'
        out = self.ok('checkpoint-create', V, '--redefine', '--redefine-validate', '-',
                      stdin=ET.tostring(root, encoding='unicode'))
        self.assertEqual(out, 'Domain checkpoint c3 redefined\n')
        self.assertEqual(self.ok('checkpoint-parent', V, '--checkpointname', 'c3'), 'c1\n')
        a = ['--address', h.address]
        self.assertEqual(self.complete(['qsnapctl'] + a + ['checkpoint-info', 'ck\\ vm', 'c']), ['c1', 'c2', 'c3'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['checkpoint-list', 'ck\\ vm', '--from', 'c']),
                         ['c1', 'c2', 'c3'])

        # The listings, against the bus.
        # virsh's vshTreePrint: the blank line after the last leaf keeps its indentation.
        self.assertEqual(self.ok('checkpoint-list', V, '--tree'), 'c1\n  |\n  +- c2\n  +- c3\n    \n')
        for option, bit in CHECKPOINT_LIST_FLAGS.items():
            with self.subTest(option=option):
                self.assertEqual(self.ok('checkpoint-list', V, '--' + option, '--name').splitlines(),
                                 self.bus_list(bit))
        self.assertEqual(self.ok('checkpoint-list', V, '--roots', '--name'), 'c1\n')
        self.assertEqual(self.ok('checkpoint-list', V, '--leaves', '--name'), 'c2\nc3\n')
        c1 = h.call(self.dom, D, 'LookupCheckpoint', ('c1',), 's')
        self.assertEqual(self.ok('checkpoint-list', V, '--from', 'c1', '--name').splitlines(),
                         self.names(h.call(c1, C, 'ListChildren', (0,), 't')))
        self.assertEqual(self.ok('checkpoint-list', V, '--from', 'c1', '--descendants', '--tree'),
                         self.ok('checkpoint-list', V, '--tree'))
        table = self.ok('checkpoint-list', V, '--parent', '--size').splitlines()
        self.assertEqual(table[0].split(), ['Name', 'Creation', 'Time', 'Parent', 'Size'])
        self.assertRegex(table[2], r'^ c1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} +- +2(\.0)? MiB$')
        self.assertRegex(table[3], r'^ c2 +.* c1 +1(\.0)? MiB$')
        self.assertRegex(table[4], r'^ c3 +.* c1 +0 B$')

        listing = self.json_of('checkpoint-list', V, '--size')
        self.assertEqual([c['name'] for c in listing], ['c1', 'c2', 'c3'])
        by = {c['name']: c for c in listing}
        self.assertEqual(by['c1']['children'], ['c2', 'c3'])
        self.assertEqual((by['c1']['parent'], by['c2']['parent'], by['c3']['parent']), (None, 'c1', 'c1'))
        self.assertEqual(by['c1']['description'], 'the first')
        self.assertEqual(by['c1']['disks'], [{'disk': 'vda', 'bitmap': 'c1'}])
        self.assertEqual((by['c1']['size'], by['c2']['size'], by['c3']['size']), (2 * MiB, MiB, 0))
        self.assertEqual([c['problems'] for c in listing], [[], [], []])
        self.assertEqual([c['domain'] for c in listing], [V] * 3)
        for c in listing:
            self.assertIsInstance(c['creation_time'], int)
            self.assertIsInstance(c['current'], bool)

        info = self.json_of('checkpoint-info', V, 'c1')
        self.assertEqual((info['name'], info['descendants'], info['children'], info['size']),
                         ('c1', 2, ['c2', 'c3'], 2 * MiB))
        text = self.ok('checkpoint-info', V, 'c1')
        for line in ('Name:           c1', 'Domain:         ck vm', 'Parent:         -', 'Children:       2',
                     'Descendants:    2', 'Disks:          vda (bitmap c1)', 'Usable:         yes'):
            self.assertIn(line + '\n', text)
        self.assertRegex(text, r'\nSize: +2(\.0)? MiB\n')
        self.assertEqual(self.json_of('checkpoint-parent', V, 'c2'), {'name': 'c2', 'parent': 'c1'})
        self.assertEqual(self.json_of('checkpoint-parent', V, 'c1'), {'name': 'c1', 'parent': None})
        out, err = self.fails(1, 'checkpoint-parent', V, 'c1')
        self.assertIn("Checkpoint 'c1' has no parent", err)
        root = ET.fromstring(self.ok('checkpoint-dumpxml', V, 'c1', '--no-domain', '--size'))
        self.assertIsNone(root.find('domain'))
        self.assertEqual([(d.get('name'), d.get('size')) for d in root.findall('disks/disk')], [('vda', str(2 * MiB))])

        # Failures: named, exit 1, nothing changed.
        out, err = self.fails(1, 'checkpoint-info', V, 'nope')
        self.assertNamedError(err, 'NoSuchCheckpoint')
        out, err = self.fails(1, 'checkpoint-create-as', V, 'c1')
        self.assertNamedError(err, 'AlreadyExists')
        out, err = self.fails(1, 'checkpoint-create-as', V, 'cz', '--diskspec', 'vdz')
        self.assertNamedError(err, 'NoSuchDisk')
        self.assertEqual(self.bus_list(0), ['c1', 'c2', 'c3'])

        # Delete: c2 (a leaf), then c1's children, then c1 with its (no longer any) children.
        self.assertEqual(self.ok('checkpoint-delete', V, 'c2'), 'Domain checkpoint c2 deleted\n')
        self.assertEqual(self.json_of('checkpoint-info', V, 'c1')['children'], ['c3'])
        self.assertEqual(self.ok('checkpoint-delete', V, 'c1', '--children-only'),
                         'Domain checkpoint c1 children deleted\n')
        self.assertEqual(self.bus_list(0), ['c1'])
        self.assertEqual(self.ok('checkpoint-delete', V, 'c1', '--children'),
                         'Domain checkpoint c1 and its descendants deleted\n')
        self.assertEqual(h.get_property(self.dom, D, 'Checkpoints'), [])
        self.assertEqual(self.json_of('checkpoint-list', V), [])
        nodes = h.qmp(self.dom, 'query-named-block-nodes', {'flat': True})['return']
        self.assertEqual([b.get('name') for n in nodes for b in n.get('dirty-bitmaps', []) if b.get('name')], [],
                         'the bitmaps are gone from the images')

        # A bitmap removed by hand while the domain is off: shown unusable, with the reason; delete repairs.
        self.ok('stop', V)
        self.ok('checkpoint-create-as', V, 'k')
        r = q.run([q.QEMU_IMG, 'bitmap', '--remove', self.img, 'k'])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.ok('start', V)
        # qsnapd finds the problem once QEMU runs, a moment after Start answered.
        k = h.call(self.dom, D, 'LookupCheckpoint', ('k',), 's')
        self.assertTrue(q.spin(lambda: h.get_property(k, C, 'Problems'), 30), 'the missing bitmap is never noticed')
        info = self.json_of('checkpoint-info', V, 'k')
        self.assertEqual((len(info['problems']), info['size']), (1, None), info)
        text = self.ok('checkpoint-info', V, 'k')
        self.assertIn('\nSize:           - (no usable bitmap)\nUsable:         no\nProblems:       %s\n'
                      % info['problems'][0], text)
        self.assertEqual(self.ok('checkpoint-delete', V, 'k'), 'Domain checkpoint k deleted\n')
        self.assertEqual(self.json_of('checkpoint-list', V), [])


class BackupTest(QsnapctlTest):
    """backup-begin and backup-dumpxml on a running VM whose 32 MiB disk
    holds 0xb1 at 0 and 0xb2 at 8 MiB; qsnapd copies at most
    QSNAPD_TEST_BACKUP_SPEED a second (setUpModule), so a backup lasts a
    few seconds and draws several percentages."""

    def setUp(self):
        super().setUp()
        h = self.h
        self.img = h.create_image('bk.qcow2', '32M')
        q.qemu_io_write_pattern(self.img, 0xb1, 0, 4 * MiB)
        q.qemu_io_write_pattern(self.img, 0xb2, 8 * MiB, 4 * MiB)
        self.ok('define', '-', stdin=q.domain_xml('bk vm', [q.Disk('vda', self.img)]))
        self.dom = h.domain_path('bk vm')
        self.ok('start', 'bk vm')
        self.addCleanup(lambda: (qc('stop', 'bk vm'), qc('undefine', 'bk vm', '--checkpoints-metadata')))

    def assert_same_image(self, target):
        r = q.run([q.QEMU_IMG, 'compare', '-U', self.img, target])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = q.run([q.QEMU_IMG, 'check', '-U', target])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def assert_export_is_disk(self, uri):
        """What an NBD client reads at uri is the disk (the guest wrote nothing since the backup began)."""
        copy = os.path.join(self.h.root, 'pulled.raw')
        r = q.run([q.QEMU_IMG, 'convert', '-f', 'raw', '-O', 'raw', uri, copy])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = q.run([q.QEMU_IMG, 'compare', '-U', '-f', 'raw', copy, self.img])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        os.unlink(copy)

    def test_push_wait_bar_and_ctrl_c(self):
        h = self.h
        rec = h.record_signals(self.dom, J, 'Progress')
        pty = Pty('backup-begin', 'bk vm', '--wait')
        rc = pty.finish()
        text = pty.text()
        self.assertEqual(rc, 0, text)
        # Where it went, then the bar from the Progress signals, then one final line.
        target = re.search(r'^  vda: (/\S+)\r?$', text, re.M).group(1)
        self.assertTrue(target.startswith(self.img + '.'), text)
        self.assertBarFollowsSignals(text, rec, 'Backup')
        self.assertRegex(text, r'\nBackup: completed \(\d+ MiB in \d+:\d\d\)\r?\n$')
        self.assert_same_image(target)
        out, err = self.fails(1, 'backup-dumpxml', 'bk vm')
        self.assertNamedError(err, 'OperationInvalid')

        # Ctrl-C aborts it: canceled, the target qsnapd made is gone.
        dest = os.path.join(h.images_dir, 'bk-aborted.qcow2')
        xml = ("<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='%s'/>"
               "<driver type='qcow2'/></disk></disks></domainbackup>" % dest)
        xml_file = os.path.join(h.root, 'bk-aborted.xml')
        with open(xml_file, 'w') as f:
            f.write(xml)
        pty = Pty('backup-begin', 'bk vm', xml_file, '--wait')
        self.assertTrue(pty.wait_for(r'\] +\d+ %'), pty.text())
        self.assertTrue(os.path.exists(dest))
        pty.ctrl_c()
        rc = pty.finish()
        self.assertEqual(rc, 1, pty.text())
        self.assertIn('Backup: interrupted; the job was aborted and has ended (canceled)', pty.text())
        self.assertFalse(os.path.exists(dest), 'an aborted backup leaves no target')

        # --json: the job and where each disk goes; domjobabort ends it.
        b = json.loads(self.ok('backup-begin', 'bk vm', '--json'))
        self.assertEqual((b['mode'], [d['disk'] for d in b['disks']]), ('push', ['vda']))
        self.assertTrue(b['job'].startswith(self.dom + '/job/') and b['id'].startswith('backup-'), b)
        target = b['disks'][0]['target']
        self.assertTrue(target.startswith(self.img + '.') and os.path.exists(target), b)
        self.assertEqual(h.get_property(b['job'], J, 'Type'), 'backup')
        self.assertEqual(self.ok('domjobabort', 'bk vm'), "Backup of domain 'bk vm' ended\n")
        self.assertTrue(q.spin(lambda: h.get_property(b['job'], J, 'State') == 'canceled', 30))
        self.assertTrue(q.spin(lambda: not os.path.exists(target), 30), 'an aborted backup leaves no target')

    def test_incremental_after_checkpoint(self):
        """A full backup that makes checkpoint c1 (--checkpointxml; --verbose into a pipe: plain lines), 1 MiB
        written, checkpoint-list --size says 1 MiB, an incremental since c1 that makes c2 copies that 1 MiB;
        full <- incremental is the disk."""
        h = self.h
        cp_file = os.path.join(h.root, 'bk-c1.xml')
        with open(cp_file, 'w') as f:
            f.write('<domaincheckpoint><name>c1</name></domaincheckpoint>')
        rc, out, err = qc('backup-begin', 'bk vm', '--checkpointxml', cp_file, '--verbose')
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn('\r', out)
        lines = out.splitlines()
        full = re.match(r'^  vda: (/\S+)$', lines[0]).group(1)
        self.assertEqual(full, self.img + '.c1', 'a push target is named after the new checkpoint')
        self.assertEqual(self.ok('checkpoint-list', 'bk vm', '--name'), 'c1\n')
        self.assertRegex(lines[-1], r'^Backup: completed \(32 MiB in \d+:\d\d\)$')
        self.assertGreaterEqual(len(lines), 4, out)
        for line in lines[1:-1]:
            self.assertRegex(line, r'^Backup: \d+ % \(\d+(\.\d)? ([KM]i)?B of 32 MiB(, \d+(\.\d)? [KM]iB/s)?(, ETA \d+:\d\d)?\)$')
        h.write_pattern_live(self.dom, 'vda', 0xbb, MiB, MiB)
        self.assertRegex(self.ok('checkpoint-list', 'bk vm', '--size').splitlines()[2], r'^ c1 +.* 1(\.0)? MiB$')
        inc = os.path.join(h.images_dir, 'bk-inc.qcow2')
        xml_file = os.path.join(h.root, 'bk-inc.xml')
        with open(xml_file, 'w') as f:
            f.write("<domainbackup mode='push'><incremental>c1</incremental><disks><disk name='vda' type='file'>"
                    "<target file='%s'/><driver type='qcow2'/></disk></disks></domainbackup>" % inc)
        # The target exists: refused (nothing changes) unless --reuse-external.
        r = q.run([q.QEMU_IMG, 'create', '-q', '-f', 'qcow2', inc, '32M'])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out, err = self.fails(1, 'backup-begin', 'bk vm', xml_file, '--wait')
        self.assertNamedError(err, 'AlreadyExists')
        running = [j for j in h.get_property(self.dom, D, 'Jobs')
                   if h.get_property(j, J, 'State') not in ('completed', 'canceled', 'failed')]
        self.assertEqual(running, [], 'a refused backup starts no job')
        rc, out, err = qc('backup-begin', 'bk vm', xml_file, '-', '--wait', '--reuse-external',
                          stdin='<domaincheckpoint><name>c2</name></domaincheckpoint>')
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.json_of('checkpoint-parent', 'bk vm', 'c2'), {'name': 'c2', 'parent': 'c1'})
        self.assertEqual(out.splitlines()[0], '  vda: ' + inc)
        self.assertRegex(out.splitlines()[-1], r'^Backup: completed \(1(\.0)? MiB in \d+:\d\d\)$')
        h.flush_live(self.dom, 'vda')
        r = q.run([q.QEMU_IMG, 'rebase', '-u', '-b', full, '-F', 'qcow2', inc])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assert_same_image(inc)
        out, err = self.fails(1, 'backup-begin', 'bk vm', xml_file.replace('bk-inc', 'no-such'))
        self.assertIn('Failed to read', err)

    def test_two_disks(self):
        """A pull backup of two disks: one URI each; its job's Disk is "" and jobs shows (all)."""
        h = self.h
        disks = [q.Disk('vda', h.create_image('two-a.qcow2', '16M')), q.Disk('vdb', h.create_image('two-b.qcow2', '16M'))]
        self.ok('define', '-', stdin=q.domain_xml('bk two', disks))
        self.addCleanup(lambda: (qc('stop', 'bk two'), qc('undefine', 'bk two')))
        self.ok('start', 'bk two')
        b = json.loads(self.ok('backup-begin', 'bk two', '-', '--json', stdin="<domainbackup mode='pull'/>"))
        self.assertEqual([(d['disk'], d['uri'].split('?')[0]) for d in b['disks']],
                         [('vda', 'nbd+unix:///vda'), ('vdb', 'nbd+unix:///vdb')])
        self.assertEqual([j['disk'] for j in self.json_of('jobs', 'bk two')], [''])
        self.assertRegex(self.ok('jobs', 'bk two').splitlines()[2], r'^ bk two +\(all\) +backup +running ')
        self.assertEqual(self.ok('domjobabort', 'bk two'), "Backup of domain 'bk two' ended\n")

    def test_pull_dumpxml_and_end(self):
        out = self.ok('backup-begin', 'bk vm', '-', stdin="<domainbackup mode='pull'/>")
        lines = out.splitlines()
        self.assertRegex(lines[0], r'^Backup started \(job \S+\)$')
        uri = re.match(r'^  vda: (nbd\+unix:///vda\?socket=/\S+)$', lines[1]).group(1)
        self.assertIn('domjobabort', lines[2])
        root = ET.fromstring(self.ok('backup-dumpxml', 'bk vm'))
        self.assertEqual(root.get('mode'), 'pull')
        self.assertEqual(uri.split('socket=')[1], root.find('server').get('socket'))
        self.assert_export_is_disk(uri)
        out, err = self.fails(1, 'backup-begin', 'bk vm')
        self.assertNamedError(err, 'Busy')
        jobs = self.json_of('jobs', 'bk vm')
        self.assertEqual([(j['type'], j['state'], j['disk']) for j in jobs], [('backup', 'running', 'vda')])
        self.assertRegex(self.ok('jobs', 'bk vm').splitlines()[2], r'^ bk vm +vda +backup +running ')
        self.assertEqual(self.ok('domjobabort', 'bk vm'), "Backup of domain 'bk vm' ended\n")
        out, err = self.fails(1, 'backup-dumpxml', 'bk vm')
        self.assertNamedError(err, 'OperationInvalid')
        out, err = self.fails(1, 'domjobabort', 'bk vm')
        self.assertIn("Domain 'bk vm' has no running backup.", err)

        # Over TCP: the URI names the port qsnapd chose.
        b = json.loads(self.ok('backup-begin', 'bk vm', '-', '--json',
                               stdin="<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1'/></domainbackup>"))
        self.assertEqual((b['mode'], b['disks'][0]['disk'], b['disks'][0]['export']), ('pull', 'vda', 'vda'), b)
        self.assertRegex(b['disks'][0]['uri'], r'^nbd://127\.0\.0\.1:\d+/vda$')
        self.assert_export_is_disk(b['disks'][0]['uri'])
        self.assertEqual(self.ok('domjobabort', 'bk vm'), "Backup of domain 'bk vm' ended\n")

        # Under --wait a pull backup serves until Ctrl-C, which ends it: a success, the socket gone.
        xml_file = os.path.join(self.h.root, 'bk-pull.xml')
        with open(xml_file, 'w') as f:
            f.write("<domainbackup mode='pull'/>")
        pty = Pty('backup-begin', 'bk vm', xml_file, '--wait')
        self.assertTrue(pty.wait_for(r'Ctrl-C, or qsnapctl domjobabort'), pty.text())
        socket_path = re.search(r'socket=(/\S+)\r?\n', pty.text()).group(1)
        self.assertTrue(os.path.exists(socket_path))
        pty.ctrl_c()
        self.assertEqual(pty.finish(), 0, pty.text())
        self.assertIn('Backup: ending it (Ctrl-C again to leave it serving)', pty.text())
        self.assertRegex(pty.text(), r'\nBackup: ended; nothing is served any more \(after \d+:\d\d\)\r?\n$')
        self.assertNotIn('] ', pty.text(), 'no progress bar for a backup that serves')
        self.assertFalse(os.path.exists(socket_path))
        out, err = self.fails(1, 'backup-dumpxml', 'bk vm')
        self.assertNamedError(err, 'OperationInvalid')


# --------------------------------------------------------------------------

class MonitorTest(QsnapctlTest):
    def test_monitor_json(self):
        h = self.h
        img = h.create_image('mon.qcow2', '64M')
        self.ok('define', '-', stdin=q.domain_xml('mon vm', [q.Disk('vda', img)]))
        mon = subprocess.Popen([QSNAPCTL, '--address=' + h.address, 'monitor', 'mon vm', '--json'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for())
        try:
            self.assertIn("Monitoring qsnapd's signals for domain 'mon vm'", mon.stderr.readline())
            self.ok('start', 'mon vm')
            self.ok('snapshot-create-as', 'mon vm', 'm1', '--disk-only')
            self.ok('stop', 'mon vm')
            seen = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = mon.stdout.readline()
                ev = json.loads(line)
                seen.append(ev)
                if ev['member'] == 'PropertiesChanged' and ['State', 'shutoff'] in ev['args'][1]:
                    break
        finally:
            mon.send_signal(signal.SIGINT)
            rc = mon.wait(10)
            mon.stdout.close()
            mon.stderr.close()
        self.assertEqual(rc, 0)
        dom = h.domain_path('mon vm')
        states = [kv[1] for ev in seen if ev['member'] == 'PropertiesChanged' and ev['path'] == dom
                  for kv in ev['args'][1] if kv[0] == 'State']
        self.assertEqual(states, ['running', 'shutoff'])
        self.assertTrue(all(ev['object'] == 'mon vm' for ev in seen if ev['path'] == dom))
        self.assertTrue(all(set(ev) == {'time', 'object', 'path', 'interface', 'member', 'args'} for ev in seen))
        self.ok('undefine', 'mon vm', '--snapshots-metadata')


# --------------------------------------------------------------------------

class CompletionTest(QsnapctlTest):
    """The installed bash completion, sourced into a real bash, with
    COMP_WORDS/COMP_LINE as bash sets them for a partial word."""

    def test_completion(self):
        h = self.h
        img = h.create_image('comp.qcow2', '64M')
        self.ok('define', '-', stdin=q.domain_xml('comp vm', [q.Disk('vda', img), q.Disk('vdb', h.create_image('comp2.qcow2'))]))
        self.ok('snapshot-create-as', 'comp vm', 'cold one')
        self.ok('snapshot-create-as', 'comp vm', 'cold two')
        self.ok('snapshot-create-as', 'comp vm', 'other')
        a = ['--address', self.h.address]
        self.assertEqual(self.complete(['qsnapctl', 'snapshot-l']), ['snapshot-list'])
        self.assertEqual(self.complete(['qsnapctl', 'blockc']), ['blockcommit', 'blockcopy'])
        self.assertEqual(self.complete(['qsnapctl', '--no-a']), ['--no-ask-password'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['start', 'comp']), ['comp\\ vm'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['start', "'comp"]), ['comp vm'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['snapshot-info', 'comp\\ vm', 'co']),
                         ['cold\\ one', 'cold\\ two'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['snapshot-list', '--domain', 'comp\\ vm', '--from', 'o']),
                         ['other'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['blockpull', 'comp\\ vm', 'vd']), ['vda', 'vdb'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['blockcommit', 'comp\\ vm', 'vda', '--piv']), ['--pivot'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['blockcopy', 'comp\\ vm', 'vda', '--format', '']), ['qcow2', 'raw'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['snapshot-list', 'comp\\ vm', '--js']), ['--json'])
        self.assertEqual(self.complete(['qsnapctl'] + a + ['start', 'comp\\ vm', '--js']), [],
                         '--json only where a verb prints data')
        # "--address=unix:path=..." is split by bash at '=' and ':'.
        addr = self.h.address
        words = ['qsnapctl', '--address', '=', addr.split(':', 1)[0], ':', addr.split(':', 1)[1], 'domstate', 'com']
        self.assertEqual(self.complete(words, 'qsnapctl --address=%s domstate com' % addr), ['comp\\ vm'])
        # A file argument: bash's file names.
        xml = os.path.join(self.h.root, 'complete-me.xml')
        open(xml, 'w').close()
        self.assertEqual(self.complete(['qsnapctl', 'define', os.path.join(self.h.root, 'complete-m')]), [xml])
        self.ok('undefine', 'comp vm', '--snapshots-metadata')


def page_source(path):
    with open(path) as f:
        return f.read()


def qsnapd_help():
    r = subprocess.run([os.environ['QSNAPD_BINARY'], '--help'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


class ManPageTest(QsnapctlTest):
    """man renders each page without a warning; qsnapctl(1) names every verb
    and option qsnapctl knows, org.example.Snapshot1(5) every member of
    interfaces/*.xml."""

    def render(self, path):
        r = subprocess.run(['man', '--warnings', '-l', path], capture_output=True, text=True,
                           env=dict(os.environ, LC_ALL='C.UTF-8', MANWIDTH='100', MANPAGER='cat', PAGER='cat'))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, '', 'man warns about %s' % path)
        self.assertGreater(len(r.stdout), 1000)
        return r.stdout

    def test_qsnapd_help_and_page_agree(self):
        """Every option of qsnapd --help is described in qsnapd(8), and
        every option qsnapd(8) describes is in --help."""
        page = re.sub(r'\\f[BIRP]', '', page_source(q.source_path('docs', 'qsnapd.8')).replace('\\-', '-'))
        described = set()
        for head in re.findall(r'\n\.TP\n([^\n]*)', page):
            described |= set(re.findall(r'(--[a-z][a-z-]*)', head))
        helped = set(re.findall(r'^\s+(?:-h )?(--[a-z][a-z-]*)', qsnapd_help(), re.M))
        self.assertGreater(len(helped), 15)
        self.assertEqual(helped - described, set(), 'options of qsnapd --help missing from qsnapd(8)')
        self.assertEqual(described - helped, set(), 'options in qsnapd(8) that qsnapd --help lacks')

    def test_readme_commands(self):
        """Each qsnapctl command README.md and the EXAMPLES of qsnapctl(1)
        show names a verb qsnapctl has and options that verb takes."""
        verbs = [l.split()[0] for l in self.ok('--help').split('\n') if re.match(r'^  [a-z]', l)]
        global_opts = set(re.findall(r'(--[a-z-]+)', self.ok('--help').split('Domains:')[0]))
        man = page_source(q.source_path('docs', 'qsnapctl.1')).replace('\\-', '-')
        examples = man.split('.SH EXAMPLES')[1].split('.SH ')[0]
        lines = page_source(q.source_path('README.md')).split('\n')
        lines += ['    ' + c.strip() for l in examples.split('\n') for c in l.split('&&') if c.strip().startswith('qsnapctl ')]
        self.assertIn('    qsnapctl -H admin@host2 jobs --json', lines)
        shown = 0
        for line in lines:
            m = re.match(r'^ {4}qsnapctl ((?:-\S+ \S+ )*)([a-z][a-z-]*)(.*)', line)
            if not m:
                continue
            shown += 1
            verb = m.group(2)
            self.assertIn(verb, verbs, 'README.md: %s' % line)
            known = set(re.findall(r'^  (--[a-z-]+)', self.ok('help', verb), re.M)) | global_opts
            for opt in re.findall(r'(?:^| )(--[a-z][a-z-]*)', m.group(3).split('#')[0]):
                self.assertIn(opt, known, 'README.md: %s' % line)
        self.assertGreater(shown, 10)

    def test_pages(self):
        page1 = q.source_path('docs', 'qsnapctl.1')
        self.render(page1)
        self.render(q.source_path('docs', 'qsnapd.8'))
        bus_page = os.environ.get('QSNAP_BUS_MAN', '')
        self.assertTrue(os.path.exists(bus_page), 'QSNAP_BUS_MAN=%r is not built' % bus_page)
        text5 = self.render(bus_page)

        with open(page1) as f:
            src = f.read().replace('\\-', '-')
        src = re.sub(r'\\f[BIRP]', '', src)
        verbs = [l.split()[0] for l in self.ok('--help').split('\n') if re.match(r'^  [a-z]', l)]
        self.assertGreater(len(verbs), 30)
        for verb in verbs:
            self.assertRegex(src, r'(^|\n|[ ,])%s([ ,\n])' % re.escape(verb), 'qsnapctl(1) lacks the verb %s' % verb)
            for opt in re.findall(r'^  (--[a-z-]+)', self.ok('help', verb), re.M):
                self.assertTrue(opt in src, 'qsnapctl(1) lacks %s of %s' % (opt, verb))
        for opt in re.findall(r'(--[a-z-]+)', self.ok('--help').split('Domains:')[0]):
            self.assertTrue(opt in src, 'qsnapctl(1) lacks %s' % opt)

        # Each verb's own paragraph (synopsis and text) names every option
        # of its help but the named arguments (given by position) and --json.
        paragraphs = {}
        for m in re.finditer(r'\n\.TP\n([^\n]*)\n(.*?)(?=\n\.(?:TP|SH|PP)\b)', src, re.S):
            if re.match(r'^[a-z][a-z-]+( |$)', m.group(1)):
                for part in re.split(r', (?=[a-z])', m.group(1)):
                    paragraphs[part.split()[0]] = m.group(1) + '\n' + m.group(2)
        for verb in verbs:
            if verb in ('destroy', 'shutdown'):     # described under stop
                self.assertRegex(paragraphs['stop'], r'\b%s DOMAIN\b' % verb)
                continue
            self.assertIn(verb, paragraphs, 'qsnapctl(1) has no paragraph for %s' % verb)
            for opt in set(re.findall(r'^  (--[a-z-]+)', self.ok('help', verb), re.M)) - {
                    '--domain', '--path', '--snapshotname', '--checkpointname', '--json'}:
                self.assertRegex(paragraphs[verb], re.escape(opt) + r'(?![a-z-])',
                                 'the paragraph of %s in qsnapctl(1) lacks %s' % (verb, opt))

        # The reverse: every verb the page describes, and every option in
        # the synopsis of a verb, is one qsnapctl knows for that verb.
        global_opts = set(re.findall(r'(--[a-z-]+)', self.ok('--help').split('Domains:')[0]))
        for m in re.finditer(r'\n\.TP\n([^\n]*)', page_source(page1)):
            head = re.sub(r'\\f[BIRP]', '', m.group(1).replace('\\-', '-'))
            if not re.match(r'^[a-z][a-z-]+( |$)', head):
                continue
            for part in re.split(r', (?=[a-z])', head):
                verb = part.split()[0]
                self.assertIn(verb, verbs, 'qsnapctl(1) describes %s, which qsnapctl --help lacks' % verb)
                known = set(re.findall(r'^  (--[a-z-]+)', self.ok('help', verb), re.M)) | global_opts
                for opt in re.findall(r'(--[a-z][a-z-]*)', part):
                    self.assertIn(opt, known, 'qsnapctl(1) gives %s %s, which qsnapctl help %s lacks' % (verb, opt, verb))

        # The bash completion offers exactly the verbs of --help, and for
        # each verb every option its help names.
        self.assertEqual(sorted(self.complete(['qsnapctl', ''])), sorted(verbs))
        for verb in verbs:
            opts = set(re.findall(r'^  (--[a-z-]+)', self.ok('help', verb), re.M))
            offered = set(self.complete(['qsnapctl', '--address', self.h.address, verb, '--']))
            self.assertEqual(opts - offered, set(), 'completion of %s lacks options' % verb)

        for path in glob.glob(q.source_path('interfaces', '*.xml')):
            root = ET.parse(path).getroot()
            for iface in root.findall('interface'):
                self.assertIn('INTERFACE %s' % iface.get('name'), text5)
                for el in iface:
                    if el.tag in ('method', 'signal', 'property'):
                        self.assertRegex(text5, r'\n {7}%s[( ]' % re.escape(el.get('name')),
                                         '%s.%s missing from org.example.Snapshot1(5)' % (iface.get('name'), el.get('name')))


# --------------------------------------------------------------------------

class RemoteTest(QsnapctlTest):
    """-H root@127.0.0.1:PORT through a real sshd (Debian's openssh-server)
    started here on a free port with a throwaway host key and client key,
    exactly the way sd-bus does it for hostnamectl: ssh from PATH (here a
    wrapper naming our key and known_hosts) runs systemd-stdio-bridge on
    the "remote" host, whose system bus is our private one (sshd's
    ForceCommand adds --bus-path: the bridge does not read the environment)."""

    def setUp(self):
        super().setUp()
        if not os.access('/usr/sbin/sshd', os.X_OK):
            raise AssertionError('/usr/sbin/sshd is missing: apt-get install openssh-server (tools/packages.txt)')
        self.dir = tempfile.mkdtemp(prefix='ssh-', dir=self.h.root)
        d = self.dir
        for key in ('host_key', 'id'):
            subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', os.path.join(d, key)], check=True)
        with open(os.path.join(d, 'id.pub')) as f, open(os.path.join(d, 'authorized_keys'), 'w') as g:
            g.write(f.read())
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        with open(os.path.join(d, 'sshd_config'), 'w') as f:
            f.write('Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\nPidFile %s/sshd.pid\n'
                    'AuthorizedKeysFile %s/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n'
                    'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n'
                    'ForceCommand /usr/bin/systemd-stdio-bridge --bus-path=%s\n' % (self.port, d, d, d, self.h.address))
        with open(os.path.join(d, 'known_hosts'), 'w') as f, open(os.path.join(d, 'host_key.pub')) as k:
            f.write('[127.0.0.1]:%d %s' % (self.port, k.read()))
        os.makedirs(os.path.join(d, 'bin'))
        wrapper = os.path.join(d, 'bin', 'ssh')
        with open(wrapper, 'w') as f:
            f.write('#!/bin/sh\nexec /usr/bin/ssh -F /dev/null -i %s/id -o IdentitiesOnly=yes '
                    '-o UserKnownHostsFile=%s/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes "$@"\n' % (d, d))
        os.chmod(wrapper, 0o755)
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)     # sshd's privilege separation folder
        self.log = open(os.path.join(d, 'sshd.log'), 'w')
        self.sshd = subprocess.Popen(['/usr/sbin/sshd', '-D', '-e', '-f', os.path.join(d, 'sshd_config')],
                                     stdout=self.log, stderr=self.log)
        self.addCleanup(self.stop_sshd)

        def listening():
            if self.sshd.poll() is not None:
                raise AssertionError('sshd exited: %s' % open(os.path.join(d, 'sshd.log')).read())
            with socket.socket() as sock:
                return sock.connect_ex(('127.0.0.1', self.port)) == 0
        self.assertTrue(q.spin(listening, 20), 'sshd does not listen on 127.0.0.1:%d' % self.port)

    def stop_sshd(self):
        self.sshd.terminate()
        self.sshd.wait(10)
        self.log.close()

    def remote(self, *args, stdin=None):
        env = env_for({'PATH': os.path.join(self.dir, 'bin') + ':' + os.environ['PATH']})
        env['DBUS_SYSTEM_BUS_ADDRESS'] = 'unix:path=/nonexistent/not-this-one'   # only the remote side's counts
        return qc('-H', 'root@127.0.0.1:%d' % self.port, *args, stdin=stdin, env=env, address=False)

    def test_host_over_ssh(self):
        img = self.h.create_image('remote.qcow2', '64M')
        rc, out, err = self.remote('define', '-', stdin=q.domain_xml('remote vm', [q.Disk('vda', img)]))
        self.assertEqual((rc, out), (0, "Domain 'remote vm' defined from standard input\n"), err)
        dom = self.h.domain_path('remote vm')
        rc, out, err = self.remote('start', 'remote vm')
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'running')
        rc, out, err = self.remote('snapshot-create-as', 'remote vm', 'far', '--disk-only')
        self.assertEqual(rc, 0, err)
        rc, out, err = self.remote('list', '--json')
        self.assertEqual(rc, 0, err)
        doms = {d['name']: d for d in json.loads(out)}
        self.assertEqual((doms['remote vm']['state'], doms['remote vm']['current_snapshot']), ('running', 'far'))
        rc, out, err = self.remote('domblklist', 'remote vm', '--json')
        self.assertEqual(json.loads(out)[0]['chain'], [img, os.path.join(self.h.images_dir, 'remote.far')])
        rc, out, err = self.remote('stop', 'remote vm')
        self.assertEqual((rc, out), (0, "Domain 'remote vm' stopped\n"), err)
        rc, out, err = self.remote('undefine', 'remote vm')
        self.assertEqual(rc, 1)
        self.assertNamedError(err, 'HasSnapshots')
        self.assertEqual(self.remote('undefine', 'remote vm', '--snapshots-metadata')[0], 0)
        with open(os.path.join(self.dir, 'sshd.log')) as f:
            self.assertIn('Accepted publickey for root from 127.0.0.1', f.read())
        # Nobody on that port: a failure, not a hang.
        env = env_for({'PATH': os.path.join(self.dir, 'bin') + ':' + os.environ['PATH']})
        rc, out, err = qc('-H', 'root@127.0.0.1:1', 'list', env=env, address=False, timeout=60)
        self.assertEqual(rc, 1, out + err)
        self.assertIn('Connection refused', err)          # ssh's own words
        self.assertRegex(err, r'\nerror: ENOTCONN \([^)]+\): ', err)


# --------------------------------------------------------------------------

class PolkitTest(QsnapctlTest):
    """A user without rights: a denial is named (AccessDenied), and where
    polkit would ask for an administrator's password (host-admin is
    auth_admin), --no-ask-password or no terminal gets
    InteractiveAuthorizationRequired at once, with polkit's reason.

    The password prompt itself is tested in tests/test_systemd.sh: polkitd
    matches a terminal agent to a caller through the caller's logind
    session, and only the nspawn container has logind."""

    def test_denials_named_and_no_prompt_without_a_terminal(self):
        h = self.h
        img = h.create_image('pk.qcow2', '64M')
        xml = os.path.join(h.root, 'pk.xml')
        with open(xml, 'w') as f:
            f.write(q.domain_xml('pk vm', [q.Disk('vda', img)]))
        os.chmod(xml, 0o644)
        as_user = ['setpriv'] + q._user_args(q.TEST_USER)
        env = env_for()                     # --system: DBUS_SYSTEM_BUS_ADDRESS is the private bus

        # manage-domains is "no" for users without a session: denied, no prompt.
        self.ok('define', xml)
        pty = Pty('start', 'pk vm', env=env, prefix=as_user, address=False)
        self.assertEqual(pty.finish(), 1, pty.text())
        self.assertIn('error: AccessDenied (polkit did not authorize the call): ', pty.text())
        self.assertEqual(h.get_property(h.domain_path('pk vm'), D, 'State'), 'shutoff')
        self.ok('undefine', 'pk vm')

        # Defining it needs host-admin (auth_admin): polkit would ask.
        pty = Pty('define', xml, '--no-ask-password', env=env, prefix=as_user, address=False)
        self.assertEqual(pty.finish(), 1, pty.text())
        self.assertIn('error: InteractiveAuthorizationRequired (authentication is needed: run on a terminal '
                      'without --no-ask-password, or get a polkit rule): Not authorized: '
                      'org.example.snapshot1.host-admin is needed', pty.text())
        r = subprocess.run(as_user + [QSNAPCTL, 'define', xml], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('error: InteractiveAuthorizationRequired', r.stderr)
        self.assertNotIn('pk vm', self.ok('list', '--all', '--name').splitlines())
        # A rule granting it: the same command works.
        h.grant(q.ACTION_HOST_ADMIN, domain='pk vm')
        r = subprocess.run(as_user + [QSNAPCTL, 'define', xml], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual((r.returncode, r.stdout), (0, "Domain 'pk vm' defined from %s\n" % xml), r.stderr)
        self.ok('undefine', 'pk vm')


# --------------------------------------------------------------------------

class FlagMappingTest(QsnapctlTest):
    """Every flag of the bus API is reached by its named option: each
    command's method call is read off a bus monitor (member, flags, and the
    other arguments), whether qsnapd then accepts the call or refuses it.
    "flag vm" runs (with a throttled pull for the job controls), "off vm" is
    shut off, so most calls are refused and change nothing."""

    def test_options_set_the_flags(self):
        h = self.h
        base = h.create_image('fbase.qcow2', '64M')
        top = h.create_image('ftop.qcow2', '64M', backing=base)
        q.qemu_io_write_pattern(base, 0x11, 0, 32 * MiB)
        self.ok('define', '-', stdin=q.domain_xml('flag vm', [q.Disk('vda', top)]))
        self.ok('define', '-', stdin=q.domain_xml('off vm', [q.Disk('vda', h.create_image('off.qcow2', '64M'))]))
        self.ok('start', 'flag vm')
        self.ok('snapshot-create-as', 'off vm', 'o1')
        self.ok('checkpoint-create-as', 'off vm', 'k1')
        xml, xml_text = os.path.join(h.root, 'flags.xml'), \
            "<domainsnapshot><name>redef</name><creationTime>1</creationTime></domainsnapshot>"
        dest_xml, dest_xml_text = os.path.join(h.root, 'dest.xml'), \
            "<disk type='file'><source file='/nonexistent/d.qcow2'/></disk>"
        # Documents qsnapd refuses (a disk the domain does not have): the calls change nothing.
        cp_xml, cp_xml_text = os.path.join(h.root, 'cp.xml'), \
            "<domaincheckpoint><name>cx</name><disks><disk name='vdz'/></disks></domaincheckpoint>"
        bk_xml, bk_xml_text = os.path.join(h.root, 'bk.xml'), \
            "<domainbackup><disks><disk name='vdz'/></disks></domainbackup>"
        for path, text in ((xml, xml_text), (dest_xml, dest_xml_text), (cp_xml, cp_xml_text), (bk_xml, bk_xml_text)):
            with open(path, 'w') as f:
                f.write(text)
        mon = BusMonitor(["type='method_call',destination='org.example.Snapshot1'"])
        self.addCleanup(mon.close)
        dest = os.path.join(h.images_dir, 'never.qcow2')

        def call_of(args, member):
            start = mon.mark()
            qc(*args)
            return mon.wait_for(lambda m: m.get('member') == member, start=start)['payload']['data']

        F, V = 'flag vm', 'off vm'
        cases = [
            (['undefine', F, '--snapshots-metadata'], 'Undefine', [1]),
            (['undefine', F, '--checkpoints-metadata'], 'Undefine', [2]),
            (['undefine', F], 'Undefine', [0]),
            (['start', F, '--paused'], 'Start', [1]),
            (['start', F], 'Start', [0]),
            (['stop', V, '--graceful'], 'Stop', [1]),
            (['shutdown', V], 'Stop', [1]),
            (['destroy', V], 'Stop', [0]),
            (['suspend', V], 'Pause', []),
            (['resume', V], 'Resume', []),
            (['dumpxml', F, '--security-info'], 'GetXMLDesc', [1]),
            (['dumpxml', F, '--inactive'], 'GetXMLDesc', [2]),
            (['qemu-monitor-command', F, '--hmp', 'info', 'status'], 'QemuMonitorCommand', ['info status', 1]),
            (['qemu-monitor-command', F, '{"execute":"query-status"}'], 'QemuMonitorCommand',
             ['{"execute":"query-status"}', 0]),
            (['snapshot-create', V, xml, '--redefine', '--current', '--validate'], 'CreateSnapshot',
             [xml_text, 1 | 2 | 512]),
            (['snapshot-create-as', V, 'x', '--no-metadata', '--halt', '--disk-only', '--reuse-external',
              '--diskspec', 'vdz'], 'CreateSnapshot', [None, 4 | 8 | 16 | 32]),
            (['snapshot-create-as', V, 'x', '--quiesce', '--atomic', '--live', '--diskspec', 'vdz'],
             'CreateSnapshot', [None, 64 | 128 | 256]),
            (['snapshot-dumpxml', V, 'o1', '--security-info'], 'GetXMLDesc', [1]),
            (['snapshot-current', V, '--security-info'], 'GetXMLDesc', [1]),
            (['snapshot-revert', V, 'o1', '--running', '--paused', '--force'], 'Revert', [7]),
            (['snapshot-check-revert', V, 'o1', '--running', '--force'], 'CheckRevert', [5]),
            (['snapshot-check-revert', V, 'o1', '--paused'], 'CheckRevert', [2]),
            (['snapshot-delete', V, 'o1', '--children', '--children-only', '--metadata'], 'Delete', [7]),
            (['snapshot-check-delete', V, 'o1', '--metadata'], 'CheckDelete', [2]),
            (['snapshot-check-delete', V, 'o1', '--children'], 'CheckDelete', [1]),
            (['snapshot-check-delete', V, 'o1', '--children-only'], 'CheckDelete', [4]),
            (['snapshot-list', V, '--from', 'o1', '--descendants', '--leaves', '--internal'], 'ListChildren',
             [1 | 4 | 256]),
            (['checkpoint-create', V, cp_xml, '--redefine', '--redefine-validate', '--quiesce'], 'CreateCheckpoint',
             [cp_xml_text, 1 | 4 | 2]),
            (['checkpoint-create', V, cp_xml], 'CreateCheckpoint', [cp_xml_text, 0]),
            (['checkpoint-create-as', V, 'cx', '--quiesce', '--diskspec', 'vdz'], 'CreateCheckpoint', [None, 2]),
            (['checkpoint-create-as', V, 'cx', '--redefine', '--diskspec', 'vdz'], 'CreateCheckpoint', [None, 1]),
            (['backup-begin', V, bk_xml, cp_xml, '--reuse-external'], 'BackupBegin', [bk_xml_text, cp_xml_text, 1]),
            (['backup-begin', V, bk_xml], 'BackupBegin', [bk_xml_text, '', 0]),
            (['backup-begin', V, bk_xml, '--quiesce'], 'BackupBegin', [bk_xml_text, '', 2]),
            (['backup-begin', V, '--checkpointxml', cp_xml], 'BackupBegin', ['<domainbackup/>', cp_xml_text, 0]),
            (['backup-dumpxml', V], 'BackupGetXMLDesc', []),
            (['checkpoint-dumpxml', V, 'k1', '--security-info'], 'GetXMLDesc', [1]),
            (['checkpoint-dumpxml', V, 'k1', '--no-domain', '--size'], 'GetXMLDesc', [2 | 4]),
            (['checkpoint-delete', V, 'k1', '--children', '--children-only', '--metadata'], 'Delete', [7]),
            (['checkpoint-list', V, '--from', 'k1', '--descendants', '--leaves', '--topological'], 'ListChildren',
             [1 | 4 | 2]),
            (['blockpull', V, 'vda', '--bandwidth', '1.5M'], 'BlockPull', ['vda', 1572864, 0]),
            (['blockpull', V, 'vda', '--base', 'vda[1]', '--keep-relative'], 'BlockRebase', ['vda', 'vda[1]', 0, 16]),
            (['blockrebase', V, 'vda', '--base', dest, '--copy', '--shallow', '--reuse-external', '--copy-raw'],
             'BlockRebase', ['vda', dest, 0, 8 | 1 | 2 | 4]),
            (['blockrebase', V, 'vda', '--base', 'vda[1]', '--keep-relative', '--bandwidth', '200MiB/s'],
             'BlockRebase', ['vda', 'vda[1]', 200 * MiB, 16]),
            (['blockcommit', V, 'vda', '--shallow', '--delete', '--keep-relative', '--top', 'vda[1]'], 'BlockCommit',
             ['vda', '', 'vda[1]', 0, 1 | 2 | 8]),
            (['blockcommit', V, 'vda', '--active', '--base', 'vda[1]', '--bandwidth', '1G'], 'BlockCommit',
             ['vda', 'vda[1]', '', 1 << 30, 4]),
            (['blockcopy', V, 'vda', dest, '--shallow', '--reuse-external', '--transient-job', '--synchronous-writes'],
             'BlockCopy', ['vda', "<disk type='file'><source file='%s'/></disk>" % dest, 0, 1 | 2 | 4 | 8]),
            (['blockcopy', V, 'vda', '--dest', dest, '--format', 'raw'], 'BlockCopy',
             ['vda', "<disk type='file'><driver type='raw'/><source file='%s'/></disk>" % dest, 0, 0]),
            (['blockcopy', V, 'vda', '--xml', dest_xml], 'BlockCopy', ['vda', dest_xml_text, 0, 0]),
        ]
        for args, member, expect in cases:
            with self.subTest(args=args):
                data = call_of(args, member)
                if member in ('CreateSnapshot', 'CreateCheckpoint') and expect[0] is None:
                    expect = [data[0]] + expect[1:]
                self.assertEqual(data[len(data) - len(expect):] if member in ('Undefine', 'Start', 'Stop')
                                 else data, expect)
        for bit, name in LIST_FLAGS.items():
            with self.subTest(flag=bit):
                self.assertEqual(call_of(['snapshot-list', V, '--' + bit, '--name'], 'ListSnapshots'), [name])
        for option, bit in CHECKPOINT_LIST_FLAGS.items():
            with self.subTest(checkpoint_list=option):
                self.assertEqual(call_of(['checkpoint-list', V, '--' + option, '--name'], 'ListCheckpoints'), [bit])

        # The job controls, on a throttled pull of "flag vm".
        self.ok('blockpull', F, 'vda', '--bandwidth', '1M')
        for args, member, expect in [
                (['blockjob', F, 'vda', '--bandwidth', '2MiB/s'], 'SetSpeed', [2 * MiB]),
                (['blockjob', F, 'vda', '--pause'], 'Pause', []),
                (['blockjob', F, 'vda', '--resume'], 'Resume', []),
                (['blockjob', F, 'vda', '--pivot'], 'Pivot', []),
                (['blockjob', F, 'vda', '--abort', '--pivot'], 'Abort', [2]),
                (['blockjob', F, 'vda', '--abort', '--async'], 'Abort', [1])]:
            with self.subTest(args=args):
                self.assertEqual(call_of(args, member), expect)
        self.ok('stop', F)
        self.ok('undefine', F)
        self.assertEqual([last_name(p) for p in h.get_property(h.domain_path(V), D, 'Checkpoints')], ['k1'],
                         'the refused calls changed nothing')
        self.ok('undefine', V, '--snapshots-metadata', '--checkpoints-metadata')

if __name__ == '__main__':
    q.main()
