# SPDX-License-Identifier: LGPL-2.1-or-later
"""The real Linux guest for end-to-end tests (tests/guest/build-guest.py
builds it from Debian packages and caches it).

    import qsnaptest, qsnapguest

    class T(qsnaptest.QsnapTestCase):
        def test_boot(self):
            g = qsnapguest.Guest(self.h, 'g1')       # data disk made, domain defined
            g.start()                                # Start + wait for QSNAP-GUEST-READY
            g.wait_count(g.count + 3)                # the writer runs
            r = qsnapguest.verify_image(g.disk)      # offline: fsck + checksums

The guest's kernel hangs under KVM on this machine kind and boots under
TCG in about 5.5 s (../shared/notes/real-guest.md): its domain is
<domain type='qemu'>, which qsnapd launches with -accel tcg.

Waiting is event-driven: SerialLog follows the serial console's file with
inotify and wakes up when it grows (or the timeout ends), never a fixed
sleep.
"""

import contextlib
import ctypes
import hashlib
import json
import os
import re
import select
import subprocess
import xml.sax.saxutils

import qsnaptest

BUILDER = qsnaptest.source_path('tests', 'guest', 'build-guest.py')
PYTHON = '/usr/bin/python3'
BOOT_TIMEOUT = 90.0   # TCG on a loaded 2-core machine: ~5.5 s alone, much more under load
AGENT_CHANNEL = 'org.qemu.guest_agent.0'

_built = None


