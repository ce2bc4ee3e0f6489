#!/bin/bash
# Runs a command (e.g. `meson test -C build …` or tools/run-tests.sh) in a
# private mount namespace whose polkit rules and action folders are private
# copies, so that several test runs on one host never see each other's
# polkit rules or action files. The harness's test user and its host lock
# (/run/lock) stay shared on purpose: the last run out removes the user.
# Needs root.
set -euo pipefail
if [ $# -eq 0 ]; then
        echo "usage: $0 COMMAND [ARG…]" >&2
        exit 2
fi
exec unshare --mount --propagation private /bin/bash -c '
set -e
for d in /etc/polkit-1/rules.d /usr/share/polkit-1/actions; do
        mkdir -p "$d"
        keep=$(mktemp -d)
        cp -a "$d/." "$keep/"
        mount -t tmpfs -o mode=0755 qsnap-isolated "$d"
        cp -a "$keep/." "$d/"
        rm -rf "$keep"
done
exec "$@"' isolated "$@"
