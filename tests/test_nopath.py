#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""QEMU opens no path itself, devices included (issue #10 §3,
docs/security.md "Device files by descriptor"): a CD-ROM image, the
kernel and initrd of a direct kernel boot and a file serial are opened by
qsnapd (no symbolic link in any component, regular files only) and reach
QEMU as descriptors — the CD-ROM as a read-only raw -blockdev over an fd
set, the kernel and initrd as inherited descriptors named
/proc/self/fd/N, the serial file in an fd set (-chardev
file,path=/dev/fdset/N). A real guest (tests/lib/qsnapguest.py) under
QEMU's own user boots from them and reads the CD-ROM.

The attack: each of these files, approved in the definition, is swapped
for a symbolic link to a root-only file outside after the definition was
made: Start is refused with QemuFailed naming the path, the outside
files keep their checksums, no QEMU runs. Then, with the real files, the
guest boots, sees the CD-ROM's real content, its append='on' console
keeps what the file held while a second file serial without append is
truncated (QEMU's open flags act through the descriptor), and
/proc/<qemu>/cmdline names none of the files (nor their folder).
"""
import hashlib
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))

import qsnapguest as g  # noqa: E402
import qsnaptest as q  # noqa: E402

D = q.DOMAIN_IFACE
MARKER = 'QSNAP-CDROM-NOPATH-31337'


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def cdrom_xml(path):
    return '\n'.join([
        "    <disk type='file' device='cdrom'>",
        "      <driver name='qemu' type='raw'/>",
        "      <source file='%s'/>" % path,
        "      <target dev='sda' bus='sata'/>",
        '      <readonly/>',
        '    </disk>'])


class NoPathTest(q.UnprivilegedQemu, q.QsnapTestCase):
    harness_options = {'image_root': True, 'daemon_args': ['--qemu-user=' + q.QEMU_USER]}

    def test_device_files_by_descriptor(self):
        h = self.h
        folder, _manifest = g.build()
        devdir = h.image_path('dev')         # the device files' folder (below the image root)
        os.mkdir(devdir, 0o700)
        kernel, initrd = os.path.join(devdir, 'vmlinuz'), os.path.join(devdir, 'initrd.gz')
        shutil.copyfile(os.path.join(folder, 'vmlinuz'), kernel)
        shutil.copyfile(os.path.join(folder, 'initrd.gz'), initrd)
        cdrom = g.make_cdrom(os.path.join(devdir, 'cd.raw'), MARKER)
        disk = h.image_path('np.qcow2')
        g.make_data_disk(disk)
        serial = os.path.join(devdir, 'np.serial')
        open(serial, 'a').close()
        self.assertEqual(os.stat(h.images_dir).st_uid, 0)
        outside = os.path.join(h.root, 'outside')
        os.mkdir(outside, 0o700)
        secret = os.path.join(outside, 'root-only-secret')
        with open(secret, 'w') as f:
            f.write('the root-only secret\n')
        os.chmod(secret, 0o600)
        victim = os.path.join(outside, 'victim.log')
        with open(victim, 'w') as f:
            f.write('a log QEMU must not write\n')
        os.chmod(victim, 0o600)
        sums = {p: sha256(p) for p in (secret, victim)}

        # ttyS1 to a file without append: QEMU truncates it through its copy.
        serial1 = os.path.join(devdir, 'np.serial1')
        with open(serial1, 'w') as f:
            f.write('STALE\n')
        xml = g.domain_xml('np', disk, serial, cdrom_xml(cdrom) + "\n    <serial type='file'><source path='%s'/>"
                           "<target port='1'/></serial>" % serial1)
        xml = xml.replace(os.path.join(folder, 'vmlinuz'), kernel).replace(os.path.join(folder, 'initrd.gz'), initrd)
        self.assertIn(kernel, xml)
        dom = h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (xml, 0), 'st')

        # Approved by name; then each name turned into a link to outside.
        for path, target in ((cdrom, secret), (kernel, secret), (initrd, secret), (serial, victim)):
            with q.swapped_for_link(path, target):
                with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed') as cm:
                    h.call(dom, D, 'Start', (0,), 't', timeout=60)
                self.assertIn(path, cm.exception.message)
                self.assertEqual(h.get_property(dom, D, 'State'), 'shutoff')
            for p, s in sums.items():
                self.assertEqual(sha256(p), s, '%s changed (%s swapped)' % (p, path))
        # A folder on the way swapped for a link: the same.
        # (The same files, found through the link, are still refused.)
        with q.swapped_for_link(devdir, devdir + '.real'):
            with self.assertDBusError(q.ERROR_PREFIX + 'QemuFailed') as cm:
                h.call(dom, D, 'Start', (0,), 't', timeout=60)
            self.assertIn(devdir, cm.exception.message)

        # The real files: the guest boots from the descriptors, reads the
        # CD-ROM, writes its console into the file qsnapd opened.
        with open(serial, 'w') as f:
            f.write('OLD-LINE\n')
        log = g.SerialLog(serial)
        self.addCleanup(log.close)
        h.call(dom, D, 'Start', (0,), 't', timeout=60)
        log.wait_for(r'^QSNAP-GUEST-BOOT ', what='the guest kernel booting')
        m = log.wait_for(r'^QSNAP-GUEST-CDROM ?(.*)$', what='the guest reading the CD-ROM')
        self.assertEqual(m.group(1).strip(), MARKER)
        with open(serial) as f:
            self.assertEqual(f.readline(), 'OLD-LINE\n', "append='on' kept what was there")
        self.assertEqual(os.path.getsize(serial1), 0, 'no append: QEMU truncated the file through its descriptor')
        pid = h.qemu_pid(dom)
        cmdline = q._proc_cmdline(pid)
        for p in (cdrom, kernel, initrd, serial, serial1, disk, devdir, h.images_dir):
            self.assertNotIn(p, cmdline, 'QEMU is given a name it would look up itself')
        self.assertIn('/proc/self/fd/', cmdline)
        self.assertIn('path=/dev/fdset/', cmdline)
        # QEMU's view of the CD-ROM: qsnapd's descriptor.
        blocks = {b['device'] or b.get('qdev', ''): b for b in h.qmp(dom, 'query-block')['return']}
        files = [b['inserted']['file'] for b in blocks.values() if 'inserted' in b]
        self.assertTrue(files and all(f.startswith('/dev/fdset/') or f.startswith('json:') for f in files), files)
        h.call(dom, D, 'Stop', (0,), 't')
        for p, s in sums.items():
            self.assertEqual(sha256(p), s, '%s changed' % p)


if __name__ == '__main__':
    unittest.main()
