#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A stand-in for qsnapd, used only by tests/test_harness.py to check the
harness itself (start, kill -9, restart, activation, teardown of "QEMU"
processes, polkit, signals) without depending on the real daemon.

It takes qsnapd's command line, owns org.example.Snapshot1 and serves the
Manager interface from interfaces/org.example.Snapshot1.Manager.xml:
ListDomains, GetDomain (always NoSuchDomain), DefineDomain (polkit-checked
like qsnapd: manage-domains for the caller's bus name unless uid 0; emits
PropertiesChanged for Domains). --fake-qemu starts a daemonized process
that writes <runtime-dir>/fake-qemu.pid, standing in for QEMU.
"""

import argparse
import os
import signal
import sys
import time

import gi

gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qsnaptest  # noqa: E402


def spawn_fake_qemu(runtime_dir):
    """Double fork + setsid like QEMU's -daemonize; its command line names
    the runtime dir, as QEMU's -pidfile/-qmp arguments do."""
    pidfile = os.path.join(runtime_dir, 'fake-qemu.pid')
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pidfile, 'w') as f:
                f.write('%d\n' % os.getpid())
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            # One process, like QEMU: no children left behind when killed.
            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(1e6)', 'fake-qemu', pidfile])
        os._exit(0)
    os.wait()
    # Like QEMU's -daemonize: the pid file exists once the parent returns.
    for _ in range(500):
        if os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
            return
        time.sleep(0.01)
    raise RuntimeError('fake QEMU did not write %s' % pidfile)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--address', required=True)
    p.add_argument('--state-dir', required=True)
    p.add_argument('--runtime-dir', required=True)
    p.add_argument('--polkit', default='yes')
    p.add_argument('--idle-timeout', type=int, default=0)
    p.add_argument('--log-level', default='info')
    p.add_argument('--fake-qemu', action='store_true')
    p.add_argument('--exit-status', type=int, default=None,
                   help='exit with this status once the name is taken (a "crash")')
    args = p.parse_args()

    loop = GLib.MainLoop()
    conn = Gio.DBusConnection.new_for_address_sync(
        args.address,
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None, None)
    with open(qsnaptest.source_path('interfaces', 'org.example.Snapshot1.Manager.xml')) as f:
        node = Gio.DBusNodeInfo.new_for_xml(f.read())
    iface = node.lookup_interface(qsnaptest.MANAGER_IFACE)
    domains = []

    def authorized(sender):
        if args.polkit != 'yes':
            return True
        uid = conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                             'GetConnectionUnixUser', GLib.Variant('(s)', (sender,)), None,
                             Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
        if uid == 0:
            return True
        res = conn.call_sync(qsnaptest.POLKIT_NAME, qsnaptest.POLKIT_PATH, qsnaptest.POLKIT_IFACE,
                             'CheckAuthorization',
                             GLib.Variant('((sa{sv})sa{ss}us)', (qsnaptest.subject_bus_name(sender),
                                                                qsnaptest.ACTION_MANAGE_DOMAINS, {}, 0, '')),
                             None, Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
        return res[0]

    def on_call(conn_, sender, path, interface, method, params, invocation):
        sys.stderr.write('fake qsnapd: %s from %s\n' % (method, sender))
        if method == 'ListDomains':
            invocation.return_value(GLib.Variant('(ao)', (domains,)))
        elif method == 'GetDomain':
            invocation.return_dbus_error(qsnaptest.ERROR_PREFIX + 'NoSuchDomain', 'No domain %r.' % params[0])
        elif method == 'DefineDomain':
            if not authorized(sender):
                invocation.return_dbus_error(qsnaptest.ACCESS_DENIED, 'Not authorized by polkit.')
                return
            path = '%s/domain/d%d' % (qsnaptest.MANAGER_PATH, len(domains))
            domains.append(path)
            conn.emit_signal(None, qsnaptest.MANAGER_PATH, qsnaptest.PROPERTIES_IFACE, 'PropertiesChanged',
                             GLib.Variant('(sa{sv}as)', (qsnaptest.MANAGER_IFACE,
                                                        {'Domains': GLib.Variant('ao', domains)}, [])))
            invocation.return_value(GLib.Variant('(o)', (path,)))
        else:
            invocation.return_dbus_error('org.freedesktop.DBus.Error.UnknownMethod', method)

    def on_get(conn_, sender, path, interface, name):
        return {'Version': GLib.Variant('s', '0-fake'), 'Domains': GLib.Variant('ao', domains)}[name]

    conn.register_object(qsnaptest.MANAGER_PATH, iface, on_call, on_get, None)
    if args.fake_qemu:
        spawn_fake_qemu(args.runtime_dir)
    # Before the name is taken: the harness may send SIGTERM as soon as it
    # sees the name owned.
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    reply = conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                           'RequestName', GLib.Variant('(su)', (qsnaptest.BUS_NAME, 4)), None,
                           Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
    if reply != 1:
        sys.stderr.write('fake qsnapd: RequestName answered %d\n' % reply)
        return 1
    sys.stderr.write('fake qsnapd %d: owns %s\n' % (os.getpid(), qsnaptest.BUS_NAME))
    if args.exit_status is not None:
        return args.exit_status
    loop.run()
    sys.stderr.write('fake qsnapd %d: SIGTERM, exiting\n' % os.getpid())
    return 0


if __name__ == '__main__':
    sys.exit(main())
