#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds the tiny Linux guest the real-guest tests boot, from Debian
packages only, and the ext4 data disk it writes to.

    build-guest.py [--cache DIR]          builds (or finds) the guest; prints its folder
    build-guest.py disk OUT.qcow2 [SIZE]  an empty ext4 filesystem as a qcow2 image
    build-guest.py verify IMAGE [FMT]     checks an image's filesystem and data files offline (JSON)

The guest (see /work/shared/notes/real-guest.md for the measured recipe):
- Debian's kernel: the package linux-image-amd64 depends on is fetched with
  `apt-get download` and extracted with `dpkg-deb -x` (never installed, so
  nothing in /boot changes); its vmlinuz is the guest's kernel.
- An initramfs with busybox-static, the modules the devices need (Debian
  builds virtio, ext4, AHCI and the CD-ROM as modules) in dependency order
  read from each module's own depends=, and qemu-ga with every library
  ldd lists.
- /init mounts /dev/vda (ext4) on /mnt, checks the data files there,
  reports the devices it sees, starts qemu-ga on the virtio port named
  org.qemu.guest_agent.0 and then writes forever: one data file and the
  counter per round, each written to a temporary file, fsync'ed and
  renamed, so a snapshot at any instant holds whole files only.

Everything the tests read is a line on the serial console (ttyS0) starting
with "QSNAP-GUEST-": BOOT, MODULE-FAILED <m>, NET <ifname> <mac>,
CDROM <first line of /dev/sr0> (with qsnap.cdrom=1), DMI-SERIAL <SMBIOS system serial>, NO-DISK, MOUNT-FAILED, VERIFY ok <n>
counter=<c> | VERIFY bad <file>, AGENT <port> | NO-AGENT, READY,
COUNT <c> (after each round), THEN poweroff|reboot (right before it does
what qsnap.then= on its command line says, after three rounds), SERIAL1 (written to ttyS1 when it exists),
IP <addr> | IP-FAILED (eth0 up with qsnap.ip=ADDR/PREFIX from the command line),
AGENT-KILLED (with qsnap.kill_agent=thaw: qemu-ga killed after its first thaw).

A data file /mnt/data/fN is "counter <c>\\n", base64 lines, then
"sum <sha256 of everything before this line>\\n". /mnt/counter holds the
counter of the last round.

The result is cached in $QSNAP_GUEST_CACHE (default /var/tmp/qsnap-guest)
under a key of the kernel package's version, the busybox and qemu-ga
versions and this script's own hash: a run builds it once (under a lock,
so parallel tests wait for one build), later runs reuse it.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = '/var/tmp/qsnap-guest'
QEMU_IMG = '/usr/bin/qemu-img'
MKFS_EXT4 = '/usr/sbin/mkfs.ext4'
BUSYBOX = '/usr/bin/busybox'
QEMU_GA = '/usr/sbin/qemu-ga'
DEBUGFS = '/usr/sbin/debugfs'
E2FSCK = '/usr/sbin/e2fsck'
DUMPE2FS = '/usr/sbin/dumpe2fs'

# The modules the guest loads; their dependencies are added before them.
WANTED_MODULES = (
    'virtio_pci', 'virtio_blk', 'virtio_console', 'virtio_net', 'virtio_scsi',
    'crc32c_generic', 'libcrc32c', 'ext4',
    'ahci', 'ata_piix', 'sr_mod',
)
# Soft dependencies modinfo would name (crypto-crc32c is crc32c_generic here).
SOFT_FIRST = ('crc32c_generic',)

