#!/bin/bash
# t_dns_udp: plain DNS over UDP (--dns-listen): dig and kdig answers from the test zone (A, AAAA,
# NXDOMAIN), the DNS ID echoed on the miss and hit paths, a cache hit (the TTL ages, the upstream
# is asked once), a large answer truncated (TC=1) to 512 bytes without EDNS and to the EDNS size
# capped by --dns-udp-max-size, and whole with a 4096-byte buffer when the cap allows it;
# malformed datagrams (garbage, an answer with QR=1, 2 bytes) get no answer and the next query
# does; the dns-udp metrics; queries pending across a SIGHUP reload are still answered.
# UDP only: nothing here needs the TCP side of dns-listen.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig kdig python3 curl

S=$STUBZONE

# use_log NAME: the next dohgate logs to $T/dohgate-NAME.log
use_log() { DG_LOG=$T/dohgate-$1.log; }

# field FILE KEY: a header field (id, tc, rcode, an...) of the DNS message in FILE
field() { dnsmsg show "$1" 2>/dev/null | sed -n "s/^hdr .*\b$2=\([^ ]*\).*/\1/p"; }

# ---- pre: dohgate on NSD, two workers, UDP on its own port
start_nsd
start_stub
use_log nsd
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 2 --dns-listen "127.0.0.1:$UP" --metrics-listen "127.0.0.1:$M_PORT"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$UP \(plain DNS over UDP\)" \
    "start-up logs the UDP listener"

# ---- test: the zone's answers over UDP, from dig and kdig
out=$(dig_udp "$UP" "www.$ZONE" A)
assert_match 'status: NOERROR' "$out" "dig www A: NOERROR"
assert_match "www\.$ZONE\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.10" "$out" "dig www A: 192.0.2.10"
assert_match "SERVER: 127\.0\.0\.1#$UP\(127\.0\.0\.1\) \(UDP\)" "$out" "dig www A: answered over UDP"
out=$(dig_udp "$UP" "www.$ZONE" AAAA)
assert_match "IN[[:space:]]+AAAA[[:space:]]+2001:db8::10" "$out" "dig www AAAA: 2001:db8::10"
out=$(dig_udp "$UP" "nope.$ZONE" A)
assert_match 'status: NXDOMAIN' "$out" "dig nope A: NXDOMAIN"
out=$(kdig @127.0.0.1 -p "$UP" +notcp +ignore +retry=0 +timeout=2 "mail.$ZONE" MX 2>&1)
assert_match 'status: NOERROR' "$out" "kdig mail MX: NOERROR"
assert_match "MX[[:space:]]+10 mx\.$ZONE\." "$out" "kdig mail MX: 10 mx.$ZONE."
assert_match 'UDP' "$out" "kdig: over UDP"

# ---- the ID comes back unchanged (a miss, then a hit of the same question)
dnsmsg query "chain1.$ZONE" A --id 4660 --out "$T/id1.q"
dnsmsg query "chain1.$ZONE" A --id 51966 --edns 1232 --out "$T/id2.q"
out=$(udpdns ask 127.0.0.1 "$UP" "$T/id1.q" --out "$T/id1.a")
assert_match '^answer 127\.0\.0\.1 ' "$out" "ID 4660 (cache miss): answered"
assert_eq 4660 "$(field "$T/id1.a.1" id)" "ID 4660 (cache miss): echoed"
out=$(udpdns ask 127.0.0.1 "$UP" "$T/id2.q" --out "$T/id2.a")
assert_eq 51966 "$(field "$T/id2.a.1" id)" "ID 51966 (cache hit): echoed"
assert_match '(^|
)an chain2\.dohgate\.test\. [0-9]+ CNAME' "$(dnsmsg show "$T/id2.a.1")" "the hit has the CNAME chain"

