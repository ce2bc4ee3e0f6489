#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""UEFI domains and their NVRAM kept by snapshots (issue #14).

A domain with <os><loader readonly='yes' type='pflash'>OVMF_CODE</loader>
<nvram template='OVMF_VARS'/></os> boots Debian's OVMF (no OS needed: it
runs to its shell and writes its variable store on the way). OVMF stops
with "KVM internal error" under this machine kind's nested KVM, so these
domains are <domain type='qemu'> (TCG), as libvirt means it.

- Start: the per-domain store is created from the template
  (<state>/nvram/<uuid>_VARS.fd, 0600), QEMU runs it as pflash1
  (query-named-block-nodes), GetXMLDesc names it, and OVMF writes it.
- External snapshot (offline and live): a copy of the store beside it,
  byte-equal at the snapshot's point in time, named in the snapshot's
  metadata (<qsnap:nvram file=…/>); the store changed; Revert → the store
  is byte-equal to the copy again (also when qsnapd is killed right after
  the revert switched the definition: the recovery restores it); Delete →
  the copy is gone.
- Internal snapshot with a qcow2 store, live (with memory) and offline:
  the store holds the tag, Revert brings its content back (qemu-img
  compare; live, QEMU also writes the flash back from the memory state),
  Delete removes the tags.
- Internal snapshot with a raw store: Unsupported, the reason in the
  message, nothing changed.