INIT = r'''#!/bin/busybox sh
# qsnapd's test guest (tests/guest/build-guest.py). Reports on ttyS0.
/bin/busybox mkdir -p /proc /sys /dev /run /var /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ln -s /run /var/run
say() { echo "QSNAP-GUEST-$*" > /dev/ttyS0; }
say BOOT "$(uname -r)"
for m in $(cat /etc/modules.order); do
        insmod /lib/modules/$m.ko 2>/dev/null || say MODULE-FAILED $m
done

wait_for() {  # wait_for PATH TENTHS
        i=0
        while [ ! -e "$1" ] && [ $i -lt $2 ]; do usleep 100000; i=$((i + 1)); done
        [ -e "$1" ]
}

# Devices: each one the tests gave the guest says it is there. The PCI
# bus is complete by now: eth0 is waited for only when a virtio network
# card is on it (3 s saved on every boot without one).
nic=
for d in /sys/bus/pci/devices/*; do
        [ "$(cat $d/vendor)" = 0x1af4 ] || continue
        case "$(cat $d/device)" in 0x1000|0x1041) nic=1;; esac
done
[ -z "$nic" ] || wait_for /sys/class/net/eth0 30
for n in /sys/class/net/*; do
        name=${n##*/}
        [ "$name" = lo ] || say NET "$name" "$(cat $n/address)"
done
# qsnap.ip=ADDR/PREFIX on the kernel command line: eth0 up with it (a
# ping through the bridge the test gave the guest).
addr=$(sed -n 's/.*qsnap\.ip=\([0-9./]*\).*/\1/p' /proc/cmdline)
if [ -n "$addr" ]; then
        ip link set lo up
        if ip addr add "$addr" dev eth0 && ip link set eth0 up; then say IP "$addr"; else say IP-FAILED; fi
fi
# qsnap.cdrom=1 on the kernel command line: a CD-ROM is there (waited for;
# 3 s saved on every boot without one).
case " $(cat /proc/cmdline) " in
*" qsnap.cdrom=1 "*)
        if wait_for /dev/sr0 30; then
                say CDROM "$(dd if=/dev/sr0 bs=2048 count=1 2>/dev/null | head -n 1)"
        fi;;
esac
echo "QSNAP-GUEST-SERIAL1 $(uname -r)" 2>/dev/null > /dev/ttyS1  # EIO when no second port
say DMI-SERIAL "$(cat /sys/class/dmi/id/product_serial 2>/dev/null)"  # -smbios type=1,serial=…

# The agent, on the port whose name QEMU gave it (no udev: no /dev/virtio-ports).
agent=
for p in /sys/class/virtio-ports/*; do
        [ -e "$p/name" ] && [ "$(cat $p/name)" = org.qemu.guest_agent.0 ] && agent=/dev/${p##*/}
done
if [ -n "$agent" ]; then
        wait_for "$agent" 30
        # Its fsfreeze hook marks the first thaw (qsnap.kill_agent=thaw).
        printf '#!/bin/sh\n[ "$1" != thaw ] || touch /run/qsnap-thawed\n' > /run/fsfreeze-hook
        chmod 755 /run/fsfreeze-hook
        qemu-ga -m virtio-serial -p "$agent" -t /run --fsfreeze-hook=/run/fsfreeze-hook > /dev/ttyS0 2>&1 &
        agent_pid=$!
        say AGENT "$agent"
else
        say NO-AGENT
fi

if ! wait_for /dev/vda 50; then
        say NO-DISK
        exec sh -c 'while true; do sleep 3600; done'
fi
if ! mount -t ext4 /dev/vda /mnt; then
        say MOUNT-FAILED
        exec sh -c 'while true; do sleep 3600; done'
fi
mkdir -p /mnt/data
rm -f /mnt/data/*.tmp /mnt/counter.tmp

# Every data file must verify: what a snapshot kept is whole files.
n=0
bad=
for f in /mnt/data/f*; do
        [ -e "$f" ] || continue
        want=$(tail -n 1 "$f" | sed -n 's/^sum //p')
        have=$(head -n -1 "$f" | sha256sum | cut -d ' ' -f 1)
        if [ -z "$want" ] || [ "$want" != "$have" ]; then bad="$bad ${f##*/}"; fi
        n=$((n + 1))
done
c=$(cat /mnt/counter 2>/dev/null)
[ -n "$c" ] || c=0
if [ -n "$bad" ]; then say VERIFY bad$bad; else say VERIFY ok $n counter=$c; fi
say READY

# qsnap.then=poweroff|reboot on the kernel command line: after 3 rounds.
then=$(sed -n 's/.*qsnap\.then=\([a-z]*\).*/\1/p' /proc/cmdline)
rounds=0
while true; do
        if [ -n "$then" ] && [ $rounds -ge 3 ]; then
                say THEN $then
                $then -f
        fi
        rounds=$((rounds + 1))
        c=$((c + 1))
        f=/mnt/data/f$((c % 8))
        { echo "counter $c"; head -c 3000 /dev/urandom | base64; } > $f.tmp
        echo "sum $(sha256sum < $f.tmp | cut -d ' ' -f 1)" >> $f.tmp
        sync $f.tmp
        mv $f.tmp $f
        echo $c > /mnt/counter.tmp
        sync /mnt/counter.tmp
        mv /mnt/counter.tmp /mnt/counter
        sync /mnt/data /mnt
        say COUNT $c
        # qsnap.kill_agent=thaw on the kernel command line: qemu-ga is
        # killed in the first round after its first thaw was done (tests
        # of an agent that dies: the quiesced operation before is whole).
        case " $(cat /proc/cmdline) " in
        *" qsnap.kill_agent=thaw "*)
                if [ -n "$agent_pid" ] && [ -e /run/qsnap-thawed ]; then
                        kill -9 $agent_pid
                        agent_pid=
                        say AGENT-KILLED
                fi;;
        esac
        usleep 200000
done
'''


