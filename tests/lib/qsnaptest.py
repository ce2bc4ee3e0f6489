# SPDX-License-Identifier: LGPL-2.1-or-later
"""End-to-end harness for qsnapd: a private system bus, the real polkitd,
the build tree's qsnapd, and helpers for clients, signals, other uids,
images and QEMU.

Run by Debian's /usr/bin/python3 as root (stdlib + gi.repository only).
A test file is a plain unittest script:

    import unittest, qsnaptest

    class DomainTest(qsnaptest.QsnapTestCase):
        def test_define(self):
            h = self.h                              # started Harness
            img = h.create_image('a.qcow2')
            path = h.define_domain('a', [qsnaptest.Disk('vda', img)])
            self.assertEqual(h.get_property(path, qsnaptest.DOMAIN_IFACE, 'State'), 'shutoff')
            with self.assertDBusError(qsnaptest.ERROR_PREFIX + 'NoSuchDomain'):
                h.call(qsnaptest.MANAGER_PATH, qsnaptest.MANAGER_IFACE, 'GetDomain', ('b',), '(s)')

    if __name__ == '__main__':
        qsnaptest.main()

Everything a Harness starts or installs is undone by Harness.stop(), which
QsnapTestCase registers as a cleanup, so it runs when a test fails too; on
failure the logs of qsnapd, the bus (and polkitd) and QEMU are printed first.
Set QSNAPTEST_KEEP=1 to keep the temporary directory for a post-mortem.

QSNAPD_WRAPPER="valgrind --leak-check=full …" runs every qsnapd the
harness starts (directly or by bus activation) under that command
(tools/valgrind.sh). Under a wrapper every harness timeout is multiplied
by QSNAPTEST_TIMEOUT_FACTOR (default 10; 1 without a wrapper).

Every D-Bus error a call of our methods answers (Client.call, call_async,
gdbus_as) is noted: a QsnapTestCase fails when one of ours, or AccessDenied
or InteractiveAuthorizationRequired, is not in that method's Errors: list
in interfaces/, or when tests/errors_matrix.py names the test for an error
it did not receive (note_error()).

Files outside the temporary directory (the polkit action file, the rules
files, the qsnaptest user) are shared with any other harness running on the
host at the same time: a shared flock on /run/lock/qsnaptest.lock is held
while they are in use, and the last harness out removes them.
"""

import array
import atexit
import collections
import contextlib
import fcntl
import glob
import grp
import json
import os
import pwd
import re
import shutil
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.sax.saxutils

import gi

import interface_docs

