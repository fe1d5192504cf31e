#!/bin/bash
# t_dns_openresolver: plain DNS over UDP is not an open resolver by default. A network namespace
# joined to this one by a veth pair plays the Internet (198.51.100.2 asks dohgate on
# 198.51.100.1): without --dns-allow, a public source gets no answer at all over UDP (no
# reflection) and the drop is counted (dohgate_dns_dropped_total{reason="source"}); a private
# source (10.99.0.2, on the same link) is answered; --dns-allow 198.51.100.0/24 opens the public
# network (and, replacing the default, closes the private one). Then answers leave from the
# address the query was sent to (IP_PKTINFO / IPV6_PKTINFO): dohgate inside the namespace on
# 0.0.0.0 and [::] (a multi-homed host) is asked on an address that is not the one its route
# to the client would pick.
# Needs root (CI runs as root): the namespace and links are made and removed here, with unique
# names; the test fails when it cannot make them.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig ip python3 curl

NS=dgns$$
VH=dgh$$ # host side
VN=dgn$$ # namespace side

net_cleanup() {
    ip link del "$VH" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
}
trap 'net_cleanup; cleanup' EXIT

# in_ns CMD...: run a command inside the namespace
in_ns() { ip netns exec "$NS" "$@"; }

# ---- pre: the namespace, the veth pair, the addresses
{
    ip netns add "$NS" &&
        ip link add "$VH" type veth peer name "$VN" &&
        ip link set "$VN" netns "$NS" &&
        ip addr add 198.51.100.1/24 dev "$VH" &&
        ip link set "$VH" up &&
        in_ns ip addr add 198.51.100.2/24 dev "$VN" &&
        in_ns ip link set "$VN" up &&
        in_ns ip link set lo up
} 2>"$T/ip.err" || die "cannot make the network namespace and veth pair (root needed): $(cat "$T/ip.err")"
# the link is up once the namespace reaches the host
for _ in $(seq 1 50); do
    in_ns ping -c 1 -W 1 198.51.100.1 >/dev/null 2>&1 && break
    sleep 0.1
done

start_nsd
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 2 --dns-listen "198.51.100.1:$UP" --metrics-listen "127.0.0.1:$M_PORT"
dnsmsg query "www.$ZONE" A --id 4242 --out "$T/q"

# ---- test: a public source gets nothing over UDP
out=$(in_ns dig @198.51.100.1 -p "$UP" +notcp +ignore +tries=1 +time=1 "www.$ZONE" A 2>&1)
assert_match 'timed out|no servers could be reached' "$out" "from 198.51.100.2 (public), dig: no answer"
assert_nomatch 'status: ' "$out" "from 198.51.100.2 (public), dig: no DNS message at all (not even REFUSED)"
out=$(in_ns python3 "$SRC_DIR/tests/tools/udpdns.py" ask 198.51.100.1 "$UP" "$T/q" --src 198.51.100.2 --timeout 1)
assert_eq none "$out" "from 198.51.100.2 (public), a raw query: no answer"
assert_eq 2 "$(metric_of 'dohgate_dns_dropped_total{reason="source"}')" "both drops counted as reason=source"
assert_eq 0 "$(metric_of 'dohgate_dns_answers_total{transport="dns-udp",rcode="NOERROR"}')" "no dns-udp answer counted (NOERROR)"
assert_eq 0 "$(metric_of 'dohgate_dns_answers_total{transport="dns-udp",rcode="REFUSED"}')" "no dns-udp answer counted (REFUSED)"
# over TCP there is no reflection to fear (the handshake proves the source): REFUSED says why
out=$(in_ns dig @198.51.100.1 -p "$UP" +tcp +tries=1 +time=3 "www.$ZONE" A 2>&1)
assert_match 'status: REFUSED' "$out" "from 198.51.100.2 (public), TCP: REFUSED"
assert_nomatch '192\.0\.2\.10' "$out" "from 198.51.100.2 (public), TCP: no data"
assert_eq 1 "$(metric_of 'dohgate_dns_answers_total{transport="dns-tcp",rcode="REFUSED"}')" "the TCP refusal counted as a dns-tcp REFUSED answer"

# ---- a private source on the same link is answered
{
    ip addr add 10.99.0.1/24 dev "$VH" && in_ns ip addr add 10.99.0.2/24 dev "$VN"
} 2>"$T/ip.err" || die "cannot add the 10.99.0.0/24 addresses: $(cat "$T/ip.err")"
out=$(in_ns dig -b 10.99.0.2 @198.51.100.1 -p "$UP" +notcp +ignore +tries=1 +time=2 "www.$ZONE" A 2>&1)
assert_match 'status: NOERROR' "$out" "from 10.99.0.2 (private): answered"
assert_match 'IN[[:space:]]+A[[:space:]]+192\.0\.2\.10' "$out" "from 10.99.0.2 (private): 192.0.2.10"
assert_eq 2 "$(metric_of 'dohgate_dns_dropped_total{reason="source"}')" "no new source drop"
stop_dohgate