def log(msg):
    print('build-guest: ' + msg, file=sys.stderr)


def run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kw)
    if r.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(argv), r.returncode, (r.stderr or r.stdout).strip()))
    return r.stdout


def kernel_package():
    """(name, version) of the kernel package linux-image-amd64 depends on."""
    out = run(['apt-cache', 'depends', 'linux-image-amd64'])
    m = re.search(r'Depends:\s*(linux-image-[0-9][^\s]*-amd64)', out)
    if not m:
        raise RuntimeError('apt-cache depends linux-image-amd64 names no kernel package:\n' + out)
    name = m.group(1)
    show = run(['apt-cache', 'show', '--no-all-versions', name])
    v = re.search(r'^Version:\s*(\S+)', show, re.M)
    if not v:
        raise RuntimeError('apt-cache show %s has no Version' % name)
    return name, v.group(1)


def dpkg_version(pkg):
    return run(['dpkg-query', '-W', '-f=${Version}', pkg]).strip()


def cache_key():
    name, version = kernel_package()
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), 'rb') as f:
        h.update(f.read())
    for p in ('busybox-static', 'qemu-guest-agent'):
        h.update(('%s=%s\n' % (p, dpkg_version(p))).encode())
    return name, version, '%s_%s_%s' % (name, version.replace(':', '_'), h.hexdigest()[:12])


def fetch_kernel_deb(name, version, workdir):
    """The .deb from apt's archive when it is there, else apt-get download."""
    arch = '/var/cache/apt/archives/%s_%s_amd64.deb' % (name, version.replace(':', '%3a'))
    if os.path.exists(arch):
        return arch
    run(['apt-get', 'download', '%s=%s' % (name, version)], cwd=workdir)
    debs = [f for f in os.listdir(workdir) if f.startswith(name + '_') and f.endswith('.deb')]
    if len(debs) != 1:
        raise RuntimeError('apt-get download %s left %r' % (name, debs))
    return os.path.join(workdir, debs[0])


def module_info(path):
    """(depends, soft-pre) of a .ko, read from its .modinfo strings (no kmod here)."""
    with open(path, 'rb') as f:
        data = f.read()
    deps, soft = [], []
    m = re.search(rb'(?:^|\0)depends=([^\0]*)\0', data)
    if m and m.group(1):
        deps = m.group(1).decode().split(',')
    for s in re.finditer(rb'(?:^|\0)softdep=pre:\s*([^\0]*)\0', data):
        soft += s.group(1).decode().split()
    return deps, soft