gi.require_version('Gio', '2.0')
gi.require_version('GLib', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

BUS_NAME = 'org.example.Snapshot1'
MANAGER_PATH = '/org/example/Snapshot1'
MANAGER_IFACE = 'org.example.Snapshot1.Manager'
DOMAIN_IFACE = 'org.example.Snapshot1.Domain'
SNAPSHOT_IFACE = 'org.example.Snapshot1.Snapshot'
CHECKPOINT_IFACE = 'org.example.Snapshot1.Checkpoint'
JOB_IFACE = 'org.example.BlockJob1'
PROPERTIES_IFACE = 'org.freedesktop.DBus.Properties'
OBJECT_MANAGER_IFACE = 'org.freedesktop.DBus.ObjectManager'
ERROR_PREFIX = 'org.example.Snapshot1.Error.'
ACCESS_DENIED = 'org.freedesktop.DBus.Error.AccessDenied'
INTERACTIVE_AUTH_REQUIRED = 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired'

ACTION_MANAGE_DOMAINS = 'org.example.snapshot1.manage-domains'
ACTION_MANAGE_SNAPSHOTS = 'org.example.snapshot1.manage-snapshots'
ACTION_BLOCK_JOBS = 'org.example.snapshot1.block-jobs'
ACTION_BACKUP = 'org.example.snapshot1.backup'
ACTION_READ_SECURE = 'org.example.snapshot1.read-secure'
ACTION_HOST_ADMIN = 'org.example.snapshot1.host-admin'
ALL_ACTIONS = (ACTION_MANAGE_DOMAINS, ACTION_MANAGE_SNAPSHOTS, ACTION_BLOCK_JOBS,
               ACTION_BACKUP, ACTION_READ_SECURE, ACTION_HOST_ADMIN)

POLKIT_NAME = 'org.freedesktop.PolicyKit1'
POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority'
POLKIT_IFACE = 'org.freedesktop.PolicyKit1.Authority'

NOBODY_UID = 65534
NOBODY_GID = 65534
TEST_USER = 'qsnaptest'    # a real user, member of TEST_GROUP in /etc/group
TEST_GROUP = 'qsnaptest'
_TEST_USER_GECOS = 'qsnapd test user (tests/lib/qsnaptest.py)'

QEMU_SYSTEM = '/usr/bin/qemu-system-x86_64'
QEMU_IMG = '/usr/bin/qemu-img'
QEMU_IO = '/usr/bin/qemu-io'
POLKITD = '/usr/lib/polkit-1/polkitd'

POLKIT_ACTIONS_DIR = '/usr/share/polkit-1/actions'
POLKIT_RULES_DIR = '/etc/polkit-1/rules.d'
_ACTION_FILE = os.path.join(POLKIT_ACTIONS_DIR, 'org.example.snapshot1.policy')
_RULES_PREFIX = '10-qsnap-test-'
_HOST_LOCK = '/run/lock/qsnaptest.lock'

_DAEMON_NAME_TIMEOUT = 20.0
_START_MARK = '[qsnaptest]'


def source_root():
    """The project's source tree: $QSNAPD_SOURCE_ROOT (set by meson), or
    two levels above this file."""
    root = os.environ.get('QSNAPD_SOURCE_ROOT')
    if root:
        return root
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def source_path(*parts):
    return os.path.join(source_root(), *parts)


def qsnapd_binary():
    """The build tree's qsnapd, from $QSNAPD_BINARY (set by meson)."""
    return os.environ.get('QSNAPD_BINARY', '')


def qsnapd_wrapper():
    """$QSNAPD_WRAPPER split as a shell would: the command every qsnapd
    runs under (e.g. valgrind), or []."""
    return shlex.split(os.environ.get('QSNAPD_WRAPPER', ''))


def qsnapd_command():
    """The argv that starts the build tree's qsnapd (under the wrapper)."""
    return qsnapd_wrapper() + [qsnapd_binary()]


# A wrapper like valgrind makes qsnapd 10-50 times slower: every timeout of
# the harness (spin(), calls, daemon start and stop) is scaled by this.
TIMEOUT_FACTOR = float(os.environ.get('QSNAPTEST_TIMEOUT_FACTOR') or (10 if qsnapd_wrapper() else 1))


def kvm_works(user=None):
    """True when /dev/kvm can be opened read-write (then domains use
    type='kvm', else TCG with type='qemu'); by user (a name) when given."""
    if user:
        return subprocess.run(['setpriv'] + _user_args(user) + ['test', '-r', '/dev/kvm', '-a', '-w', '/dev/kvm'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    try:
        os.close(os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


QEMU_USER = 'qsnap-qemu'


def ensure_qemu_user():
    """QEMU's user as units/qsnapd.sysusers makes it (systemd-sysusers with
    the source tree's file), when this host has none yet."""
    try:
        pwd.getpwnam(QEMU_USER)
        return
    except KeyError:
        pass
    conf = os.path.join(os.environ.get('QSNAPD_SOURCE_ROOT') or os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), 'units', 'qsnapd.sysusers')
    r = subprocess.run(['systemd-sysusers', conf], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('systemd-sysusers %s failed: %s' % (conf, r.stderr.strip()))
    pwd.getpwnam(QEMU_USER)


def check_requirements(daemon=True):
    """Raises RuntimeError naming everything the e2e tests need and lack.
    A missing requirement is a failure, never a skip."""
    problems = []
    if os.geteuid() != 0:
        problems.append('not running as root (the e2e tests need uid 0)')
    for prog in ('dbus-daemon', 'setpriv', 'busctl', 'gdbus', 'useradd', 'groupadd', 'userdel',
                 'groupdel'):
        if not shutil.which(prog):
            problems.append('%s not found in PATH' % prog)
    for path in (POLKITD, QEMU_SYSTEM, QEMU_IMG, QEMU_IO):
        if not os.access(path, os.X_OK):
            problems.append('%s is missing' % path)
    if not os.path.exists('/usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service'):
        problems.append('polkitd has no D-Bus activation file (install polkitd)')
    if not os.path.isdir(POLKIT_RULES_DIR):
        problems.append('%s is missing (install polkitd)' % POLKIT_RULES_DIR)
    for name in ('org.example.Snapshot1.conf', 'org.example.snapshot1.policy'):
        if not os.path.exists(source_path('policy', name)):
            problems.append('policy/%s not found under the source root %s (set QSNAPD_SOURCE_ROOT)'
                            % (name, source_root()))
    if daemon:
        binary = qsnapd_binary()
        if not binary:
            problems.append('QSNAPD_BINARY is not set (run the test through meson test)')
        elif not os.access(binary, os.X_OK):
            problems.append('qsnapd is not built: %s does not exist or is not executable' % binary)
        wrapper = qsnapd_wrapper()
        if wrapper and not shutil.which(wrapper[0]):
            problems.append('QSNAPD_WRAPPER names %s, which is not installed' % wrapper[0])
    if problems:
        raise RuntimeError('e2e requirements missing:\n  ' + '\n  '.join(problems))


# --------------------------------------------------------------------------
# Processes

def _proc_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return None


def _proc_stat(pid):
    """(state, ppid, starttime) of pid, or None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(')') + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid):
    """Running, not a zombie (zombies of our own Popen children are reaped
    by their Popen objects; never waitpid(-1): it would steal their status)."""
    st = _proc_stat(pid)
    return st is not None and st[0] not in ('Z', 'X')


def _proc_uid(pid):
    """The real uid of pid (from status: /proc/PID is owned by root while a
    process that changed uid is not dumpable)."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def _wait_gone(pids, timeout):
    """The pids still alive after timeout seconds ([] as soon as all are
    gone). Woken by each process's exit (a pidfd is readable once its
    process has exited, zombie or reaped), not by a polling interval: the
    harness waits for exits at every teardown and restart."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    fds = {}
    for p in pids:
        with contextlib.suppress(OSError):    # already gone, or no pidfd: _alive() decides
            fds[p] = os.pidfd_open(p)

    def gone(p):
        if p in fds:
            return bool(select.select([fds[p]], [], [], 0)[0])
        return not _alive(p)
    try:
        while True:
            left = [p for p in pids if not gone(p)]
            now = time.monotonic()
            if not left or now >= deadline:
                return left
            watched = [fds[p] for p in left if p in fds]
            # Without a pidfd for one of them: look again every 50 ms.
            select.select(watched, [], [], min(deadline - now, 0.05 if len(watched) < len(left) else 1.0))
    finally:
        for fd in fds.values():
            os.close(fd)


def _kill_pids(pids, timeout=5.0):
    """SIGTERM, then SIGKILL what is still alive after timeout. Reaps our
    own children. Returns the pids that needed SIGKILL."""
    pids = [p for p in set(pids) if p > 1 and p != os.getpid()]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = _wait_gone(pids, timeout)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        _wait_gone(left, 5.0)
    return left


def _holds_file_in(pid, text):
    """pid has a descriptor open on a path containing text (a QEMU of ours
    is handed its images as descriptors: its command line names none)."""
    fd_dir = '/proc/%d/fd' % pid
    try:
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if text in os.readlink(os.path.join(fd_dir, fd)):
                    return True
    except OSError:
        pass
    return False


def _pids_mentioning(text, exclude=()):
    """Processes whose command line contains text (our temp dir), or that
    hold a file below it open: the by-pid equivalent of pkill -f."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == os.getpid() or pid in exclude:
            continue
        cmd = _proc_cmdline(pid)
        if cmd and (text in cmd or _holds_file_in(pid, text)) and _alive(pid):
            found.append(pid)
    return found


def _user_args(user):
    """setpriv arguments for user: a name, or a uid (65534 = nobody)."""
    try:
        pw = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        if isinstance(user, int):
            return ['--reuid=%d' % user, '--regid=%d' % user, '--clear-groups']
        raise
    # --init-groups: the supplementary groups NSS gives the user, as polkit sees them.
    return ['--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid, '--init-groups']


def run(argv, check=False, timeout=120, **kw):
    """subprocess.run with text output captured; returns CompletedProcess."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, check=check, stdin=subprocess.DEVNULL, **kw)


# --------------------------------------------------------------------------
# Host-wide files: polkit action, rules files, the test user

def _install_file_atomic(src, dst, mode=0o644):
    tmp = '%s.tmp-%d' % (dst, os.getpid())
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.rename(tmp, dst)


def _write_file_atomic(dst, text, mode=0o644):
    # The temporary name does not end in .rules/.service: polkitd and
    # dbus-daemon ignore it.
    tmp = '%s.tmp-%d' % (dst, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, dst)


class _HostSetup:
    """What must live outside our temp dir while tests run: the polkit
    action file, the qsnaptest group and user. Shared by all harnesses on
    the host through a flock; the last one out removes them."""

    def __init__(self):
        self._fd = None

    def acquire(self):
        fd = os.open(_HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)    # waits while another run cleans up
        self._fd = fd
        # Overwrite unconditionally: a crashed run may have left an old copy.
        _install_file_atomic(source_path('policy', 'org.example.snapshot1.policy'), _ACTION_FILE)
        self._remove_stale_rules()
        self._ensure_test_user()

    def release(self):
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return    # another harness still uses them
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_ACTION_FILE)
            self._remove_stale_rules()
            self._remove_test_user()
        finally:
            os.close(fd)

    @staticmethod
    def _remove_stale_rules():
        for path in glob.glob(os.path.join(POLKIT_RULES_DIR, _RULES_PREFIX + '*')):
            m = re.match(r'(\d+)-', os.path.basename(path)[len(_RULES_PREFIX):])
            if m and not _alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    @staticmethod
    def _ensure_test_user():
        try:
            grp.getgrnam(TEST_GROUP)
        except KeyError:
            r = run(['groupadd', '--system', TEST_GROUP])
            if r.returncode not in (0, 9):    # 9: created meanwhile by another run
                raise RuntimeError('groupadd %s failed: %s' % (TEST_GROUP, r.stderr.strip()))
        try:
            pwd.getpwnam(TEST_USER)
        except KeyError:
            # A real supplementary member too: polkit's isInGroup() asks NSS.
            r = run(['useradd', '--system', '--gid', TEST_GROUP, '--groups', TEST_GROUP,
                     '--no-create-home', '--home-dir', '/nonexistent',
                     '--shell', '/usr/sbin/nologin', '--comment', _TEST_USER_GECOS, TEST_USER])
            if r.returncode not in (0, 9):
                raise RuntimeError('useradd %s failed: %s' % (TEST_USER, r.stderr.strip()))
        if TEST_USER not in grp.getgrnam(TEST_GROUP).gr_mem:
            raise RuntimeError('user %s exists but is not a member of group %s in /etc/group'
                               % (TEST_USER, TEST_GROUP))

    @staticmethod
    def _remove_test_user():
        try:
            pw = pwd.getpwnam(TEST_USER)
        except KeyError:
            return
        if pw.pw_gecos != _TEST_USER_GECOS:
            return    # not ours
        run(['userdel', TEST_USER])
        with contextlib.suppress(KeyError):
            grp.getgrnam(TEST_GROUP)
            run(['groupdel', TEST_GROUP])


# --------------------------------------------------------------------------
# D-Bus client

class DBusCallError(Exception):
    """A failed call. name is the D-Bus error name (remote is False for
    errors raised locally, e.g. a timeout: name is then
    org.freedesktop.DBus.Error.Timeout or ...Failed)."""

    def __init__(self, name, message, remote=True, call=''):
        super().__init__('%s: %s%s' % (name, message, (' (in %s)' % call) if call else ''))
        self.name = name
        self.message = message
        self.remote = remote


class HmpError(RuntimeError):
    """An HMP command QEMU answered with an error text (reply): QEMU's own
    refusal, not a failed D-Bus call."""

    def __init__(self, command, reply):
        super().__init__('HMP %s: %s' % (command, reply))
        self.command = command
        self.reply = reply


# --------------------------------------------------------------------------
# Errors received: documented? provoked as tests/errors_matrix.py says?

OUR_INTERFACES = (MANAGER_IFACE, DOMAIN_IFACE, SNAPSHOT_IFACE, CHECKPOINT_IFACE, JOB_IFACE)
_CHECKED_STANDARD_ERRORS = (ACCESS_DENIED, INTERACTIVE_AUTH_REQUIRED)
GENERIC_FAILED = 'org.freedesktop.DBus.Error.Failed'
ERRORS_SEEN_ENV = 'QSNAPTEST_ERRORS_SEEN'

_errors = {'test': None, 'seen': [], 'undocumented': []}


def note_error(interface, method, name):
    """A call of interface.method answered with the D-Bus error name.
    Every test's errors are checked when it ends (QsnapTestCase): an error
    of ours (org.example.Snapshot1.Error.*, AccessDenied,
    InteractiveAuthorizationRequired) that interfaces/ does not document
    for that method fails the test, and so does a row of
    tests/errors_matrix.py naming this test for an error it did not
    receive. With $QSNAPTEST_ERRORS_SEEN set, each error is also appended
    to that file as a JSON line (tests/errors_matrix.py --suggest reads it)."""
    if interface not in OUR_INTERFACES:
        return
    _errors['seen'].append((interface, method, name))
    if name == GENERIC_FAILED or name.startswith('System.Error.'):
        # sd-bus's name for a bare errno or an unnamed failure: every
        # refusal of ours must carry a named error (DESIGN §7).
        _errors['undocumented'].append('%s.%s answered the unnamed %s' % (interface, method, name))
    elif name.startswith(ERROR_PREFIX) or name in _CHECKED_STANDARD_ERRORS:
        documented = interface_docs.documented(interface, method)
        if documented is not None and name not in documented:
            _errors['undocumented'].append('%s.%s answered %s, which interfaces/ does not document for it'
                                           % (interface, method, name))
    seen_file = os.environ.get(ERRORS_SEEN_ENV)
    if seen_file:
        with open(seen_file, 'a') as f:
            f.write(json.dumps({'test': _errors['test'], 'interface': interface, 'method': method,
                                'error': name}) + '\n')


def _gdbus_call_error(argv, rc, err):
    """note_error() for a `gdbus call` run as another user."""
    if rc == 0 or not argv or argv[0] != 'call':
        return
    m = re.search(r'GDBus\.Error:([A-Za-z0-9_.]+):', err)
    if not m or '--method' not in argv:
        return
    iface, _, method = argv[argv.index('--method') + 1].rpartition('.')
    note_error(iface, method, m.group(1))


def _matrix():
    """tests/errors_matrix.py's MATRIX, loaded once (None outside a source tree)."""
    if 'matrix' not in _errors:
        import importlib.util
        path = source_path('tests', 'errors_matrix.py')
        _errors['matrix'] = None
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location('errors_matrix', path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _errors['matrix'] = module
    return _errors['matrix']


def _begin_test(test_id):
    _errors.update(test=test_id, seen=[], undocumented=[])


def _end_test(test_id):
    """The problems with the errors test_id received (see note_error)."""
    problems = list(_errors['undocumented'])
    matrix = _matrix()
    if matrix is not None:
        seen = {(interface_docs.short_interface(i) + '.' + m, interface_docs.short_name(e))
                for i, m, e in _errors['seen']}
        for method, error in matrix.rows_of_test(test_id):
            if (method, error) not in seen:
                problems.append('tests/errors_matrix.py says this test provokes %s -> %s, but no call of %s '
                                'answered %s here' % (method, error, method, error))
    _errors.update(test=None, seen=[], undocumented=[])
    return problems


def _convert_error(e, call, interface=None, method=None):
    name = Gio.DBusError.get_remote_error(e)
    if name and interface:
        note_error(interface, method, name)
    if name:
        # strip_remote_error() would strip a copy: PyGObject hands C a new
        # GError. Drop the "GDBus.Error:<name>: " prefix here.
        message = e.message
        prefix = 'GDBus.Error:%s: ' % name
        if message.startswith(prefix):
            message = message[len(prefix):]
        return DBusCallError(name, message, True, call)
    if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
        return DBusCallError('org.freedesktop.DBus.Error.Timeout', e.message, False, call)
    return DBusCallError('org.freedesktop.DBus.Error.Failed', e.message, False, call)


def _unpack(result):
    values = result.unpack() if result is not None else ()
    if len(values) == 0:
        return None
    if len(values) == 1:
        return values[0]
    return values


def _as_variant(args, sig):
    if args is None:
        return None
    if isinstance(args, GLib.Variant):
        return args
    if sig is None:
        raise TypeError('pass a GLib.Variant or a signature, e.g. sig="(st)"')
    if not sig.startswith('('):
        sig = '(%s)' % sig
    return GLib.Variant(sig, tuple(args))


def spin(predicate, timeout):
    """Iterates the default GLib main context (where signals and async
    replies are dispatched) until predicate() returns a true value, which
    is returned; None after timeout seconds."""
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        while ctx.iteration(False):
            pass
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def wait_until(predicate, timeout, what):
    """spin() that cannot be ignored: the predicate's true value, or
    AssertionError naming what did not happen within timeout seconds."""
    value = spin(predicate, timeout)
    if not value:
        raise AssertionError('%s: not so within %.0f s' % (what, timeout))
    return value


class PendingCall:
    """An asynchronous call; wait() returns its unpacked result or raises."""

    def __init__(self, conn, dest, path, iface, method, args, reply_sig, flags, timeout, what):
        self._done = False
        self._result = None
        self._error = None
        self._what = what
        self._timeout = timeout
        self._interface, self._method = iface, method
        conn.call(dest, path, iface, method, args, reply_sig, flags, int(timeout * TIMEOUT_FACTOR * 1000), None,
                  self._finish)

    def _finish(self, conn, res):
        try:
            self._result = conn.call_finish(res)
        except GLib.Error as e:
            self._error = _convert_error(e, self._what, self._interface, self._method)
        self._done = True

    def done(self):
        spin(lambda: True, 0)
        return self._done

    def wait(self, timeout=None):
        if not spin(lambda: self._done, self._timeout + 5 if timeout is None else timeout):
            raise DBusCallError('org.freedesktop.DBus.Error.Timeout', 'no reply', False, self._what)
        if self._error:
            raise self._error
        return _unpack(self._result)


Signal = collections.namedtuple('Signal', 'sender path interface member args')


class SignalRecorder:
    """Records every signal whose object path is path_prefix or below it
    (default: the daemon's whole tree), from whichever connection owns
    the daemon's name at the time (so it survives daemon restarts).
    records is the list of Signal tuples, args unpacked."""

    def __init__(self, client, path_prefix=MANAGER_PATH, interface=None, member=None):
        self.records = []
        self._client = client
        self._prefix = path_prefix.rstrip('/') or '/'
        self._id = client.conn.signal_subscribe(None, interface, member, None, None,
                                                 Gio.DBusSignalFlags.NONE, self._on_signal)
        client.sync()    # AddMatch is processed before anything we send next

    def _on_signal(self, conn, sender, path, interface, member, params):
        if self._prefix != '/' and path != self._prefix and not path.startswith(self._prefix + '/'):
            return
        self.records.append(Signal(sender, path, interface, member, params.unpack()))

    def close(self):
        if self._id is not None:
            self._client.conn.signal_unsubscribe(self._id)
            self._id = None

    def clear(self):
        spin(lambda: True, 0)
        self.records.clear()

    def mark(self):
        """The current position, to pass as start= to wait_for()."""
        spin(lambda: True, 0)
        return len(self.records)

    def wait_for(self, predicate, timeout=10.0, start=0):
        """The first recorded Signal at index >= start for which
        predicate(signal) is true; AssertionError after timeout."""
        def find():
            for s in self.records[start:]:
                if predicate(s):
                    return s
            return None
        found = spin(find, timeout)
        if not found:
            raise AssertionError('no matching signal within %.1f s; recorded since %d:\n  %s'
                                 % (timeout, start, '\n  '.join(map(repr, self.records[start:])) or '(none)'))
        return found

    def wait_for_signal(self, member, path=None, interface=None, timeout=10.0, start=0):
        return self.wait_for(lambda s: s.member == member
                             and (path is None or s.path == path)
                             and (interface is None or s.interface == interface),
                             timeout, start)

    def wait_for_property(self, path, name, value=None, interface=None, timeout=10.0, start=0):
        """The first PropertiesChanged on path carrying name (with the given
        value, or a value for which value(v) is true when value is callable;
        any value when None). Returns the value."""
        def pred(s):
            if s.member != 'PropertiesChanged' or s.path != path or s.interface != PROPERTIES_IFACE:
                return False
            iface, changed, _ = s.args
            if interface is not None and iface != interface:
                return False
            if name not in changed:
                return False
            v = changed[name]
            return value is None or (value(v) if callable(value) else v == value)
        return self.wait_for(pred, timeout, start).args[1][name]

    def property_values(self, path, name):
        """Every value of property name that PropertiesChanged carried for path, in order."""
        spin(lambda: True, 0)
        return [s.args[1][name] for s in self.records
                if s.member == 'PropertiesChanged' and s.path == path and name in s.args[1]]

    def invalidated(self, path, name):
        """True when some PropertiesChanged for path only invalidated name."""
        spin(lambda: True, 0)
        return any(s.member == 'PropertiesChanged' and s.path == path and name in s.args[2]
                   for s in self.records)


class TimedRecorder(SignalRecorder):
    """A SignalRecorder that also notes when each signal was dispatched
    (wait with spin(), never time.sleep(), so that dispatch time is
    arrival time)."""

    def __init__(self, client):
        self.times = []
        super().__init__(client)

    def _on_signal(self, conn, sender, path, interface, member, params):
        n = len(self.records)
        super()._on_signal(conn, sender, path, interface, member, params)
        if len(self.records) > n:
            self.times.append(time.monotonic())


class Client:
    """A Gio connection to the private bus (what GUIs use)."""

    def __init__(self, address):
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        self.conn.set_exit_on_close(False)

    @property
    def unique_name(self):
        return self.conn.get_unique_name()

    def close(self):
        if not self.conn.is_closed():
            self.conn.close_sync(None)

    def call(self, path, iface, method, args=None, sig=None, timeout=30.0, dest=BUS_NAME,
             interactive=False, reply_sig=None):
        """Calls method and returns its unpacked result: None without out
        arguments, the value for one, a tuple for several. args is a
        GLib.Variant tuple, or a Python tuple with its signature in sig
        ("st" or "(st)"). Raises DBusCallError carrying the error name."""
        what = '%s.%s on %s' % (iface, method, path)
        flags = Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else Gio.DBusCallFlags.NONE
        rs = GLib.VariantType.new(reply_sig) if reply_sig else None
        try:
            res = self.conn.call_sync(dest, path, iface, method, _as_variant(args, sig), rs, flags,
                                      int(timeout * TIMEOUT_FACTOR * 1000), None)
        except GLib.Error as e:
            raise _convert_error(e, what, iface, method) from None
        return _unpack(res)

    def call_async(self, path, iface, method, args=None, sig=None, timeout=30.0, dest=BUS_NAME,
                   interactive=False):
        """Starts a call and returns a PendingCall at once."""
        flags = Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else Gio.DBusCallFlags.NONE
        return PendingCall(self.conn, dest, path, iface, method, _as_variant(args, sig), None, flags,
                           timeout, '%s.%s on %s' % (iface, method, path))

    def get_property(self, path, iface, name, dest=BUS_NAME):
        return self.call(path, PROPERTIES_IFACE, 'Get', (iface, name), '(ss)', dest=dest)

    def get_all(self, path, iface, dest=BUS_NAME):
        return self.call(path, PROPERTIES_IFACE, 'GetAll', (iface,), '(s)', dest=dest)

    def introspect(self, path, dest=BUS_NAME):
        return self.call(path, 'org.freedesktop.DBus.Introspectable', 'Introspect', dest=dest)

    def managed_objects(self):
        return self.call(MANAGER_PATH, OBJECT_MANAGER_IFACE, 'GetManagedObjects')

    def bus(self, method, args=None, sig=None):
        """A call to the bus driver (org.freedesktop.DBus)."""
        return self.call('/org/freedesktop/DBus', 'org.freedesktop.DBus', method, args, sig,
                         dest='org.freedesktop.DBus')

    def sync(self):
        """A round trip through the bus: everything sent before is processed."""
        self.bus('GetId')

    def name_has_owner(self, name=BUS_NAME):
        return self.bus('NameHasOwner', (name,), 's')

    def name_owner_pid(self, name=BUS_NAME):
        """The pid of the connection owning name, or None."""
        try:
            return self.bus('GetConnectionUnixProcessID', (name,), 's')
        except DBusCallError as e:
            if e.name == 'org.freedesktop.DBus.Error.NameHasNoOwner':
                return None
            raise

    def record_signals(self, path_prefix=MANAGER_PATH, interface=None, member=None):
        return SignalRecorder(self, path_prefix, interface, member)


# --------------------------------------------------------------------------
# Polkit subjects

def subject_bus_name(name):
    """The subject qsnapd itself passes: a caller's unique bus name."""
    return ('system-bus-name', {'name': GLib.Variant('s', name)})


def subject_process(pid):
    """A unix-process subject with the start time and uid read from /proc."""
    st = _proc_stat(pid)
    if st is None:
        raise ProcessLookupError(pid)
    uid = _proc_uid(pid)
    return ('unix-process', {'pid': GLib.Variant('u', pid),
                             'start-time': GLib.Variant('t', st[2]),
                             'uid': GLib.Variant('i', uid)})


class _ProcessAs:
    """A process running as another user (setpriv), killed at teardown."""

    def __init__(self, harness, user, argv):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=harness.address, LC_ALL='C')
        self.proc = subprocess.Popen(['setpriv'] + _user_args(user) + argv, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        self.uid = user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
        # setpriv execs argv in place: wait until the uid changed.
        if not spin(lambda: self._switched(argv[0]), 10):
            self.close()
            raise RuntimeError('%s as %s did not start' % (argv[0], user))

    def _switched(self, prog):
        if self.proc.poll() is not None:
            raise RuntimeError('%s as uid %d exited with %d' % (prog, self.uid, self.proc.returncode))
        try:
            first = (_proc_cmdline(self.pid) or '').split(' ')[0]
            return _proc_uid(self.pid) == self.uid and os.path.basename(first) == os.path.basename(prog)
        except (OSError, ProcessLookupError):
            return False

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class BusPeer(_ProcessAs):
    """A bus connection owned by another uid (gdbus monitor kept open):
    unique_name is a system-bus-name subject polkit resolves to that uid."""

    def __init__(self, harness, user):
        super().__init__(harness, user, ['gdbus', 'monitor', '--address', harness.address,
                                         '--dest', 'org.freedesktop.DBus'])
        client = harness.client

        def find():
            for n in client.bus('ListNames'):
                if n.startswith(':') and client.name_owner_pid(n) == self.pid:
                    return n
            return None
        self.unique_name = spin(find, 10)
        if not self.unique_name:
            self.close()
            raise RuntimeError('no bus connection from pid %d' % self.pid)


# --------------------------------------------------------------------------
# Images and domain XML

Disk = collections.namedtuple('Disk', 'target path format transient readonly',
                              defaults=('qcow2', False, False))


class QmpSocket:
    """A QMP connection of our own to a QEMU's monitor socket, for the
    moments no qsnapd is connected to it (QEMU serves one client at a
    time). command() returns the 'return' value; events are skipped."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile('rw')
        greeting = json.loads(self.file.readline())
        if 'QMP' not in greeting:
            raise RuntimeError('no QMP greeting on %s: %r' % (path, greeting))
        self.command('qmp_capabilities')

    def command(self, execute, arguments=None):
        msg = {'execute': execute}
        if arguments is not None:
            msg['arguments'] = arguments
        self.file.write(json.dumps(msg) + '\n')
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if 'error' in reply:
                raise RuntimeError('QMP %s: %s' % (execute, reply['error']))
            if 'return' in reply:
                return reply['return']

    def close(self):
        self.file.close()
        self.sock.close()


class QmpProxy:
    """A QMP proxy between qsnapd and a domain's real QEMU
    (Harness.proxy_monitor()), for the refusals a real QEMU rarely shows:
    a command named with refuse() is not passed on but answered as QEMU
    answers a command it refuses ({"error": {"class": "GenericError",
    "desc": ...}}, with the command's id); everything else passes both ways
    unchanged, descriptors towards QEMU too (each goes with the next
    command passed on, as qsnapd attaches it to its command's first byte;
    a refused command's are closed).
    commands is every command qsnapd sent, in order, and refused those
    answered here."""

    def __init__(self, listen_path, upstream_path):
        self.listen_path = listen_path
        self.upstream_path = upstream_path
        self.commands = []
        self.refused = []
        self._refuse = {}
        self._lock = threading.Lock()
        self._socks = []
        self._closed = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(listen_path)
        self._listener.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    def refuse(self, command, desc):
        with self._lock:
            self._refuse[command] = desc

    def allow(self, command):
        with self._lock:
            self._refuse.pop(command, None)

    def _accept(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(self.upstream_path)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._socks += [conn, up]
            lock = threading.Lock()    # one writer at a time towards qsnapd
            threading.Thread(target=self._pump_down, args=(up, conn, lock), daemon=True).start()
            threading.Thread(target=self._pump_up, args=(conn, up, lock), daemon=True).start()

    @staticmethod
    def _close_fds(fds):
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        fds.clear()

    @staticmethod
    def _shut(*socks):
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pump_down(self, up, conn, lock):
        while True:
            try:
                data = up.recv(65536)
                if not data:
                    break
                with lock:
                    conn.sendall(data)
            except OSError:
                break
        self._shut(conn, up)

    def _pump_up(self, conn, up, lock):
        buf = b''
        fds = []
        while True:
            try:
                data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            except OSError:
                break
            if not data:
                break
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array('i', payload[:len(payload) - len(payload) % 4]).tolist()
            buf += data
            while b'\n' in buf:
                line, buf = buf.split(b'\n', 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = None
                command = msg.get('execute') if isinstance(msg, dict) else None
                with self._lock:
                    desc = self._refuse.get(command)
                    if command:
                        self.commands.append(command)
                        if desc is not None:
                            self.refused.append(command)
                try:
                    if desc is None:
                        out = line + b'\n'
                        if fds:
                            n = up.sendmsg([out], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))])
                            out = out[n:]
                        self._close_fds(fds)
                        up.sendall(out)
                        continue
                    self._close_fds(fds)
                    reply = {'error': {'class': 'GenericError', 'desc': desc}}
                    if 'id' in msg:
                        reply['id'] = msg['id']
                    with lock:
                        conn.sendall(json.dumps(reply).encode() + b'\r\n')
                except OSError:
                    break
        self._shut(conn, up)

    def close(self):
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        self._shut(*socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def qemu_img_create(path, size='64M', fmt='qcow2', backing=None, backing_fmt='qcow2'):
    argv = [QEMU_IMG, 'create', '-q', '-f', fmt]
    if backing:
        argv += ['-b', backing, '-F', backing_fmt]
    argv += [path]
    if size is not None:
        argv.append(str(size))
    r = run(argv)
    if r.returncode != 0:
        raise RuntimeError('%s failed: %s' % (' '.join(argv), r.stderr.strip()))
    return path


def qemu_img_info(path, backing_chain=False, force_share=True):
    """qemu-img info as JSON: a dict, or a list (top first) with backing_chain."""
    argv = [QEMU_IMG, 'info', '--output=json']
    if force_share:
        argv.append('-U')
    if backing_chain:
        argv.append('--backing-chain')
    r = run(argv + [path])
    if r.returncode != 0:
        raise RuntimeError('qemu-img info %s failed: %s' % (path, r.stderr.strip()))
    return json.loads(r.stdout)


@contextlib.contextmanager
def mounted_tmpfs(path, size):
    """A tmpfs of `size` (mount's spelling: '4m', '12M') at path, for
    running out of space on purpose."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0755' % size, 'tmpfs', path], check=True)
    try:
        yield path
    finally:
        # Lazy: a QEMU may still hold a file on it; the harness kills QEMU later.
        subprocess.run(['umount', '-l', path], check=False)


@contextlib.contextmanager
def swapped_for_link(path, target, suffix='.real'):
    """path (a file or a folder) moved aside to path + suffix and a symbolic
    link to target put in its place, for the with-block (or the test, with
    TestCase.enterContext); the original is back afterwards. Yields the
    moved path."""
    moved = path + suffix
    os.rename(path, moved)
    try:
        os.symlink(target, path)
        yield moved
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rename(moved, path)


def qemu_img_check(path, fmt='qcow2', force_share=False):
    """qemu-img check of path: its output, or AssertionError naming the
    image and qemu-img's words when the image is not clean. It raises
    rather than returning a verdict so that no caller can drop it."""
    argv = [QEMU_IMG, 'check', '-f', fmt]
    if force_share:
        argv.append('-U')
    r = run(argv + [path])
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise AssertionError('qemu-img check %s: exit %d: %s' % (path, r.returncode, out))
    return out


def qemu_img_compare(a, b, force_share=True, fmt_a=None, fmt_b=None, what=''):
    """qemu-img compare of a and b (formats probed unless given): its
    output when they read the same, AssertionError with qemu-img's words
    (the first offset that differs) otherwise — a verdict nobody can drop."""
    argv = [QEMU_IMG, 'compare'] + (['-U'] if force_share else [])
    argv += (['-f', fmt_a] if fmt_a else []) + (['-F', fmt_b] if fmt_b else [])
    r = run(argv + [a, b])
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise AssertionError('%sqemu-img compare %s %s: exit %d: %s'
                             % (what + ': ' if what else '', a, b, r.returncode, out))
    return out


def write_reference(path, size, patterns):
    """A sparse raw image of size bytes holding exactly patterns, each
    (byte, offset, length), and zeros everywhere else: what a whole disk
    must read at one point in time, for qemu-img compare."""
    with open(path, 'wb') as f:
        f.truncate(size)
        for pattern, offset, length in patterns:
            f.seek(offset)
            f.write(bytes([pattern]) * length)
    return path


def qemu_img_internal_snapshot_copy(image, tag, out):
    """The contents of internal snapshot tag of image (with its backing
    chain) as a raw file out (qemu-img convert -l): RuntimeError when
    qemu-img cannot read it."""
    r = run([QEMU_IMG, 'convert', '-U', '-f', 'qcow2', '-l', 'snapshot.name=' + tag, '-O', 'raw', image, out])
    if r.returncode != 0:
        raise RuntimeError('qemu-img convert -l snapshot.name=%s %s: %s' % (tag, image, r.stderr.strip()))
    return out


def qemu_io(image, command, fmt='qcow2', read_only=True, force_share=True):
    """Runs one qemu-io command on an image from the host: CompletedProcess."""
    argv = [QEMU_IO]
    if force_share:
        argv.append('-U')
    if read_only:
        argv.append('-r')
    return run(argv + ['-f', fmt, '-c', command, image])


def qemu_io_write_pattern(image, pattern, offset, length, fmt='qcow2'):
    """Writes pattern offline (the image must not be in use)."""
    r = qemu_io(image, 'write -P 0x%02x %d %d' % (pattern, offset, length), fmt,
                read_only=False, force_share=False)
    if r.returncode != 0 or 'wrote ' not in r.stdout:
        raise RuntimeError('qemu-io write on %s failed: %s' % (image, (r.stdout + r.stderr).strip()))


def qemu_io_read_pattern(image, pattern, offset, length, fmt='qcow2'):
    """True when [offset, offset+length) of image holds pattern (read from
    the host with -U -r, so it works on images in use)."""
    r = qemu_io(image, 'read -P 0x%02x %d %d' % (pattern, offset, length), fmt)
    return r.returncode == 0 and 'Pattern verification failed' not in r.stdout + r.stderr


def domain_xml(name, disks=(), uuid=None, memory_mib=128, monitor=None, emulator=QEMU_SYSTEM,
               domain_type=None, machine=None, vcpus=1, description=None, extra='', devices=''):
    """A libvirt <domain> for DefineDomain. disks: Disk tuples (or plain
    (target, path[, format[, transient[, readonly]]]) tuples). monitor: a
    QMP socket path to attach to (qsnap:monitor). domain_type: 'kvm' when
    /dev/kvm works, else 'qemu' (TCG). devices: more <devices> children
    (text); extra: more <domain> children."""
    q = xml.sax.saxutils.quoteattr
    e = xml.sax.saxutils.escape
    if domain_type is None:
        domain_type = 'kvm' if kvm_works() else 'qemu'
    lines = ["<domain type=%s xmlns:qsnap='http://example.org/qsnap/1'>" % q(domain_type),
             '  <name>%s</name>' % e(name)]
    if uuid:
        lines.append('  <uuid>%s</uuid>' % e(uuid))
    if description is not None:
        lines.append('  <description>%s</description>' % e(description))
    lines += ["  <memory unit='MiB'>%d</memory>" % memory_mib,
              '  <vcpu>%d</vcpu>' % vcpus,
              '  <os>',
              "    <type arch='x86_64'%s>hvm</type>" % ((' machine=%s' % q(machine)) if machine else ''),
              '  </os>',
              '  <devices>',
              '    <emulator>%s</emulator>' % e(emulator)]
    for d in disks:
        d = Disk(*d)
        lines += ["    <disk type='file' device='disk'>",
                  "      <driver name='qemu' type=%s/>" % q(d.format),
                  '      <source file=%s/>' % q(d.path),
                  "      <target dev=%s bus='virtio'/>" % q(d.target)]
        if d.readonly:
            lines.append('      <readonly/>')
        if d.transient:
            lines.append('      <transient/>')
        lines.append('    </disk>')
    if monitor:
        lines.append('    <qsnap:monitor path=%s/>' % q(monitor))
    if devices:
        lines.append(devices)
    lines.append('  </devices>')
    if extra:
        lines.append(extra)
    lines.append('</domain>')
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------
# The harness

_live_harnesses = []


def _stop_live_harnesses():
    for h in list(_live_harnesses):
        with contextlib.suppress(Exception):
            h.stop()


atexit.register(_stop_live_harnesses)


def _on_sigterm(signum, frame):
    # meson's timeout sends SIGTERM: unwind so that cleanups and atexit run.
    raise KeyboardInterrupt('SIGTERM')


class Harness:
    """A private system bus with the real polkitd, and qsnapd from the
    build tree on it.

    daemon: start qsnapd in start() (False: bus and polkit only).
    polkit: qsnapd's --polkit=yes|no. idle_timeout: its --idle-timeout.
    image_root: images_dir is an --image-root= (manage-domains then
    defines domains whose disks are there without host-admin).
    daemon_args: more qsnapd arguments. The same command line is written
    to the bus's activation file, so a call after qsnapd exited activates
    it again (its output goes to the same log).
    """

    def __init__(self, daemon=True, polkit=True, idle_timeout=0, log_level='debug',
                 daemon_args=(), activation=True, image_root=False):
        self.want_daemon = daemon
        self.image_root = image_root
        self.polkit = polkit
        self.idle_timeout = idle_timeout
        self.log_level = log_level
        self.daemon_args = list(daemon_args)
        self.activation = activation
        self.root = None
        self.client = None
        self._bus_proc = None
        self._daemon_proc = None
        self._daemon_procs = []       # every qsnapd we started, for exit checks
        self._signaled = set()        # qsnapd pids we killed on purpose (any exit status is fine)
        self._terminated = set()      # qsnapd pids we sent SIGTERM: they must exit 0
        self._host = _HostSetup()
        self._rules = []
        self._helpers = []
        self._probe = None
        self._started = False
        self._errors = []

    # ---- paths
    @property
    def bus_dir(self):
        return os.path.join(self.root, 'bus')

    @property
    def state_dir(self):
        return os.path.join(self.root, 'state')

    @property
    def runtime_dir(self):
        return os.path.join(self.root, 'run')

    @property
    def images_dir(self):
        return os.path.join(self.root, 'images')

    @property
    def daemon_log(self):
        return os.path.join(self.root, 'qsnapd.log')

    @property
    def bus_log(self):
        return os.path.join(self.root, 'bus.log')

    @property
    def address(self):
        return 'unix:path=' + os.path.join(self.bus_dir, 'system_bus_socket')

    def image_path(self, name):
        return os.path.join(self.images_dir, name)

    def qemu_pid(self, domain_path):
        """The pid of the domain's QEMU, from qsnapd's <runtime>/<uuid>.pid
        (or, for an attached domain, the start_foreign_qemu() on its
        monitor socket)."""
        uuid = self.get_property(domain_path, DOMAIN_IFACE, 'UUID')
        try:
            with open(os.path.join(self.runtime_dir, uuid + '.pid')) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            xml = self.call(domain_path, DOMAIN_IFACE, 'GetXMLDesc', (0,), 't')
            for sock, pid in self.__dict__.get('foreign_qemu_pids', {}).items():
                if sock in xml:
                    return pid
            raise

    def qemu_open_files(self, domain_path):
        """{fd: file} of every descriptor the domain's QEMU holds (the
        kernel's word, /proc/PID/fd)."""
        pid, files = self.qemu_pid(domain_path), {}
        fd_dir = '/proc/%d/fd' % pid
        for fd in os.listdir(fd_dir):
            try:
                files[int(fd)] = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                pass
        return files

    def qemu_file_name(self, domain_path, name, fdsets=None):
        """The real file behind a file name QEMU reports: qsnapd hands QEMU
        descriptors, so QEMU says /dev/fdset/N, or json:{…"file":
        {"filename": "/dev/fdset/N"}} for a node whose backing it was given
        explicitly. Resolved through query-fdsets and /proc/PID/fd (every
        descriptor of a set must be the same file)."""
        if name and name.startswith('json:'):
            name = json.loads(name[5:]).get('file', {}).get('filename', name)
        m = re.match(r'^/dev/fdset/([0-9]+)$', name or '')
        if not m:
            return name
        if fdsets is None:
            fdsets = self.qmp(domain_path, 'query-fdsets')['return']
        open_files = self.qemu_open_files(domain_path)
        files = {open_files.get(e['fd']) for s in fdsets if s['fdset-id'] == int(m.group(1)) for e in s['fds']}
        if len(files) != 1:
            raise AssertionError('fd set %s of %s holds %s' % (m.group(1), domain_path, files))
        return files.pop()

    # ---- life cycle
    def start(self):
        check_requirements(daemon=self.want_daemon)
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            signal.signal(signal.SIGTERM, _on_sigterm)
        _live_harnesses.append(self)
        self._started = True
        # Short paths: QMP socket paths must fit in sun_path (108 bytes).
        self.root = tempfile.mkdtemp(prefix='qsnapt-', dir='/tmp')
        os.chmod(self.root, 0o755)    # other uids must reach the bus socket
        for d in (self.bus_dir, os.path.join(self.bus_dir, 'services'),
                  os.path.join(self.bus_dir, 'system.d'), self.images_dir):
            os.makedirs(d, mode=0o755, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700)
        os.makedirs(self.runtime_dir, mode=0o700)
        self._host.acquire()
        self._start_bus()
        self.client = Client(self.address)
        # Activate polkitd now, so its start-up is not billed to a test's first call.
        self.client.call('/org/freedesktop/PolicyKit1/Authority', 'org.freedesktop.DBus.Peer', 'Ping',
                         dest=POLKIT_NAME, timeout=30)
        if self.want_daemon:
            self.start_daemon()
        return self

    def _write_bus_config(self):
        with open('/usr/share/dbus-1/system.conf') as f:
            c = f.read()
        c = re.sub(r'<!--.*?-->', '', c, flags=re.S)
        c = c.replace('<user>messagebus</user>', '')    # run as root, our uid
        c = c.replace('<fork/>', '').replace('<syslog/>', '')
        c = re.sub(r'<pidfile>.*?</pidfile>', '', c)
        c = re.sub(r'<listen>.*?</listen>',
                   '<listen>unix:path=%s</listen>' % os.path.join(self.bus_dir, 'system_bus_socket'), c)
        # Without the setuid helper, activation execs Exec= itself (as root).
        c = re.sub(r'<servicehelper>.*?</servicehelper>', '', c)
        c = c.replace('<includedir>system.d</includedir>',
                      '<includedir>/usr/share/dbus-1/system.d</includedir>\n'
                      '  <includedir>%s</includedir>' % os.path.join(self.bus_dir, 'system.d'))
        # Our servicedir first; the standard dirs give polkitd's activation file.
        c = c.replace('<standard_system_servicedirs/>',
                      '<servicedir>%s</servicedir>\n  <standard_system_servicedirs/>'
                      % os.path.join(self.bus_dir, 'services'))
        for must in ('<listen>unix:path=', self.bus_dir + '/system.d', self.bus_dir + '/services'):
            if must not in c:
                raise RuntimeError('unexpected /usr/share/dbus-1/system.conf: could not place %s' % must)
        with open(os.path.join(self.bus_dir, 'system.conf'), 'w') as f:
            f.write(c)
        shutil.copyfile(source_path('policy', 'org.example.Snapshot1.conf'),
                        os.path.join(self.bus_dir, 'system.d', 'org.example.Snapshot1.conf'))
        self.update_activation_file()

    def _daemon_argv(self):
        return qsnapd_command() + ['--address=' + self.address, '--state-dir=' + self.state_dir,
                '--runtime-dir=' + self.runtime_dir, '--polkit=' + ('yes' if self.polkit else 'no'),
                '--idle-timeout=%d' % self.idle_timeout, '--log-level=' + self.log_level] + \
            (['--image-root=' + self.images_dir] if self.image_root else []) + self.daemon_args

    def update_activation_file(self):
        """(Re)writes the bus's activation file for qsnapd from the current
        options (call it after changing daemon_args, polkit, ...)."""
        path = os.path.join(self.bus_dir, 'services', BUS_NAME + '.service')
        if not self.activation or not qsnapd_binary():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if self.client is not None:
                self.client.bus('ReloadConfig')
            return
        # sh keeps the output in our log and records how qsnapd ended, so
        # a crash is not hidden by the next activation.
        cmd = ' '.join(self._daemon_argv())
        log = self.daemon_log
        script = ('echo "%s qsnapd activated by the bus" >>%s; %s >>%s 2>&1 & p=$!; wait $p; '
                  'echo "%s qsnapd $p exited with status $?" >>%s' % (_START_MARK, log, cmd, log, _START_MARK, log))
        if "'" in script:
            raise RuntimeError('unexpected quote in paths: %s' % script)
        _write_file_atomic(path, '[D-BUS Service]\nName=%s\nExec=/bin/sh -c \'%s\'\nUser=root\n'
                           % (BUS_NAME, script))
        # dbus-daemon notices the change through inotify, some time later;
        # ReloadConfig answers once the new file is in use.
        if self.client is not None:
            self.client.bus('ReloadConfig')

    def _start_bus(self):
        self._write_bus_config()
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        env.pop('DBUS_SESSION_BUS_ADDRESS', None)
        with open(self.bus_log, 'ab') as log:
            self._bus_proc = subprocess.Popen(
                ['dbus-daemon', '--config-file=' + os.path.join(self.bus_dir, 'system.conf'), '--nofork'],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        sock = os.path.join(self.bus_dir, 'system_bus_socket')

        def up():
            if self._bus_proc.poll() is not None:
                raise RuntimeError('dbus-daemon exited with %d:\n%s'
                                   % (self._bus_proc.returncode, self._tail(self.bus_log, 50)))
            # The socket file appears at bind(), before listen(): connect to know.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(sock)
                    return True
                except OSError:
                    return False
        if not spin(up, 10):
            raise RuntimeError('dbus-daemon does not accept connections on %s' % sock)

    def start_daemon(self, wait=True):
        """Starts qsnapd and waits until it owns org.example.Snapshot1."""
        if self.client.name_has_owner():
            raise RuntimeError('%s is already owned (pid %s)' % (BUS_NAME, self.client.name_owner_pid()))
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        with open(self.daemon_log, 'a') as log:
            log.write('%s starting %s\n' % (_START_MARK, ' '.join(self._daemon_argv())))
            log.flush()
            self._daemon_proc = subprocess.Popen(self._daemon_argv(), env=env, stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=log, start_new_session=True)
        self._daemon_procs.append(self._daemon_proc)
        if wait:
            self.wait_for_daemon()
        return self._daemon_proc.pid

    def wait_for_daemon(self, timeout=_DAEMON_NAME_TIMEOUT):
        proc = self._daemon_proc

        def owned():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError('qsnapd exited with status %d before taking its name; log:\n%s'
                                   % (proc.returncode, self._tail(self.daemon_log, 100)))
            return self.client.name_has_owner()
        if not spin(owned, timeout):
            raise RuntimeError('qsnapd did not take %s within %.0f s; log:\n%s'
                               % (BUS_NAME, timeout, self._tail(self.daemon_log, 100)))

    def daemon_pid(self):
        """The pid owning org.example.Snapshot1 (ours or bus-activated), or None."""
        return self.client.name_owner_pid()

    def _wait_name_gone(self, timeout=10.0):
        if not spin(lambda: not self.client.name_has_owner(), timeout):
            raise RuntimeError('%s still owned %.0f s after its owner was killed' % (BUS_NAME, timeout))

    def kill_daemon(self, sig=signal.SIGKILL, timeout=10.0):
        """Sends sig (default: kill -9) to the running qsnapd, waits until
        it is gone and its name released. QEMU keeps running."""
        pid = self.daemon_pid() or (self._daemon_proc.pid if self._daemon_proc and self._daemon_proc.poll() is None else None)
        if pid is None:
            raise RuntimeError('qsnapd is not running')
        (self._terminated if sig == signal.SIGTERM else self._signaled).add(pid)
        os.kill(pid, sig)
        if not spin(lambda: not _alive(pid), timeout):
            raise RuntimeError('qsnapd %d still alive %.0f s after signal %d' % (pid, timeout, sig))
        if self._daemon_proc is not None and self._daemon_proc.pid == pid:
            self._daemon_proc.wait()
        self._wait_name_gone()

    def stop_daemon(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout."""
        pids = set()
        pid = self.client.name_owner_pid() if self.client else None
        if pid:
            pids.add(pid)
        if self._daemon_proc is not None and self._daemon_proc.poll() is None:
            pids.add(self._daemon_proc.pid)
        self._terminated.update(pids)
        if pids:
            _kill_pids(pids, timeout)
        if self._daemon_proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._daemon_proc.wait(1)

    def restart_daemon(self, kill=True, env=None):
        """kill -9 (or SIGTERM with kill=False) and start again with the
        same state and runtime directories; env: variables for the new
        qsnapd only (test hooks such as QSNAPD_TEST_CRASH_AT)."""
        if kill:
            self.kill_daemon()
        else:
            self.stop_daemon()
            self._wait_name_gone()
        saved = {k: os.environ.get(k) for k in env or {}}
        os.environ.update(env or {})
        try:
            return self.start_daemon()
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v

    def daemon_exit_problems(self):
        """How qsnapd instances ended that we did not kill ourselves
        (non-zero status or a signal): a crash a later activation hid, or
        an unclean exit after SIGTERM (a sanitizer's leak report exits
        non-zero too). Sanitizer reports anywhere in the log count as well."""
        problems = []
        with contextlib.suppress(FileNotFoundError):
            with open(self.daemon_log, errors='replace') as f:
                for m in re.finditer(r'^.*(ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:).*$', f.read(), re.M):
                    problems.append('sanitizer report in the qsnapd log: %s' % m.group(0).strip())
        for p in self._daemon_procs:
            if p.poll() is not None and p.returncode != 0 and p.pid not in self._signaled:
                problems.append('qsnapd %d exited with status %d' % (p.pid, p.returncode))
        with contextlib.suppress(FileNotFoundError):
            with open(self.daemon_log, errors='replace') as f:
                for m in re.finditer(re.escape(_START_MARK) + r' qsnapd (\d+) exited with status (\d+)', f.read()):
                    pid, status = int(m.group(1)), int(m.group(2))
                    if status != 0 and pid not in self._signaled:
                        problems.append('bus-activated qsnapd %d exited with status %d' % (pid, status))
        return problems

    # ---- qsnapd's log and its crash points
    def daemon_log_mark(self):
        """The current end of qsnapd's log, to pass as start= below."""
        try:
            return os.path.getsize(self.daemon_log)
        except FileNotFoundError:
            return 0

    def daemon_log_since(self, start=0):
        with open(self.daemon_log, errors='replace') as f:
            f.seek(start)
            return f.read()

    def wait_for_log(self, pattern, start=0, timeout=30.0):
        """The first match of regex pattern in qsnapd's log after offset
        start, as soon as qsnapd has written it; AssertionError after
        timeout naming the pattern."""
        found = spin(lambda: re.search(pattern, self.daemon_log_since(start)), timeout)
        if not found:
            raise AssertionError('qsnapd did not log %r within %.0f s; its log since then:\n%s'
                                 % (pattern, timeout, self.daemon_log_since(start)[-4000:]))
        return found

    def crash_at(self, point, path, iface, method, args=None, sig=None, timeout=60.0, start_again=True):
        """Restarts qsnapd (SIGTERM) with QSNAPD_TEST_CRASH_AT=point, makes
        the call, and waits until that qsnapd killed itself at point (gone,
        its log saying "Crash point <point> reached": a point that does not
        exist fails here). Then a new qsnapd starts (start_again), and
        recovers at start-up. Returns (the log offset where the new qsnapd
        starts, the call's outcome: its result or the DBusCallError)."""
        self.restart_daemon(kill=False, env={'QSNAPD_TEST_CRASH_AT': point})
        pid = self.daemon_pid()
        self._signaled.add(pid)
        mark = self.daemon_log_mark()
        pending = self.client.call_async(path, iface, method, args, sig, timeout=timeout)
        if not spin(lambda: not _alive(pid), timeout):
            raise AssertionError('qsnapd did not kill itself at crash point %s within %.0f s' % (point, timeout))
        if self._daemon_proc is not None and self._daemon_proc.pid == pid:
            self._daemon_proc.wait()
        self._wait_name_gone()
        if 'Crash point %s reached' % point not in self.daemon_log_since(mark):
            raise AssertionError('qsnapd died, but not at crash point %s; its log:\n%s'
                                 % (point, self.daemon_log_since(mark)[-4000:]))
        try:
            outcome = pending.wait()
        except DBusCallError as e:
            outcome = e
        mark = self.daemon_log_mark()
        if start_again:
            self.start_daemon()
        return mark, outcome

    def acknowledge_daemon_exits(self):
        """Marks every qsnapd exit so far as expected (for tests that make
        it fail on purpose), so that stop() does not report it."""
        for p in self._daemon_procs:
            self._signaled.add(p.pid)
        with contextlib.suppress(FileNotFoundError):
            with open(self.daemon_log, errors='replace') as f:
                for m in re.finditer(re.escape(_START_MARK) + r' qsnapd (\d+) exited', f.read()):
                    self._signaled.add(int(m.group(1)))

    def stop(self):
        """Undoes everything start() did. Safe to call twice and after a
        failed start. Raises RuntimeError listing what went wrong, after
        having done all it could."""
        if not self._started:
            return
        self._started = False
        errors = []

        def step(what, fn, *args):
            try:
                fn(*args)
            except Exception as e:    # keep going: the rest must be cleaned up too
                errors.append('%s: %s' % (what, e))

        bus_pid = self._bus_proc.pid if self._bus_proc else None
        step('stop qsnapd', self.stop_daemon)
        if self.root:
            step('kill QEMU', self._kill_qemus, bus_pid)
        step('stop helpers', self._stop_helpers)
        step('remove polkit rules', self._remove_all_rules)
        step('stop bus peers', self._stop_bus_peers)
        if self.client:
            step('close client', self.client.close)
        step('stop dbus-daemon', self._stop_bus)
        if self.root:
            left = _pids_mentioning(self.root)
            if left:
                errors.append('processes left over that mention %s: %s' % (
                    self.root, ', '.join('%d (%s)' % (p, _proc_cmdline(p)) for p in left)))
                _kill_pids(left)
        step('release host files', self._host.release)
        crashes = self.daemon_exit_problems() if self.root else []
        errors += crashes
        if self.root and os.path.isdir(self.root):
            if os.environ.get('QSNAPTEST_KEEP'):
                sys.stderr.write('qsnaptest: kept %s\n' % self.root)
            else:
                step('remove temp dir', shutil.rmtree, self.root)
        with contextlib.suppress(ValueError):
            _live_harnesses.remove(self)
        if errors:
            raise RuntimeError('harness teardown: ' + '; '.join(errors))

    def _kill_qemus(self, bus_pid):
        pids = []
        for pidfile in glob.glob(os.path.join(self.runtime_dir, '**', '*.pid'), recursive=True):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            cmd = _proc_cmdline(pid) or ''
            # Never trust a stale pid file blindly: it must be a QEMU of ours.
            if _alive(pid) and (self.root in cmd or 'qemu' in os.path.basename(cmd.split(' ')[0])):
                pids.append(pid)
        # Fallback: anything else naming our temp dir, except the bus.
        pids += _pids_mentioning(self.root, exclude=(bus_pid,) if bus_pid else ())
        if pids:
            _kill_pids(pids)

    def _stop_helpers(self):
        for p in self._helpers:
            p.close()
        self._helpers = []
        self._probe = None

    def _stop_bus_peers(self):
        # Whatever is still connected (polkitd, a bus-activated qsnapd) is
        # ours to stop. Activated services are not the bus's children: the
        # bus's launcher leaves them to init.
        if not self.client or self.client.conn.is_closed():
            return
        pids = set()
        for name in self.client.bus('ListNames'):
            if name.startswith(':') and name != self.client.unique_name:
                pid = self.client.name_owner_pid(name)
                if pid and pid != os.getpid():
                    pids.add(pid)
        if pids:
            _kill_pids(pids)

    def _stop_bus(self):
        if not self._bus_proc:
            return
        self._bus_proc.terminate()
        try:
            self._bus_proc.wait(5)
        except subprocess.TimeoutExpired:
            self._bus_proc.kill()
            self._bus_proc.wait()
        self._bus_proc = None

    # ---- logs
    @staticmethod
    def _tail(path, lines):
        try:
            with open(path, errors='replace') as f:
                return ''.join(collections.deque(f, lines))
        except OSError as e:
            return '(%s)' % e

    def dump_logs(self, out=sys.stderr, lines=400):
        """Prints the tails of qsnapd's log, the bus log (with polkitd's
        output) and every QEMU log."""
        if not self.root:
            return
        out.write('\n===== qsnapd log (%s) =====\n%s' % (self.daemon_log, self._tail(self.daemon_log, lines)))
        out.write('\n===== dbus-daemon / polkitd log =====\n%s' % self._tail(self.bus_log, 60))
        for path in sorted(glob.glob(os.path.join(self.state_dir, 'log', '*.log'))):
            out.write('\n===== QEMU log %s =====\n%s' % (path, self._tail(path, 60)))
        out.write('\n===== end of logs =====\n')
        out.flush()

    def barrier(self, *domain_paths):
        """Returns once every signal qsnapd sent before now has been
        dispatched to our recorders, instead of waiting a while for a
        signal that must not come: first a round trip through the QEMU of
        each running domain given (qsnapd handles the events QEMU sent
        before its reply, and sends their signals, before it answers), then
        one to qsnapd itself (the bus keeps the order of one sender's
        messages: what qsnapd sent before its reply arrives before it);
        then the main context is drained."""
        for path in domain_paths:
            if self.get_property(path, DOMAIN_IFACE, 'State') in ('running', 'paused'):
                self.qmp(path, 'query-status')
        self.client.call(MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping')
        spin(lambda: True, 0)

    # ---- client helpers (on the harness's own root connection)
    def call(self, *args, **kw):
        return self.client.call(*args, **kw)

    def call_async(self, *args, **kw):
        return self.client.call_async(*args, **kw)

    def get_property(self, *args, **kw):
        return self.client.get_property(*args, **kw)

    def get_all(self, *args, **kw):
        return self.client.get_all(*args, **kw)

    def introspect(self, *args, **kw):
        return self.client.introspect(*args, **kw)

    def record_signals(self, *args, **kw):
        return self.client.record_signals(*args, **kw)

    def new_client(self):
        """Another connection of ours (closed by the test)."""
        return Client(self.address)

    # ---- other uids
    def run_as(self, user, argv, timeout=60):
        """Runs argv as user (a name or uid; groups as NSS gives them) with
        DBUS_SYSTEM_BUS_ADDRESS set to our bus: (rc, stdout, stderr)."""
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address, LC_ALL='C')
        r = run(['setpriv'] + _user_args(user) + list(argv), timeout=timeout, env=env)
        return r.returncode, r.stdout, r.stderr

    def busctl_as(self, user, *args, timeout=60):
        """busctl --address=<our bus> ARGS as user, e.g.
        busctl_as(65534, 'call', BUS_NAME, path, DOMAIN_IFACE, 'Start', 't', '0')."""
        return self.run_as(user, ['busctl', '--address=' + self.address] + list(args), timeout)

    def gdbus_as(self, user, command, *args, timeout=60):
        """gdbus COMMAND --address <our bus> ARGS as user (a `call`'s D-Bus
        error goes through note_error())."""
        rc, out, err = self.run_as(user, ['gdbus', command, '--address', self.address] + list(args), timeout)
        _gdbus_call_error([command] + list(args), rc, err)
        return rc, out, err

    def bus_peer_as(self, user):
        """A connection held open by user (BusPeer); closed at teardown."""
        peer = BusPeer(self, user)
        self._helpers.append(peer)
        return peer

    def process_as(self, user):
        """A sleeping process of user, e.g. for a unix-process subject."""
        p = _ProcessAs(self, user, ['sleep', 'infinity'])
        self._helpers.append(p)
        return p

    # ---- polkit
    def check_authorization(self, subject, action_id, details=None, flags=0):
        """polkitd's CheckAuthorization: (is_authorized, is_challenge, details)."""
        args = GLib.Variant('((sa{sv})sa{ss}us)', (subject, action_id, details or {}, flags, ''))
        return self.client.call(POLKIT_PATH, POLKIT_IFACE, 'CheckAuthorization', args,
                                dest=POLKIT_NAME, timeout=30)

    def _probe_authorized(self, token):
        if self._probe is None:
            self._probe = self.process_as(NOBODY_UID)
        ok, _, _ = self.check_authorization(subject_process(self._probe.pid), ACTION_READ_SECURE,
                                            {'qsnaptest-probe': token})
        return ok

    def add_polkit_rule(self, js, timeout=10.0):
        """Drops js into /etc/polkit-1/rules.d and returns once polkitd has
        loaded it (it watches the folder with inotify). Removed at teardown
        or with remove_polkit_rule(). Returns the file's path."""
        token = '%d-%d-%f' % (os.getpid(), len(self._rules), time.time())
        path = os.path.join(POLKIT_RULES_DIR, '%s%d-%d.rules' % (_RULES_PREFIX, os.getpid(), len(self._rules)))
        probe = ('\n// qsnaptest: tells the harness that polkitd has loaded this file.\n'
                 'polkit.addRule(function(action, subject) {\n'
                 '    if (action.id == "%s" && action.lookup("qsnaptest-probe") == "%s")\n'
                 '        return polkit.Result.YES;\n'
                 '});\n' % (ACTION_READ_SECURE, token))
        _write_file_atomic(path, js + probe)
        self._rules.append((path, token))
        if not spin(lambda: self._probe_authorized(token), timeout):
            raise RuntimeError('polkitd did not load %s within %.0f s (a syntax error? see %s)'
                               % (path, timeout, self.bus_log))
        return path

    def remove_polkit_rule(self, path, timeout=10.0):
        """Removes a rules file and returns once polkitd has dropped it."""
        for entry in list(self._rules):
            if entry[0] == path:
                self._rules.remove(entry)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                if not spin(lambda: not self._probe_authorized(entry[1]), timeout):
                    raise RuntimeError('polkitd still uses %s after %.0f s' % (path, timeout))
                return
        raise KeyError(path)

    def _remove_all_rules(self):
        for path, _ in self._rules:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._rules = []

    def grant(self, actions=ALL_ACTIONS, user=TEST_USER, group=None, domain=None):
        """A rule answering YES for actions to user (or to members of
        group), for every domain or for the one named domain."""
        if isinstance(actions, str):
            actions = [actions]
        who = ('subject.isInGroup(%s)' % json.dumps(group)) if group else ('subject.user == %s' % json.dumps(user))
        cond = '%s.indexOf(action.id) >= 0 && %s' % (json.dumps(list(actions)), who)
        if domain is not None:
            cond += ' && action.lookup("domain") == %s' % json.dumps(domain)
        return self.add_polkit_rule('polkit.addRule(function(action, subject) {\n'
                                    '    if (%s)\n'
                                    '        return polkit.Result.YES;\n'
                                    '});\n' % cond)

    # ---- images, domains, QEMU
    def create_image(self, name, size='64M', fmt='qcow2', backing=None, backing_fmt='qcow2'):
        """An image under our temp dir; returns its path."""
        return qemu_img_create(self.image_path(name), size, fmt, backing, backing_fmt)

    def qemu_user(self):
        """The --qemu-user= qsnapd was started with, or None."""
        for a in self.daemon_args:
            if a.startswith('--qemu-user='):
                return a.split('=', 1)[1] or None
        return None

    def define_domain(self, name, disks=(), **kw):
        """DefineDomain(domain_xml(name, disks, **kw), 0): the object path.
        With --qemu-user=, KVM only when that user may open /dev/kvm."""
        user = self.qemu_user()
        if user and 'domain_type' not in kw:
            kw['domain_type'] = 'kvm' if kvm_works(user) else 'qemu'
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'DefineDomain', (domain_xml(name, disks, **kw), 0), 'st')

    def domain_path(self, name):
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'GetDomain', (name,), 's')

    def start_foreign_qemu(self, image, socket_path):
        """A QEMU qsnapd did not launch (for <qsnap:monitor>): one virtio
        disk vda on image, QMP on socket_path. Returns its Popen once QMP
        answers there (the socket file exists at bind(), before listen():
        only a greeting proves it is ready); killed at teardown."""
        qemu = subprocess.Popen(
            [QEMU_SYSTEM, '-nodefaults', '-no-user-config', '-display', 'none', '-accel', 'kvm', '-accel', 'tcg',
             '-m', '128', '-qmp', 'unix:%s,server=on,wait=off' % socket_path,
             '-blockdev', json.dumps({'driver': 'qcow2', 'node-name': 'vda-fmt',
                                      'file': {'driver': 'file', 'filename': image}}),
             '-device', 'virtio-blk-pci,id=vda,drive=vda-fmt'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.__dict__.setdefault('foreign_qemu_pids', {})[socket_path] = qemu.pid

        def answers():
            if qemu.poll() is not None:
                raise RuntimeError('the foreign QEMU exited with %d' % qemu.returncode)
            try:
                QmpSocket(socket_path).close()
                return True
            except OSError:
                return False
        if not spin(answers, 20):
            qemu.kill()
            qemu.wait()
            raise RuntimeError('the foreign QEMU does not answer on %s' % socket_path)
        return qemu

    def proxy_monitor(self, domain_path):
        """Puts a QmpProxy between qsnapd and the running domain's QEMU:
        qsnapd is stopped (SIGTERM: QEMU and its jobs go on), QEMU's
        monitor socket renamed, the proxy listens at the old name, and a
        new qsnapd re-attaches through it (and adopts the jobs). Returns
        the proxy; closed at teardown."""
        uuid = self.get_property(domain_path, DOMAIN_IFACE, 'UUID')
        sock = os.path.join(self.runtime_dir, uuid + '.qmp')
        self.stop_daemon()
        self._wait_name_gone()
        os.rename(sock, sock + '-qemu')
        proxy = QmpProxy(sock, sock + '-qemu')
        self._helpers.append(proxy)
        self.start_daemon()
        return proxy

    def domain_log(self, domain_path):
        """<state-dir>/log/<uuid>.log: QEMU's output (HMP qemu-io prints there)."""
        uuid = self.get_property(domain_path, DOMAIN_IFACE, 'UUID')
        return os.path.join(self.state_dir, 'log', uuid + '.log')

    def hmp(self, domain_path, command_line, timeout=30.0):
        """QemuMonitorCommand with HMP: the reply text."""
        return self.call(domain_path, DOMAIN_IFACE, 'QemuMonitorCommand', (command_line, 1), 'st',
                         timeout=timeout)

    def qmp(self, domain_path, execute, arguments=None, timeout=30.0):
        """QemuMonitorCommand with a QMP command: the parsed reply."""
        cmd = {'execute': execute}
        if arguments is not None:
            cmd['arguments'] = arguments
        return json.loads(self.call(domain_path, DOMAIN_IFACE, 'QemuMonitorCommand', (json.dumps(cmd), 0),
                                    'st', timeout=timeout))

    def _qemu_io_live(self, domain_path, target, command, done_re, timeout):
        log = self.domain_log(domain_path)
        start = os.path.getsize(log) if os.path.exists(log) else 0
        line = 'qemu-io -d /machine/peripheral/%s/virtio-backend "%s"' % (target, command)
        reply = self.hmp(domain_path, line)
        if reply.strip():
            raise HmpError(line, reply.strip())

        def new_output():
            try:
                with open(log, errors='replace') as f:
                    f.seek(start)
                    text = f.read()
            except OSError:
                return None
            return text if re.search(done_re, text) else None
        text = spin(new_output, timeout)
        if text is None:
            raise RuntimeError('no qemu-io output matching %r in %s within %.0f s' % (done_re, log, timeout))
        return text

    def write_pattern_live(self, domain_path, target, pattern, offset, length, timeout=30.0):
        """Writes pattern into the running guest's disk target through
        QEMU (HMP qemu-io on the virtio backend), then flushes, so that the
        host can read it with qemu_io_read_pattern()."""
        text = self._qemu_io_live(domain_path, target, 'write -P 0x%02x %d %d' % (pattern, offset, length),
                                  r'wrote \d+/\d+ bytes at offset %d|write failed' % offset, timeout)
        if 'wrote %d/%d bytes at offset %d' % (length, length, offset) not in text:
            raise RuntimeError('live write on %s failed: %s' % (target, text.strip()))
        self.flush_live(domain_path, target)

    def flush_live(self, domain_path, target):
        line = 'qemu-io -d /machine/peripheral/%s/virtio-backend "flush"' % target
        reply = self.hmp(domain_path, line)
        if reply.strip():
            raise HmpError(line, reply.strip())

    def _read_pattern_live(self, domain_path, target, pattern, offset, length, timeout):
        """qemu-io's answer to read -P in the guest's QEMU: True when the
        disk holds pattern, False on "Pattern verification failed";
        RuntimeError when the read itself failed."""
        text = self._qemu_io_live(domain_path, target, 'read -P 0x%02x %d %d' % (pattern, offset, length),
                                  r'read \d+/\d+ bytes at offset %d|read failed' % offset, timeout)
        if 'Pattern verification failed' in text:
            return False
        if 'read %d/%d bytes at offset %d' % (length, length, offset) not in text:
            raise RuntimeError('live read on %s failed: %s' % (target, text.strip()))
        return True

    def verify_pattern_live(self, domain_path, target, pattern, offset, length, what='', timeout=30.0):
        """The running guest's disk target reads back pattern in
        [offset, offset+length) (QEMU's qemu-io prints the verdict into the
        domain's log); AssertionError saying what was expected otherwise."""
        if not self._read_pattern_live(domain_path, target, pattern, offset, length, timeout):
            raise AssertionError('%s%s of %s does not read 0x%02x at %d+%d (qemu-io: Pattern verification failed)'
                                 % (what + ': ' if what else '', target, domain_path, pattern, offset, length))

    def verify_not_pattern_live(self, domain_path, target, pattern, offset, length, what='', timeout=30.0):
        """The opposite: the read succeeds and finds other data there."""
        if self._read_pattern_live(domain_path, target, pattern, offset, length, timeout):
            raise AssertionError('%s%s of %s reads 0x%02x at %d+%d, which it must not'
                                 % (what + ': ' if what else '', target, domain_path, pattern, offset, length))


class UnprivilegedQemu:
    """Mixin, listed before the TestCase base, for tests whose qsnapd runs
    QEMU as QEMU_USER (--qemu-user= in harness_options): the user exists,
    and QEMU's user reaches the sockets it binds under the runtime dir
    through our temp root (mkdtemp's 0700 made 0711: search only); the
    images folder below stays root's alone."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ensure_qemu_user()

    def setUp(self):
        super().setUp()
        os.chmod(self.h.root, 0o711)


class QsnapTestCase(unittest.TestCase):
    """A TestCase with a started Harness in self.h for each test.
    Override harness_options (Harness keyword arguments) in a subclass."""

    harness_options = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Missing tools or not root: a loud failure, not a skip.
        check_requirements(daemon=cls.harness_options.get('daemon', True))

    def setUp(self):
        super().setUp()
        self._problems_before = self._problem_count()
        _begin_test(self.full_test_id())
        self.addCleanup(self._check_errors)
        self._times = [time.monotonic()]
        self.addCleanup(self._report_time)
        self.h = Harness(**self.harness_options)
        self.addCleanup(self._stop_harness)
        self.h.start()
        self._times.append(time.monotonic())

    def _report_time(self):
        # Where a test's seconds go (runs last: after the harness stopped):
        # harness start, the test itself, harness stop. On stderr, so that
        # meson's log keeps it; docs/performance.md shows how to read them.
        now = time.monotonic()
        t = self._times + [now] * (4 - len(self._times))
        sys.stderr.write('qsnaptest-time %s start %.1f body %.1f stop %.1f total %.1f\n'
                         % (self.full_test_id(), t[1] - t[0], t[2] - t[1], t[3] - t[2], now - t[0]))

    def _problem_count(self):
        result = getattr(getattr(self, '_outcome', None), 'result', None)
        if result is None:
            return None
        return len(result.failures) + len(result.errors) + len(getattr(result, 'unexpectedSuccesses', ()))

    def _failed(self):
        # While a cleanup runs, _outcome.success is reset to True, so count
        # what the result recorded (Python >= 3.11 records at once; older
        # versions collect in _outcome.errors until the cleanups ran).
        outcome = getattr(self, '_outcome', None)
        if outcome is None:
            return True
        if any(exc for _, exc in getattr(outcome, 'errors', ())):
            return True
        now = self._problem_count()
        return now is None or self._problems_before is None or now > self._problems_before

    def full_test_id(self):
        """'test_file.Class.test_method' (self.id() says '__main__' for a
        test file run as a script)."""
        module = os.path.splitext(os.path.basename(sys.modules[type(self).__module__].__file__))[0]
        return '%s.%s.%s' % (module, type(self).__name__, self._testMethodName)

    def _check_errors(self):
        # Runs after the harness stopped (cleanups run last-in first-out).
        problems = _end_test(self.full_test_id())
        if problems:
            raise AssertionError('errors received:\n  ' + '\n  '.join(problems))

    def _stop_harness(self):
        if len(self._times) == 2:
            self._times.append(time.monotonic())    # the test body ended
        if self._failed():
            self.h.dump_logs()
        self.h.stop()

    @contextlib.contextmanager
    def assertDBusError(self, name):
        """with self.assertDBusError(ERROR_PREFIX + 'NoSuchDomain'): ...
        yields a holder whose .exception is the DBusCallError."""
        holder = type('Holder', (), {'exception': None})()
        try:
            yield holder
        except DBusCallError as e:
            holder.exception = e
            if e.name != name:
                raise AssertionError('expected D-Bus error %s, got %s' % (name, e)) from e
            return
        raise AssertionError('expected D-Bus error %s, but the call succeeded' % name)


def main():
    """unittest.main with verbose output; exits non-zero on any failure."""
    unittest.main(verbosity=2)