def _builder(*args, timeout=600):
    r = subprocess.run([PYTHON, BUILDER] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError('build-guest.py %s failed: %s' % (' '.join(args), r.stderr.strip()))
    return r.stdout.strip()


# What build-guest.py's cache key depends on besides its own text: the
# kernel package apt would install (apt's lists, preferences and dpkg's
# status) and the versions of busybox-static and qemu-guest-agent (dpkg's
# status).
_KEY_INPUTS = ('/var/lib/apt/lists', '/var/cache/apt/pkgcache.bin', '/var/lib/dpkg/status',
               '/etc/apt/sources.list', '/etc/apt/sources.list.d', '/etc/apt/preferences.d')


def _lookup_memo():
    """(memo file, digest): build-guest.py's answer is remembered under a
    digest of its text and of the stat of every input of its cache key, so
    that each test file does not pay its apt-cache queries (seconds on a
    loaded machine) to find the same folder again."""
    cache = os.environ.get('QSNAP_GUEST_CACHE') or '/var/tmp/qsnap-guest'
    h = hashlib.sha256()
    with open(BUILDER, 'rb') as f:
        h.update(f.read())
    for path in _KEY_INPUTS:
        try:
            st = os.stat(path)
            h.update(('%s %d %d %d\n' % (path, st.st_mtime_ns, st.st_ctime_ns, st.st_size)).encode())
        except FileNotFoundError:
            h.update(('%s none\n' % path).encode())
    return os.path.join(cache, '.lookup'), h.hexdigest()


def _find_folder():
    memo, digest = _lookup_memo()
    try:
        with open(memo) as f:
            have, folder = f.read().split('\n')[0].split(' ', 1)
        if have == digest and os.path.exists(os.path.join(folder, 'manifest.json')):
            return folder
    except (OSError, ValueError):
        pass
    folder = _builder()
    with contextlib.suppress(OSError):
        tmp = '%s.%d' % (memo, os.getpid())
        with open(tmp, 'w') as f:
            f.write('%s %s\n' % (digest, folder))
        os.rename(tmp, memo)
    return folder


def build():
    """The guest's folder (vmlinuz, initrd.gz, manifest.json), built once
    and cached ($QSNAP_GUEST_CACHE, default /var/tmp/qsnap-guest)."""
    global _built
    if _built is None:
        folder = _find_folder()
        with open(os.path.join(folder, 'manifest.json')) as f:
            manifest = json.load(f)
        _built = (folder, manifest)
    return _built


def make_data_disk(path, size='64M'):
    """A qcow2 image at path holding an empty ext4 filesystem."""
    return _builder('disk', path, size)


def verify_image(image, fmt='qcow2'):
    """The guest's filesystem checked offline on a copy (journal replayed
    when needed, then e2fsck -fn, data files read with debugfs): a dict
    with journal_replayed, fsck_rc, fsck_output, counter, files."""
    return json.loads(_builder('verify', image, fmt))


def make_cdrom(path, marker):
    """A raw CD-ROM image whose first line is marker (2048-byte sectors)."""
    data = (marker + '\n').encode()
    data += b'\0' * (4096 - len(data))
    with open(path, 'wb') as f:
        f.write(data)
    return path


# ---- following a growing file

_IN_MODIFY = 0x2
_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_libc = ctypes.CDLL(None, use_errno=True)


class SerialLog:
    """Follows a file (a serial console written by QEMU, append=on) as it
    grows. wait_for(regex) returns the first match after the read position
    (and moves past it); lines() is everything read so far."""

    def __init__(self, path, start=None):
        self.path = path
        self.text = ''
        self.pos = 0            # position in self.text after the last match
        if not os.path.exists(path):
            open(path, 'a').close()
        self._offset = os.path.getsize(path) if start is None else start
        self._fd = _libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), 'inotify_init1')
        if _libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), 'inotify_add_watch ' + path)

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _read(self):
        with open(self.path, 'rb') as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        # The guest's tty writes \r\n: lines here end in \n alone.
        self.text += data.replace(b'\r', b'').decode('utf-8', 'replace')

    def wait_for(self, pattern, timeout=BOOT_TIMEOUT, what=None):
        """The match object of pattern (a regex, per line) found after the
        last match; raises TimeoutError with the tail of the log."""
        rx = re.compile(pattern, re.M)
        deadline = qsnaptest.time.monotonic() + timeout * qsnaptest.TIMEOUT_FACTOR
        while True:
            self._read()
            m = rx.search(self.text, self.pos)
            if m and '\n' in self.text[m.end():]:   # a whole line, not one QEMU is still writing
                self.pos = m.end()
                return m
            left = deadline - qsnaptest.time.monotonic()
            if left <= 0:
                raise TimeoutError('%s not seen on %s within %.0f s; its end:\n%s'
                                   % (what or repr(pattern), self.path, timeout, self.text[-1500:]))
            r, _, _ = select.select([self._fd], [], [], min(left, 5.0))
            if r:
                try:
                    os.read(self._fd, 4096)   # drain the events
                except BlockingIOError:
                    pass

    def lines(self, prefix='QSNAP-GUEST-'):
        self._read()
        return [line for line in self.text.splitlines() if line.startswith(prefix)]


# ---- the domain

def domain_xml(name, disk, serial_log, devices='', memory_mib=256, cmdline_extra='', domain_type='qemu',
               extra='', on_poweroff='destroy', on_reboot='restart'):
    """<domain type='qemu'> booting the guest's kernel directly, disk as vda
    (qcow2, the guest's ext4), ttyS0 to serial_log (appended), and more
    <devices> children as text."""
    folder, manifest = build()
    q = xml.sax.saxutils.quoteattr
    e = xml.sax.saxutils.escape
    cmdline = manifest['cmdline'] + ((' ' + cmdline_extra) if cmdline_extra else '')
    if "device='cdrom'" in devices:
        cmdline += ' qsnap.cdrom=1'   # the guest waits for /dev/sr0 only then
    return '\n'.join([
        '<domain type=%s>' % q(domain_type),
        '  <name>%s</name>' % e(name),
        "  <memory unit='MiB'>%d</memory>" % memory_mib,
        '  <vcpu>1</vcpu>',
        '  <os>',
        "    <type arch='x86_64' machine='q35'>hvm</type>",
        '    <kernel>%s</kernel>' % e(os.path.join(folder, 'vmlinuz')),
        '    <initrd>%s</initrd>' % e(os.path.join(folder, 'initrd.gz')),
        '    <cmdline>%s</cmdline>' % e(cmdline),
        '  </os>',
        '  <on_poweroff>%s</on_poweroff>' % e(on_poweroff),
        '  <on_reboot>%s</on_reboot>' % e(on_reboot),
        '  <devices>',
        '    <emulator>%s</emulator>' % e(qsnaptest.QEMU_SYSTEM),
        "    <disk type='file' device='disk'>",
        "      <driver name='qemu' type='qcow2'/>",
        '      <source file=%s/>' % q(disk),
        "      <target dev='vda' bus='virtio'/>",
        '    </disk>',
        "    <serial type='file'>",
        '      <source path=%s append=\'on\'/>' % q(serial_log),
        "      <target port='0'/>",
        '    </serial>',
        devices,
        '  </devices>',
        extra,
        '</domain>',
        ''])