def module_order(moddir):
    """The .ko files for WANTED_MODULES and their dependencies, each after
    what it needs (virtio_ring before virtio, and so on)."""
    paths = {}
    for root, _, files in os.walk(moddir):
        for f in files:
            if f.endswith('.ko'):
                paths[f[:-3].replace('-', '_')] = os.path.join(root, f)
    order, state = [], {}

    def visit(name):
        name = name.replace('-', '_')
        if name.startswith('crypto_'):
            name = name[len('crypto_'):]
        if name not in paths and name + '_generic' in paths:
            name += '_generic'  # a crypto algorithm's name: its generic module
        if state.get(name) == 'done':
            return
        if state.get(name) == 'busy':
            raise RuntimeError('module dependency cycle at ' + name)
        if name not in paths:
            raise RuntimeError('module %s is not in the kernel package' % name)
        state[name] = 'busy'
        deps, soft = module_info(paths[name])
        for d in soft + deps:
            if d:
                visit(d)
        state[name] = 'done'
        order.append(name)

    for name in SOFT_FIRST + WANTED_MODULES:
        visit(name)
    return [(n, paths[n]) for n in order]


def ldd_libraries(binary):
    out = run(['ldd', binary])
    libs = []
    for line in out.splitlines():
        m = re.search(r'=>\s*(/\S+)', line) or re.match(r'\s*(/\S+)', line)
        if m:
            libs.append(m.group(1))
    return libs


def copy_into(root, path):
    dst = os.path.join(root, path.lstrip('/'))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.realpath(path), dst)