# ---- --dns-allow 198.51.100.0/24: the public network is served, and only it
DG_LOG=$T/dohgate-allow.log
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 1 --dns-listen "198.51.100.1:$UP" --dns-allow 198.51.100.0/24 \
    --metrics-listen "127.0.0.1:$M_PORT"
out=$(in_ns dig @198.51.100.1 -p "$UP" +notcp +ignore +tries=1 +time=2 "www.$ZONE" A 2>&1)
assert_match 'status: NOERROR' "$out" "--dns-allow 198.51.100.0/24: 198.51.100.2 answered"
out=$(in_ns python3 "$SRC_DIR/tests/tools/udpdns.py" ask 198.51.100.1 "$UP" "$T/q" --src 10.99.0.2 --timeout 1)
assert_eq none "$out" "--dns-allow replaces the default: 10.99.0.2 gets no answer"
assert_eq 1 "$(metric_of 'dohgate_dns_dropped_total{reason="source"}')" "that drop counted"
stop_dohgate

# ---- answers leave from the address the query was sent to: dohgate inside the namespace on
# wildcard addresses, the upstream (the stub) on the host side of the link
SP=$(free_port)
"${GUARD[@]}" python3 "$STUB_PY" "$SP" "$T/stub.log" 198.51.100.1 >"$T/stub.out" 2>&1 </dev/null &
track $!
U4=$(free_port)
U6=$(free_port)
dnsmsg query "ready.$STUBZONE" A --id 1 --out "$T/ready.q"
# in the namespace, readiness is a UDP answer (the DoH check of lib.sh runs on the host)
wait_dohgate() {
    local n=$((${DG_START_TIMEOUT:-10} * 5))
    while [ "$n" -gt 0 ]; do
        proc_alive "$DG_PID" || die "dohgate (in the namespace) exited during start-up"
        in_ns python3 "$SRC_DIR/tests/tools/udpdns.py" ask 127.0.0.1 "$U4" "$T/ready.q" --timeout 0.3 |
            grep -q '^answer' && return 0
        sleep 0.2
        n=$((n - 1))
    done
    die "dohgate in the namespace did not answer over UDP on 127.0.0.1:$U4"
}
V6=1
{
    ip -6 addr add fd00:99::1/64 dev "$VH" nodad && ip -6 addr add fd00:98::1/64 dev "$VH" nodad &&
        in_ns ip -6 addr add fd00:99::2/64 dev "$VN" nodad &&
        in_ns ip -6 addr add fd00:98::2/64 dev "$VN" nodad
} 2>"$T/ip6.err" || { V6=0; echo "(no IPv6 on the veth pair: $(cat "$T/ip6.err"); the IPv6 check is left out)"; }
DG_LOG=$T/dohgate-ns.log
make_certs
DG_PORT=$(free_port)
GUARD+=(ip netns exec "$NS")
launch_dohgate --listen "127.0.0.1:$DG_PORT" --cert "$CERTS/server.pem" --key "$CERTS/server.key" \
    --log-level "${DG_LOG_LEVEL:-info}" --workers 1 --upstream "198.51.100.1:$SP" \
    --dns-listen "0.0.0.0:$U4" --dns-listen "[::]:$U6"
dnsmsg query "w.$STUBZONE" A --id 777 --out "$T/w.q"
# the route from the namespace to 127.0.0.1 would answer from 127.0.0.1
out=$(in_ns python3 "$SRC_DIR/tests/tools/udpdns.py" ask 127.0.0.2 "$U4" "$T/w.q" --src 127.0.0.1)
assert_match '^answer 127\.0\.0\.2 [0-9]+$' "$out" "0.0.0.0: asked on 127.0.0.2, answered from 127.0.0.2"
out=$(in_ns python3 "$SRC_DIR/tests/tools/udpdns.py" ask 127.0.0.2 "$U6" "$T/w.q" --src 127.0.0.1)
assert_match '^answer 127\.0\.0\.2 [0-9]+$' "$out" "[::] (dual-stack), IPv4: asked on 127.0.0.2, answered from 127.0.0.2"
# a multi-homed host: asked on 198.51.100.2 by 10.99.0.1, whose route leaves from 10.99.0.2
out=$(udpdns ask 198.51.100.2 "$U4" "$T/w.q" --src 10.99.0.1)
assert_match '^answer 198\.51\.100\.2 [0-9]+$' "$out" "0.0.0.0: asked on 198.51.100.2 from 10.99.0.1, answered from 198.51.100.2"
if [ "$V6" = 1 ]; then
    out=$(udpdns ask fd00:98::2 "$U6" "$T/w.q" --src fd00:99::1)
    assert_match '^answer fd00:98::2 [0-9]+$' "$out" "[::]: asked on fd00:98::2 from fd00:99::1, answered from fd00:98::2"
fi

finish
