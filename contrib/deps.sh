#!/bin/sh
# Installs what dohgate needs from Debian 12 packages, idempotently (nothing is done when every
# package is already there).
#   contrib/deps.sh          build and run dependencies
#   contrib/deps.sh --test   also the test tools (NSD, kdig, dig, curl, nghttp, h2load, clang, ...)
#   contrib/deps.sh --package  also what contrib/package.sh needs (debhelper, fakeroot, lintian)
#   contrib/deps.sh --bench  also the peers used by tests/bench (unbound, dnsdist, knot-resolver, bind9)
set -eu
PKGS="build-essential cmake pkg-config libnghttp2-dev libssl-dev libldns-dev libevent-dev libxxhash-dev libhttp-parser-dev libsystemd-dev libcap-dev libhiredis-dev libcurl4-openssl-dev libjansson-dev openssl ca-certificates"
for a in "$@"; do
  case "$a" in
    --test) PKGS="$PKGS libcmocka-dev nsd knot-dnsutils bind9-dnsutils curl nghttp2-client clang libclang-rt-14-dev python3 procps iproute2 psmisc wget pebble lego systemd python3-prometheus-client valgrind unbound tcpdump dnsperf haproxy nginx redis-server mandoc man-db lintian debhelper fakeroot prometheus" ;;
    --package) PKGS="$PKGS debhelper dpkg-dev fakeroot lintian" ;;
    --bench) PKGS="$PKGS nsd unbound dnsdist knot-resolver bind9 dnsperf nghttp2-client curl knot-dnsutils bind9-dnsutils python3 iproute2 util-linux openssl" ;;
    *) echo "usage: $0 [--test] [--package] [--bench]" >&2; exit 2 ;;
  esac
done
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing:$missing" >&2
$SUDO apt-get update -qq
# The Debian packages of the servers used as test upstreams/peers (nsd, unbound, nginx,
# haproxy, redis-server) start system services on install; a policy-rc.d that refuses every
# start keeps them from grabbing ports 53, 80 and 6379 on this machine. One that is already
# there is left alone; ours is removed again afterwards.
export DEBIAN_FRONTEND=noninteractive
ours=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  ours=1
fi
rc=0
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
[ -z "$ours" ] || $SUDO rm -f /usr/sbin/policy-rc.d
exit $rc
