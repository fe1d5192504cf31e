#!/bin/bash
# t_deb: the Debian package, built by contrib/package.sh from this tree, installed on this machine
# with dpkg and taken apart again (contrib/test.sh runs it as root after the main suite; it is not
# a ctest test because it changes the machine: /usr/sbin, /etc, a system user).
#   build 1 → lintian (no error) → dpkg -i → every file where it belongs, the user, the state
#   directory, the conffile, computed dependencies → the installed binary: --check-config on the
#   installed conffile, then serving DoH from NSD with kdig and curl → systemd-analyze verify of
#   the installed units → a local edit of the conffile → build 2 (higher version) → dpkg -i keeps
#   the edit → dpkg -r keeps the state and the conffile → dpkg --purge deletes both.
# Left out because CI has no systemd as PID 1: starting, reloading and stopping the installed
# service through systemctl (the maintainer scripts' deb-systemd-invoke does nothing there, and the
# test checks they succeed anyway); the unit's sandbox is covered by t_systemd's verify.
# Refuses to run when a dohgate package is already installed (it would purge it).
set -u
SRC_DIR=${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
DOHGATE=/usr/sbin/dohgate
TOOLS_DIR=${TOOLS_DIR:-$SRC_DIR/build-test/tests}
. "$SRC_DIR/tests/integration/lib.sh"

need_tools dpkg dpkg-deb lintian systemd-analyze nsd kdig curl adduser man
[ "$(id -u)" -eq 0 ] || die "t_deb installs a package: run it as root"
# Only on a machine without any dohgate of its own: a package in any state (even config-files
# only), or a hand install's configuration or state, would be replaced and then deleted.
if [ "$(dpkg-query -W -f='${db:Status-Status}' dohgate 2>/dev/null)" != "" ] &&
    [ "$(dpkg-query -W -f='${db:Status-Status}' dohgate 2>/dev/null)" != "not-installed" ]; then
    die "a dohgate package is on this machine ($(dpkg-query -W -f='${Status}' dohgate)); t_deb would replace and purge it"
fi
for d in /etc/dohgate /var/lib/dohgate; do
    [ ! -e "$d" ] || die "$d exists (a dohgate installed by hand?); t_deb would overwrite and delete it"
done
had_user=0
getent passwd dohgate >/dev/null && had_user=1
# No service may start from the maintainer scripts while the test runs (a machine with systemd
# would otherwise start the packaged dohgate on port 443): policy-rc.d refuses every start.
our_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    our_policy=1
fi
deb_cleanup() {
    # whatever state a failure left it in (half-configured, config-files...)
    dpkg-query -W dohgate >/dev/null 2>&1 &&
        dpkg --purge --force-remove-reinstreq dohgate </dev/null >/dev/null 2>&1
    rm -rf /var/lib/dohgate /etc/dohgate
    [ "$had_user" = 1 ] || ! getent passwd dohgate >/dev/null || deluser --system --quiet dohgate >/dev/null 2>&1
    [ "$our_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
    cleanup
}
trap deb_cleanup EXIT

base=$(sed -n 's/^project(dohgate VERSION \([0-9.]*\).*/\1/p' "$SRC_DIR/CMakeLists.txt")
V1="$base+t1"
V2="$base+t2"
arch=$(dpkg --print-architecture)
OUT=$T/debs

# ---- build 1 and lintian ----------------------------------------------------------------------
"$SRC_DIR/contrib/package.sh" --version "$V1" --out "$OUT" >"$T/pkg1.log" 2>&1 ||
    { cat "$T/pkg1.log"; die "contrib/package.sh --version $V1 failed"; }
DEB1=$OUT/dohgate_${V1}_$arch.deb
[ -s "$DEB1" ] || die "no $DEB1 after package.sh"
ok "package.sh built $(basename "$DEB1")"

lintian --fail-on error --no-tag-display-limit "$DEB1" >"$T/lintian.log" 2>&1
assert_eq 0 $? "lintian: no error"
assert_file_nomatch "$T/lintian.log" '^E: ' "lintian lists no E: tag"
echo "lintian, with info and pedantic tags (for the record; only errors fail):"
lintian -I --pedantic "$DEB1" 2>&1 | sed 's/^/    /'

dpkg-deb -f "$DEB1" Depends >"$T/depends"
# computed by dpkg-shlibdeps, with versions, not written by hand in control
for lib in libssl3 libnghttp2-14 libldns3 libevent-core-2.1-7 libcurl4 libjansson4 libc6 adduser; do
    assert_file_match "$T/depends" "(^|, )$lib( |,|$)" "Depends names $lib"
done
assert_file_match "$T/depends" 'libnghttp2-14 \(>= ' "Depends carries shlibs versions"

# ---- install ----------------------------------------------------------------------------------
dpkg -i "$DEB1" </dev/null >"$T/install1.log" 2>&1
assert_eq 0 $? "dpkg -i $V1"
cat "$T/install1.log" | sed 's/^/    /'
assert_eq "install ok installed $V1" "$(dpkg-query -W -f='${Status} ${Version}' dohgate)" "installed, version $V1"

for f in /usr/sbin/dohgate /usr/lib/dohgate/dohgate-cert-hook; do
    [ -x "$f" ] && ok "$f is there, executable" || ko "$f missing or not executable"
done
for f in /etc/dohgate/dohgate.conf \
    /usr/lib/systemd/system/dohgate.service /usr/lib/systemd/system/dohgate.socket \
    /usr/lib/systemd/system/dohgate-http.socket \
    /usr/share/man/man8/dohgate.8.gz /usr/share/man/man5/dohgate.conf.5.gz \
    /usr/share/doc/dohgate/copyright /usr/share/doc/dohgate/changelog.gz; do
    [ -s "$f" ] && ok "$f is there" || ko "$f missing"
done
for f in README.md benchmarks.md; do
    [ -s "/usr/share/doc/dohgate/$f.gz" ] || [ -s "/usr/share/doc/dohgate/$f" ] &&
        ok "/usr/share/doc/dohgate/$f is there" || ko "/usr/share/doc/dohgate/$f missing"
done
assert_file_match /usr/lib/systemd/system/dohgate.service '^ExecStart=/usr/sbin/dohgate -c /etc/dohgate/dohgate.conf$' \
    "the installed unit starts /usr/sbin/dohgate"
man -l /usr/share/man/man5/dohgate.conf.5.gz 2>/dev/null | grep -q 'acme-domain' &&
    ok "man dohgate.conf shows the options" || ko "man -l dohgate.conf.5.gz shows no acme-domain"
assert_eq /etc/dohgate/dohgate.conf "$(dpkg-query -W -f='${Conffiles}' dohgate | awk 'NF {print $1}')" \
    "the configuration is the package's one conffile"

pw=$(getent passwd dohgate)
assert_match '^dohgate:x:[0-9]+:[0-9]+:[^:]*:/var/lib/dohgate:/usr/sbin/nologin$' "$pw" "system user dohgate"
uid=$(printf '%s' "$pw" | cut -d: -f3)
assert_range 1 999 "$uid" "dohgate's uid is a system uid"
[ -L /etc/systemd/system/multi-user.target.wants/dohgate.service ] &&
    ok "the service is enabled for the next boot (deb-systemd-helper)" || ko "dohgate.service not enabled"
assert_eq "dohgate dohgate 750" "$(stat -c '%U %G %a' /var/lib/dohgate)" "/var/lib/dohgate owned by dohgate, 0750"

# ---- the installed binary ---------------------------------------------------------------------
/usr/sbin/dohgate --check-config -c /etc/dohgate/dohgate.conf >"$T/check.out" 2>&1
assert_eq 0 $? "installed dohgate --check-config on the installed conffile"
/usr/sbin/dohgate --version >"$T/version.out" 2>&1
assert_file_match "$T/version.out" "^dohgate $base " "installed dohgate --version"
start_nsd
start_dohgate -c /etc/dohgate/dohgate.conf
out=$(kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost "www.$ZONE" A 2>&1)
assert_match 'NOERROR' "$out" "the installed dohgate answers kdig +https from NSD"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca.pem" --resolve "localhost:$DG_PORT:127.0.0.1" \
    "https://localhost:$DG_PORT/")
assert_eq 200 "$code" "the installed dohgate serves its landing page"
stop_dohgate

out=$(cd /usr/lib/systemd/system && systemd-analyze verify ./dohgate.service ./dohgate.socket ./dohgate-http.socket 2>&1)
assert_eq "0:" "$?:$out" "systemd-analyze verify of the installed units: exit 0, nothing to say"

# ---- a local edit survives an upgrade -------------------------------------------------------
printf '\n# local edit by t_deb\nlog-level warn\n' >>/etc/dohgate/dohgate.conf
"$SRC_DIR/contrib/package.sh" --version "$V2" --out "$OUT" >"$T/pkg2.log" 2>&1 ||
    { cat "$T/pkg2.log"; die "contrib/package.sh --version $V2 failed"; }
DEB2=$OUT/dohgate_${V2}_$arch.deb
dpkg -i "$DEB2" </dev/null >"$T/install2.log" 2>&1
assert_eq 0 $? "dpkg -i $V2 over $V1"
assert_eq "install ok installed $V2" "$(dpkg-query -W -f='${Status} ${Version}' dohgate)" "upgraded to $V2"
assert_file_match /etc/dohgate/dohgate.conf '^# local edit by t_deb$' "the conffile edit survived the upgrade"
[ ! -e /etc/dohgate/dohgate.conf.dpkg-new ] && ok "no .dpkg-new beside it" || ko "a .dpkg-new appeared"
/usr/sbin/dohgate --check-config -c /etc/dohgate/dohgate.conf >"$T/check2.out" 2>&1
assert_eq 0 $? "--check-config after the upgrade"
assert_file_match "$T/check2.out" '^log-level warn' "--check-config shows the local edit"

# ---- remove keeps the state, purge deletes it ----------------------------------------------
install -d -o dohgate -g dohgate -m 0700 /var/lib/dohgate/acme
echo state >/var/lib/dohgate/acme/account.key
dpkg -r dohgate </dev/null >"$T/remove.log" 2>&1
assert_eq 0 $? "dpkg -r"
[ ! -e /usr/sbin/dohgate ] && ok "remove: the binary is gone" || ko "remove left /usr/sbin/dohgate"
[ -s /var/lib/dohgate/acme/account.key ] && ok "remove: the state is kept" || ko "remove deleted /var/lib/dohgate"
[ -s /etc/dohgate/dohgate.conf ] && ok "remove: the conffile is kept" || ko "remove deleted the conffile"
dpkg --purge dohgate </dev/null >"$T/purge.log" 2>&1
assert_eq 0 $? "dpkg --purge"
[ ! -e /var/lib/dohgate ] && ok "purge: /var/lib/dohgate deleted" || ko "purge left /var/lib/dohgate"
[ ! -e /etc/dohgate/dohgate.conf ] && ok "purge: the conffile deleted" || ko "purge left the conffile"
assert_eq "" "$(dpkg-query -W -f='${Status}' dohgate 2>/dev/null | grep installed)" "purge: not installed"
[ ! -e /etc/systemd/system/multi-user.target.wants/dohgate.service ] &&
    ok "purge: the service's enablement link is gone" || ko "purge left the multi-user.target.wants link"
left=$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    -name '*dohgate*' 2>/dev/null | wc -l)
assert_eq 0 "$left" "purge: deb-systemd-helper keeps no state for the units"

finish