def build(outdir, name, version):
    with tempfile.TemporaryDirectory(prefix='qsnap-guest-build-', dir=os.path.dirname(outdir)) as work:
        log('kernel package %s %s' % (name, version))
        deb = fetch_kernel_deb(name, version, work)
        kdir = os.path.join(work, 'kernel')
        run(['dpkg-deb', '-x', deb, kdir])
        vmlinuz = [f for f in os.listdir(os.path.join(kdir, 'boot')) if f.startswith('vmlinuz-')]
        if len(vmlinuz) != 1:
            raise RuntimeError('the kernel package has %r in boot/' % vmlinuz)
        kver = vmlinuz[0][len('vmlinuz-'):]
        moddir = os.path.join(kdir, 'lib', 'modules', kver)

        root = os.path.join(work, 'root')
        for d in ('bin', 'sbin', 'etc', 'lib/modules', 'proc', 'sys', 'dev', 'run', 'tmp', 'mnt'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
        modules = module_order(moddir)
        for n, p in modules:
            shutil.copy2(p, os.path.join(root, 'lib', 'modules', n + '.ko'))
        with open(os.path.join(root, 'etc', 'modules.order'), 'w') as f:
            f.write('\n'.join(n for n, _ in modules) + '\n')
        copy_into(root, QEMU_GA)
        for lib in ldd_libraries(QEMU_GA):
            copy_into(root, lib)
        with open(os.path.join(root, 'init'), 'w') as f:
            f.write(INIT)
        os.chmod(os.path.join(root, 'init'), 0o755)

        initrd = os.path.join(work, 'initrd.gz')
        with open(initrd, 'wb') as out:
            find = subprocess.Popen(['find', '.'], cwd=root, stdout=subprocess.PIPE)
            cpio = subprocess.Popen([BUSYBOX, 'cpio', '-o', '-H', 'newc'], cwd=root, stdin=find.stdout,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            find.stdout.close()
            gz = subprocess.Popen(['gzip', '-1'], stdin=cpio.stdout, stdout=out)
            cpio.stdout.close()
            if gz.wait() != 0 or cpio.wait() != 0 or find.wait() != 0:
                raise RuntimeError('packing the initramfs failed')

        staging = os.path.join(work, 'out')
        os.makedirs(staging)
        shutil.copy2(os.path.join(kdir, 'boot', vmlinuz[0]), os.path.join(staging, 'vmlinuz'))
        shutil.move(initrd, os.path.join(staging, 'initrd.gz'))
        for f in ('vmlinuz', 'initrd.gz'):
            os.chmod(os.path.join(staging, f), 0o644)
        with open(os.path.join(staging, 'manifest.json'), 'w') as f:
            json.dump({'kernel_package': name, 'kernel_version': version, 'kernel_release': kver,
                       'modules': [n for n, _ in modules], 'cmdline': 'console=ttyS0 quiet panic=-1'}, f, indent=1)
        os.chmod(staging, 0o755)
        os.rename(staging, outdir)


def prune(cache, keep):
    """Builds of other keys (an older script, kernel or qemu-ga) untouched
    for a day go: each is about 14 MB. A younger one may still be booted
    by a run from another checkout."""
    for entry in os.listdir(cache):
        path = os.path.join(cache, entry)
        if path == keep or entry.startswith('.') or not os.path.isdir(path):
            continue
        if time.time() - os.path.getmtime(path) > 86400:
            shutil.rmtree(path, ignore_errors=True)
            log('removed the old build ' + path)


def guest(cache):
    os.makedirs(cache, exist_ok=True)
    os.chmod(cache, 0o755)
    name, version, key = cache_key()
    outdir = os.path.join(cache, key)
    with open(os.path.join(cache, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(outdir, 'manifest.json')):
            shutil.rmtree(outdir, ignore_errors=True)
            build(outdir, name, version)
            log('built ' + outdir)
            prune(cache, outdir)
    return outdir


def make_disk(out, size='64M'):
    """An empty ext4 filesystem in a new qcow2 image at out (mode 0600)."""
    raw = out + '.raw-tmp'
    try:
        run(['truncate', '-s', size, raw])
        run([MKFS_EXT4, '-q', '-F', '-L', 'qsnapdata', raw])
        run([QEMU_IMG, 'convert', '-f', 'raw', '-O', 'qcow2', raw, out])
    finally:
        if os.path.exists(raw):
            os.unlink(raw)
    os.chmod(out, 0o600)
    return out


def file_verifies(text):
    """True when a data file's last line is the sha256 of what precedes it."""
    lines = text.split('\n')
    if len(lines) < 3 or lines[-1] != '' or not lines[-2].startswith('sum '):
        return False
    body = '\n'.join(lines[:-2]) + '\n'
    return hashlib.sha256(body.encode()).hexdigest() == lines[-2][4:]


def verify_image(image, fmt='qcow2'):
    """Checks the filesystem of an image offline, on a raw copy (the image is
    only read, with -U, so a running guest's image works too): the journal
    is replayed first when the image needs it (a crash-consistent snapshot
    does), then `e2fsck -fn` must find nothing, and the data files are read
    with debugfs (no mount). Returns a dict: journal_replayed, fsck_rc,
    fsck_output, counter, files {name: verifies}."""
    with tempfile.TemporaryDirectory(prefix='qsnap-guest-verify-', dir='/var/tmp') as work:
        raw = os.path.join(work, 'fs.raw')
        run([QEMU_IMG, 'convert', '-U', '-f', fmt, '-O', 'raw', image, raw])
        dump = subprocess.run([DUMPE2FS, '-h', raw], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True).stdout
        replayed = 'needs_recovery' in dump
        if replayed:
            run([E2FSCK, '-E', 'journal_only', '-y', raw])
        fsck = subprocess.run([E2FSCK, '-fn', raw], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        listing = run([DEBUGFS, '-R', 'ls -p /data', raw])
        names = [f for f in re.findall(r'/\d+/\d+/\d+/\d+/([^/]+)/', listing) if re.fullmatch(r'f\d+', f)]
        files = {n: file_verifies(run([DEBUGFS, '-R', 'cat /data/' + n, raw])) for n in names}
        counter = run([DEBUGFS, '-R', 'cat /counter', raw]).strip()
        return {'journal_replayed': replayed, 'fsck_rc': fsck.returncode, 'fsck_output': fsck.stdout,
                'counter': int(counter) if counter.isdigit() else None, 'files': files}


def main(argv):
    if argv[:1] == ['disk'] and len(argv) in (2, 3):
        print(make_disk(*argv[1:]))
        return 0
    if argv[:1] == ['verify'] and len(argv) in (2, 3):
        print(json.dumps(verify_image(*argv[1:])))
        return 0
    cache = os.environ.get('QSNAP_GUEST_CACHE') or DEFAULT_CACHE
    if argv[:1] == ['--cache'] and len(argv) == 2:
        cache = argv[1]
    elif argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(guest(cache))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
