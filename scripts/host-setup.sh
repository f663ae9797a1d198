#!/bin/sh
# Installs what cniscope needs from Debian on a fresh machine (run as root), links kernel headers
# for bcc and mounts tracefs. Idempotent: a second run installs nothing.
set -eu

PKGS="iperf3 iputils-ping iptables nftables bpftool ethtool iproute2 python3-bpfcc python3-venv \
python3-dev linux-headers-amd64 dnsmasq-base tmux libcap2-bin procps util-linux kmod chromium strace \
prometheus"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "cniscope: these Debian packages are missing and installing them needs root:$missing" >&2
        exit 1
    fi
    echo "cniscope: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ "$(id -u)" = 0 ] || exit 0

# bcc compiles against headers under /lib/modules/$(uname -r)/{build,source}. When the running kernel
# has no Debian headers of its own (a custom VM kernel), link the newest installed headers: bcc's
# tracepoint programs read their layouts from tracefs, so a close version is enough.
kver=$(uname -r)
if [ ! -e "/lib/modules/$kver/build/Makefile" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
    if [ -n "$hdr" ]; then
        common=$(echo "$hdr" | sed 's/-amd64$/-common/')
        mkdir -p "/lib/modules/$kver"
        ln -sfn "$hdr" "/lib/modules/$kver/build"
        [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$kver/source"
        echo "cniscope: linked kernel headers $hdr for bcc"
    fi
fi

if [ ! -e /sys/kernel/tracing/available_events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