# ---- a large answer (40 TXT, ~2.9 KB): TC=1 to fit the client's size, never over the cap
out=$(dig_udp "$UP" +noedns "big.$ZONE" TXT)
assert_match 'flags: qr[a-z ]* tc' "$out" "big TXT without EDNS: TC=1"
size=$(sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p' <<<"$out")
assert_range 12 512 "$size" "big TXT without EDNS: at most 512 bytes ($size)"
out=$(dig_udp "$UP" +bufsize=1232 "big.$ZONE" TXT)
assert_match 'flags: qr[a-z ]* tc' "$out" "big TXT, EDNS 1232: TC=1"
assert_match 'udp: ' "$out" "big TXT, EDNS 1232: the OPT record stays"
size=$(sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p' <<<"$out")
assert_range 12 1232 "$size" "big TXT, EDNS 1232: at most 1232 bytes ($size)"
out=$(dig_udp "$UP" +bufsize=4096 "big.$ZONE" TXT)
assert_match 'flags: qr[a-z ]* tc' "$out" "big TXT, EDNS 4096, dns-udp-max-size 1232: TC=1"
size=$(sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p' <<<"$out")
assert_range 12 1232 "$size" "big TXT, EDNS 4096: capped at 1232 bytes ($size)"
out=$(dig_udp "$UP" +bufsize=4096 "www.$ZONE" A)
assert_nomatch 'flags: qr[a-z ]* tc' "$out" "a small answer is not truncated"

# ---- malformed datagrams: no answer, and the server answers the next query
printf '\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc' >"$T/bad1.q" # label past the end
dnsmsg query "www.$ZONE" A --id 16963 --qr --out "$T/bad2.q"                 # QR=1: an answer
printf '\x42\x44' >"$T/bad3.q"                                                # 2 bytes
head -c 300 /dev/urandom >"$T/bad4.q"                                        # noise
printf '\x42' | dd of="$T/bad4.q" bs=1 seek=2 conv=notrunc 2>/dev/null       # QR=0 in noise
for b in 1 2 3; do
    assert_eq none "$(udpdns ask 127.0.0.1 "$UP" "$T/bad$b.q" --timeout 1)" "malformed datagram $b: no answer"
done
out=$(udpdns ask 127.0.0.1 "$UP" "$T/bad4.q" --timeout 1)
# 300 random bytes can, very rarely, parse as some query: then an answer is right too
NOISE_DROPPED=1
[ "$out" = none ] || { NOISE_DROPPED=0; assert_match '^answer ' "$out" "noise: an answer only if it parsed"; }
dnsmsg query "www.$ZONE" A --id 7 --out "$T/after.q"
out=$(udpdns ask 127.0.0.1 "$UP" "$T/after.q" --out "$T/after.a")
assert_match '^answer ' "$out" "after the malformed datagrams: the next query is answered"
assert_eq NOERROR "$(field "$T/after.a.1" rcode)" "after the malformed datagrams: NOERROR"

# ---- metrics
# www A, AAAA, mail MX, the two ID queries, 3 big TXT, www A 4096, the query after the bad ones
# (and the noise, in the rare case it parsed)
assert_eq $((10 + 1 - NOISE_DROPPED)) "$(metric_of 'dohgate_dns_answers_total{transport="dns-udp",rcode="NOERROR"}')" \
    "metrics: every dns-udp NOERROR answer counted"
assert_eq 1 "$(metric_of 'dohgate_dns_answers_total{transport="dns-udp",rcode="NXDOMAIN"}')" \
    "metrics: the dns-udp NXDOMAIN answer counted"
assert_range 3 3 "$(metric_of 'dohgate_dns_truncated_total')" "metrics: the 3 truncated answers counted"
assert_eq $((3 + NOISE_DROPPED)) "$(metric_of 'dohgate_dns_dropped_total{reason="malformed"}')" \
    "metrics: the malformed datagrams counted as dropped"
assert_eq 0 "$(metric_of 'dohgate_dns_dropped_total{reason="source"}')" "metrics: no source drops from loopback"
assert_eq 0 "$(metric_of 'dohgate_dns_dropped_total{reason="rate-limit"}')" "metrics: no rate-limit drops (no limit)"
# SIGUSR1: each worker logs its UDP readers' counters (15 datagrams: 11 queries and 4 bad ones)
kill -USR1 "$DG_PID"
for _ in $(seq 1 30); do
    [ "$(grep -c 'plain DNS over UDP: ' "$DG_LOG")" -ge 2 ] && break
    sleep 0.1
done
sums=$(sed -n 's/.*plain DNS over UDP: \([0-9]*\) datagrams received, \([0-9]*\) answers sent, \([0-9]*\) answers dropped.*/\1 \2 \3/p' "$DG_LOG" |
    awk '{ r += $1; s += $2; d += $3; n++ } END { print n, r, s, d }')
assert_eq "2 15 $((12 - NOISE_DROPPED)) 0" "$sums" "SIGUSR1: 2 workers' UDP counters: received, sent, send drops"
stop_dohgate

# ---- a 4096-byte cap: the big answer fits and goes whole
use_log big
UP=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$UP" --dns-udp-max-size 4096 \
    --query-log yes --query-log-client full
out=$(dig_udp "$UP" +bufsize=4096 "big.$ZONE" TXT)
assert_nomatch 'flags: qr[a-z ]* tc' "$out" "big TXT, EDNS 4096, dns-udp-max-size 4096: not truncated"
assert_match 'ANSWER: 40,' "$out" "big TXT, EDNS 4096: all 40 records"
size=$(sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p' <<<"$out")
assert_range 1233 4096 "$size" "big TXT, EDNS 4096: more than 1232 bytes ($size)"
out=$(dig_udp "$UP" +bufsize=1232 "big.$ZONE" TXT)
assert_match 'flags: qr[a-z ]* tc' "$out" "the same cap, EDNS 1232: still TC=1 (the client's size rules)"
# UDP client identities carry no text until the query log needs it (dnsudp.c): the full
# address still shows
assert_file_match "$DG_LOG" "query: 127\.0\.0\.1 big\.$ZONE\. TXT NOERROR dns-udp" \
    "query log (client full): the UDP client's address and the transport"
stop_dohgate

# ---- the stub as upstream: cache hits and a reload with queries pending
use_log stub
UP=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$UP" --upstream "127.0.0.1:$STUB_PORT"
out1=$(dig_udp "$UP" "ttl-300.hit.$S" A)
sleep 2.1
out2=$(dig_udp "$UP" "ttl-300.hit.$S" A)
ttl1=$(awk '$1 == "ttl-300.hit.stub.test." && $4 == "A" { print $2 }' <<<"$out1")
ttl2=$(awk '$1 == "ttl-300.hit.stub.test." && $4 == "A" { print $2 }' <<<"$out2")
assert_range 298 300 "$ttl1" "cache: the first answer carries the upstream's TTL ($ttl1)"
assert_range 250 $((ttl1 - 2)) "$ttl2" "cache: the second answer's TTL has aged ($ttl1 -> $ttl2)"
assert_eq 1 "$(stub_count udp "ttl-300.hit.$S.")" "cache: the upstream was asked once"

# queries waiting for a slow upstream while the configuration is reloaded: the retired view
# stays until they are answered
files=()
for i in $(seq 1 10); do
    dnsmsg query "slow-1200.r$i.$S" A --id $((100 + i)) --out "$T/slow$i.q"
    files+=("$T/slow$i.q")
done
udpdns ask 127.0.0.1 "$UP" "${files[@]}" --timeout 5 --out "$T/slow.a" >"$T/slow.out" &
ASK=$!
sleep 0.4
before=$(grep -c 'configuration reloaded' "$DG_LOG")
kill -HUP "$DG_PID"
for _ in $(seq 1 30); do
    [ "$(grep -c 'configuration reloaded' "$DG_LOG")" -gt "$before" ] && break
    sleep 0.1
done
assert_eq $((before + 1)) "$(grep -c 'configuration reloaded' "$DG_LOG")" "SIGHUP: configuration reloaded"
# a query on the new view while the old one still waits
out=$(dig_udp "$UP" "fresh.$S" A)
assert_match 'status: NOERROR' "$out" "after the reload: a new query is answered"
wait "$ASK"
assert_eq 10 "$(grep -c '^answer 127\.0\.0\.1 ' "$T/slow.out")" "the 10 queries pending across the reload: all answered"
ok_n=0
for i in $(seq 1 10); do
    [ "$(field "$T/slow.a.$i" rcode)" = NOERROR ] && [ "$(field "$T/slow.a.$i" id)" = $((100 + i)) ] &&
        ok_n=$((ok_n + 1))
done
assert_eq 10 "$ok_n" "pending across the reload: NOERROR, each with its own ID"
assert_eq 10 "$(grep -c 'slow-1200\.r' "$STUB_LOG")" "pending across the reload: each reached the upstream once"
stop_dohgate

# ---- socket activation: a UDP socket named "dns", and TCP ones named "dns-tcp" (the same port)
# and "dot", from the service manager (a stand-in for systemd: LISTEN_FDS, LISTEN_FDNAMES,
# LISTEN_PID, then exec, so the PID stays), two workers
use_log sysd
DG_PORT=$(free_port)
UP=$(free_port)
DOTP=$(free_port)
echo "# activate.py ... $DOHGATE" >>"$DG_LOG"
"${GUARD[@]}" python3 - "$DG_PORT" "$UP" "$DOTP" "$DOHGATE" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$CERTS/server.pem" --key "$CERTS/server.key" --workers 2 >>"$DG_LOG" 2>&1 </dev/null <<'PY' &
import os, socket, sys
def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s
tls, dnstcp, dot = tcp(int(sys.argv[1])), tcp(int(sys.argv[2])), tcp(int(sys.argv[3]))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", int(sys.argv[2])))
fds = [os.dup(x.fileno()) for x in (tls, udp, dnstcp, dot)]  # above 6: no clash with 3..6
for i, old in enumerate(fds):
    os.dup2(old, 3 + i)
    os.set_inheritable(3 + i, True)
os.environ.update(LISTEN_FDS="4", LISTEN_FDNAMES="https:dns:dns-tcp:dot", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[4], sys.argv[4:])
PY
DG_PID=$!
track "$DG_PID"
wait_dohgate
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$UP from systemd \(plain DNS over UDP\)" \
    "socket activation: the log names the UDP socket"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$UP from systemd \(plain DNS over TCP" \
    "socket activation: the log names the dns-tcp socket"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$DOTP from systemd \(DNS over TLS\)" \
    "socket activation: the log names the dot socket"
n=0
for i in $(seq 1 6); do
    dig_udp "$UP" "www.$ZONE" A | grep -q 'status: NOERROR' && n=$((n + 1))
done
assert_eq 6 "$n" "socket activation: the 'dns' socket answers over UDP (6 of 6)"
out=$(dig +tcp +time=3 +tries=1 @127.0.0.1 -p "$UP" "www.$ZONE" A 2>&1)
assert_match 'status: NOERROR' "$out" "socket activation: the 'dns-tcp' socket answers DNS over TCP"
out=$(kdig @127.0.0.1 -p "$DOTP" +tls +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost +timeout=5 \
    +retry=0 "www.$ZONE" A 2>&1)
assert_match 'status: NOERROR' "$out" "socket activation: the 'dot' socket answers DNS over TLS"

finish