"""

import filecmp
import os
import subprocess

import qsnaptest as q

D = q.DOMAIN_IFACE
S = q.SNAPSHOT_IFACE
E = q.ERROR_PREFIX
DISK_ONLY = 16
REVERT_PAUSED, REVERT_FORCE = 2, 4
CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'


def uefi_os(fmt=None):
    return ("    <loader readonly='yes' type='pflash'>%s</loader>\n"
            "    <nvram template='%s'%s/>\n" % (CODE, VARS, " format='%s'" % fmt if fmt else ''))


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def internal_tags(path):
    out = subprocess.run(['qemu-img', 'snapshot', '-U', '-l', path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, check=True).stdout
    return [line.split()[1] for line in out.splitlines()[2:] if line.strip()]


class UefiTestCase(q.QsnapTestCase):
    def define(self, name, fmt=None):
        img = self.h.create_image(name + '.qcow2')
        text = q.domain_xml(name, [q.Disk('vda', img)], domain_type='qemu')
        text = text.replace('  </os>', uefi_os(fmt) + '  </os>')
        dom = self.h.call(q.MANAGER_PATH, q.MANAGER_IFACE, 'DefineDomain', (text, 0), 'st')
        uuid = self.h.get_property(dom, D, 'UUID')
        store = os.path.join(self.h.state_dir, 'nvram', '%s_VARS.%s' % (uuid, 'qcow2' if fmt == 'qcow2' else 'fd'))
        return dom, img, store

    def start(self, dom, store, fmt='raw'):
        self.h.call(dom, D, 'Start', (0,), 't', timeout=60)
        nodes = self.h.qmp(dom, 'query-named-block-nodes')['return']
        fdsets = self.h.qmp(dom, 'query-fdsets')['return']
        # QEMU opened neither: it runs them as /dev/fdset/N, which qsnapd filled.
        files = {n['node-name']: self.h.qemu_file_name(dom, n['file'], fdsets) for n in nodes}
        self.assertEqual(files.get('pflash1'), store, 'QEMU runs the store as pflash1')
        self.assertEqual(files.get('pflash0'), CODE)
        # OVMF writes its variables on its first boot.
        if fmt == 'raw':
            q.wait_until(lambda: not filecmp.cmp(store, VARS, shallow=False), 120, 'OVMF writing its variable store')

    def snapshot(self, dom, name, flags=0):
        return self.h.call(dom, D, 'CreateSnapshot', ('<domainsnapshot><name>%s</name></domainsnapshot>' % name, flags),
                           'st', timeout=120)

    def delete(self, snap):
        """Delete; a merge job must complete."""
        path = self.h.call(snap, S, 'Delete', (0,), 't', timeout=120)
        if path != '/':
            q.wait_until(lambda: self.h.get_property(path, q.JOB_IFACE, 'State') in ('completed', 'failed', 'canceled'),
                         120, 'the delete job %s ends' % path)
            self.assertEqual(self.h.get_property(path, q.JOB_IFACE, 'State'), 'completed')

    def scribble(self, store):
        """Changes the store offline the way a guest's SetVariable would not
        bother to: 4 KiB of 0x5a in the middle."""
        with open(store, 'r+b') as f:
            f.seek(0x20000)
            f.write(b'\x5a' * 4096)


class StoreTest(UefiTestCase):
    def test_start_creates_the_store(self):
        dom, _, store = self.define('u')
        self.assertFalse(os.path.exists(store))
        self.assertIn('<nvram template="%s">%s</nvram>' % (VARS, store), self.h.call(dom, D, 'GetXMLDesc', (0,), 't'))
        self.start(dom, store)
        self.assertEqual(os.stat(store).st_mode & 0o777, 0o600)
        self.assertEqual(os.path.getsize(store), os.path.getsize(VARS))


class ExternalTest(UefiTestCase):
    def test_external_snapshot_keeps_and_revert_restores_the_store(self):
        dom, img, store = self.define('u')
        self.start(dom, store)
        self.h.call(dom, D, 'Stop', (0,), 't', timeout=60)
        before = read(store)

        # Offline: the copy is the store of this moment, byte for byte.
        s1 = self.snapshot(dom, 's1', DISK_ONLY)
        copy = store + '.s1'
        self.assertTrue(filecmp.cmp(store, copy, shallow=False))
        self.assertEqual(os.stat(copy).st_mode & 0o777, 0o600)
        xml = self.h.call(s1, S, 'GetXMLDesc', (0,), 't')
        self.assertIn("file='%s'" % copy, xml)
        self.assertIn('http://example.org/qsnap/1', xml)

        self.scribble(store)
        self.assertNotEqual(read(store), before)
        self.h.call(s1, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(read(store), before, 'the store is the snapshot\'s again')
        self.assertTrue(filecmp.cmp(store, copy, shallow=False))

        # Live: a copy too; the metadata survives a restart of qsnapd.
        self.h.call(dom, D, 'Start', (0,), 't', timeout=60)
        s2 = self.snapshot(dom, 's2', DISK_ONLY)
        copy2 = store + '.s2'
        self.assertTrue(os.path.exists(copy2))
        self.h.restart_daemon(kill=False)
        self.assertIn("file='%s'" % copy2, self.h.call(s2, S, 'GetXMLDesc', (0,), 't'))
        # A running domain: Revert FORCE stops it and restores the copy.
        saved2 = read(copy2)
        self.h.call(s2, S, 'Revert', (REVERT_FORCE,), 't', timeout=120)
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'shutoff')
        self.assertEqual(read(store), saved2)

        # Delete takes the copy along.
        self.delete(s2)
        self.assertFalse(os.path.exists(copy2))
        self.assertTrue(os.path.exists(copy))


    def test_revert_interrupted_after_the_switch(self):
        # qsnapd killed right after the definition was switched, before it
        # restored the store: the next qsnapd finishes the revert, store too.
        dom, img, store = self.define('u')
        self.start(dom, store)
        self.h.call(dom, D, 'Stop', (0,), 't', timeout=60)
        s1 = self.snapshot(dom, 's1', DISK_ONLY)
        saved = read(store + '.s1')
        self.scribble(store)
        mark, outcome = self.h.crash_at('revert:switched', s1, S, 'Revert', (0,), 't')
        self.assertIsInstance(outcome, q.DBusCallError)
        self.assertIn('finished a revert interrupted after the definition was switched', self.h.daemon_log_since(mark))
        self.assertEqual(read(store), saved, 'the recovery restored the snapshot\'s variable store')


class InternalTest(UefiTestCase):
    def test_internal_with_qcow2_store(self):
        dom, img, store = self.define('u', fmt='qcow2')
        self.start(dom, store, fmt='qcow2')
        self.assertEqual(os.stat(store).st_mode & 0o777, 0o600, 'the qcow2 store is made 0600')
        s1 = self.snapshot(dom, 'i1')   # internal, with memory
        self.assertEqual(internal_tags(store), ['i1'])
        self.assertEqual(internal_tags(img), ['i1'])
        ref = os.path.join(self.h.images_dir, 'ref.raw')
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw', '-l', 'snapshot.name=i1', store, ref], check=True)

        self.h.call(dom, D, 'Stop', (0,), 't', timeout=60)
        q.qemu_io_write_pattern(store, 0x5a, 0x20000, 4096)
        self.assertNotEqual(subprocess.run(['qemu-img', 'compare', '-U', '-F', 'raw', store, ref]).returncode, 0)
        self.h.call(s1, S, 'Revert', (REVERT_PAUSED,), 't', timeout=120)
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'paused')
        q.qemu_img_compare(ref, store, fmt_a='raw', fmt_b='qcow2')

        # Offline (qemu-img snapshot): the store's tag is made and applied
        # with the disks' (no memory state here to bring the flash back).
        self.h.call(dom, D, 'Stop', (0,), 't', timeout=60)
        s2 = self.snapshot(dom, 'i2')
        self.assertEqual(internal_tags(store), ['i1', 'i2'])
        ref2 = os.path.join(self.h.images_dir, 'ref2.raw')
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw', store, ref2], check=True)
        q.qemu_io_write_pattern(store, 0xa5, 0x30000, 4096)
        self.assertNotEqual(subprocess.run(['qemu-img', 'compare', '-U', '-F', 'raw', store, ref2]).returncode, 0)
        self.h.call(s2, S, 'Revert', (0,), 't', timeout=120)
        self.assertEqual(self.h.get_property(dom, D, 'State'), 'shutoff')
        q.qemu_img_compare(ref2, store, fmt_a='raw', fmt_b='qcow2')

        self.delete(s2)
        self.delete(s1)
        self.assertEqual(internal_tags(store), [])
        self.assertEqual(internal_tags(img), [])

    def test_internal_with_raw_store_is_refused(self):
        dom, img, store = self.define('u')
        self.start(dom, store)
        for state in ('running', 'shutoff'):
            with self.assertDBusError(E + 'Unsupported') as err:
                self.snapshot(dom, 'i-' + state)
            self.assertIn('qcow2', str(err.exception))
            self.assertIn(store, str(err.exception))
            self.assertEqual(self.h.get_property(dom, D, 'Snapshots'), [])
            self.assertEqual(internal_tags(img), [])
            if state == 'running':
                self.h.call(dom, D, 'Stop', (0,), 't', timeout=60)


if __name__ == '__main__':
    q.main()