def agent_channel_xml():
    return ("    <channel type='unix'>\n"
            "      <target type='virtio' name='%s'/>\n"
            "    </channel>" % AGENT_CHANNEL)


class Guest:
    """A real-guest domain on harness h: its data disk (h.images_dir/<name>.qcow2),
    its serial log (h.images_dir/<name>.serial) and its definition."""

    def __init__(self, h, name, devices='', cmdline_extra='', disk_size='64M', **kw):
        self.h = h
        self.name = name
        self.disk = os.path.join(h.images_dir, name + '.qcow2')
        self.serial_path = os.path.join(h.images_dir, name + '.serial')
        if not os.path.exists(self.disk):
            make_data_disk(self.disk, disk_size)
        open(self.serial_path, 'a').close()
        self.xml = domain_xml(name, self.disk, self.serial_path, devices, cmdline_extra=cmdline_extra, **kw)
        self.path = h.call(qsnaptest.MANAGER_PATH, qsnaptest.MANAGER_IFACE, 'DefineDomain', (self.xml, 0), 'st')
        self.serial = None
        self.count = None
        self.boot_lines = []

    def follow(self):
        """Starts reading the serial log from its current end."""
        if self.serial:
            self.serial.close()
        self.serial = SerialLog(self.serial_path)
        return self.serial

    def start(self, flags=0):
        """Start(flags) and wait until the guest printed READY; returns the
        boot's VERIFY line's match (groups: ok|bad, rest)."""
        self.follow()
        self.h.call(self.path, qsnaptest.DOMAIN_IFACE, 'Start', (flags,), 't', timeout=60)
        return self.wait_boot()

    def wait_boot(self):
        """After a start or reset: the boot's lines up to READY; returns the
        VERIFY match."""
        self.serial.wait_for(r'^QSNAP-GUEST-BOOT ', what='the guest kernel booting')
        start = self.serial.pos
        v = self.serial.wait_for(r'^QSNAP-GUEST-VERIFY (ok|bad)(.*)$', what='the guest checking its files')
        self.serial.wait_for(r'^QSNAP-GUEST-READY', what='the guest ready')
        self.boot_lines = [line for line in self.serial.text[start:self.serial.pos].splitlines()
                           if line.startswith('QSNAP-GUEST-')]
        m = re.search(r'counter=(\d+)', v.group(2))
        self.count = int(m.group(1)) if m else None
        return v

    def wait_count(self, at_least, timeout=BOOT_TIMEOUT):
        """Waits until the writer printed a COUNT >= at_least; returns it."""
        while True:
            m = self.serial.wait_for(r'^QSNAP-GUEST-COUNT (\d+)$', timeout=timeout, what='COUNT >= %d' % at_least)
            self.count = int(m.group(1))
            if self.count >= at_least:
                return self.count

    def boot_line(self, prefix):
        """The rest of the boot's line QSNAP-GUEST-<prefix> ..., or None."""
        for line in self.boot_lines:
            if line.startswith('QSNAP-GUEST-' + prefix + ' ') or line == 'QSNAP-GUEST-' + prefix:
                return line[len('QSNAP-GUEST-' + prefix):].strip()
        return None

    def close(self):
        if self.serial:
            self.serial.close()
            self.serial = None
