#!/bin/bash
# t_reload: a full configuration reload on SIGHUP under a steady h2load load. The upstream (NSD
# -> the stub), a response header and the ACL change in the file; new requests get the new
# settings, a connection opened before keeps its own, h2load sees no failed request; a broken
# file (bad value, a missing site-root, a missing certificate) is refused with exactly one error
# line naming FILE:LINE while the running settings keep working; an option that needs a restart
# (workers) is named in a warning and keeps its value.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl h2load python3 dig

start_nsd
start_stub
make_certs
CONF=$T/dohgate.conf
DG_PORT=$(free_port)
MET_PORT=$(free_port)

# write_conf UPSTREAM HEADER_VALUE [EXTRA LINES...]: the config file, one option a line; the
# line numbers of the first seven lines are fixed (the broken-file checks name them)
write_conf() {
    local up=$1 hv=$2
    shift 2
    {
        echo "listen 127.0.0.1:$DG_PORT"
        echo "cert $CERTS/server.pem"
        echo "key $CERTS/server.key"
        echo "upstream $up"
        echo "header \"X-Test: $hv\""
        echo "workers 2"
        echo "metrics-listen 127.0.0.1:$MET_PORT"
        printf '%s\n' "$@"
    } >"$CONF.new"
    mv -f "$CONF.new" "$CONF" # whole, as an editor or a config manager replaces it
}

# hup: SIGHUP, then wait until the log has one more "configuration reloaded" or
# "reload refused" line than before (5 s at most)
hup() {
    local before
    before=$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")
    kill -HUP "$DG_PID"
    for _ in $(seq 1 50); do
        [ "$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")" -gt "$before" ] && break
        sleep 0.1
    done
    # whether the background load ($LOAD) was still running when the reload was logged
    LOAD_ALIVE=no
    [ -n "${LOAD:-}" ] && proc_alive "$LOAD" && LOAD_ALIVE=yes
    sleep 0.3 # the workers switch between two events: give them a moment
}

# doh NAME: "HTTP-CODE RCODE FIRST-A" of a GET for NAME/A on a new connection (response
# headers in $T/doh.h)
doh() {
    local q code
    q=$(dnsmsg query "$1" A --b64)
    code=$(curl -s --http2 --cacert "$CERTS/ca.pem" -o "$T/doh.bin" -D "$T/doh.h" -w '%{http_code}' \
        "$(dohgate_url)?dns=$q")
    if [ "$code" = 200 ]; then
        echo "$code $(dnsmsg show "$T/doh.bin" | awk '/^hdr/{for(i=1;i<=NF;i++) if($i ~ /^rcode=/) r=substr($i,7)} $1=="an" && $4=="A"{if(!a)a=$5} END{print r, a}')"
    else
        echo "$code"
    fi
}

# xtest: the X-Test header of the landing page, on a new connection
xtest() {
    curl -sI --http2 --cacert "$CERTS/ca.pem" "$(dohgate_url /)" | tr -d '\r' |
        awk -F': ' 'tolower($1)=="x-test"{print $2}'
}

errors() { grep -c ' error: ' "$DG_LOG"; }

write_conf "127.0.0.1:$NSD_PORT" 1 "log-level info"
launch_dohgate -c "$CONF"

# ---- before: NSD is the upstream
assert_eq "200 NOERROR 192.0.2.10" "$(doh "www.$ZONE")" "pre: www.dohgate.test from NSD"
pre_stub=$(doh "before.$STUBZONE")
assert_nomatch '192\.0\.2\.1$' "$pre_stub" "pre: a stub.test name does not resolve through NSD ($pre_stub)"
assert_eq 1 "$(xtest)" "pre: X-Test: 1"
assert_eq 0 "$(stub_count udp "before.$STUBZONE.")" "pre: the stub saw no query"

# an HTTP/2 connection opened before the reload, one request every 0.5 s across it
urls=()
for i in $(seq 1 10); do urls+=(-o /dev/null "$(dohgate_url /)?n=$i"); done
curl -s --http2 --cacert "$CERTS/ca.pem" --rate 2/s -D "$T/keep.h" -w '%{http_code} %{num_connects}\n' \
    "${urls[@]}" >"$T/keep.out" 2>"$T/keep.err" &
KEEP=$!
track "$KEEP"

# ---- reload 1 under load: upstream NSD -> stub, X-Test 1 -> 2
Q=$(dnsmsg query "www.$ZONE" A --b64)
h2load -n 800000 -c 4 -m 10 "$(dohgate_url)?dns=$Q" >"$T/h2load1.out" 2>&1 &
LOAD=$!
track "$LOAD"
sleep 1.5
write_conf "127.0.0.1:$STUB_PORT" 2 "log-level info"
hup
assert_eq yes "$LOAD_ALIVE" "h2load was still running when the reload happened"
assert_eq "200 NOERROR 192.0.2.1" "$(doh "after.$STUBZONE")" "reload: a name only the stub answers resolves"
assert_eq 1 "$(stub_count udp "after.$STUBZONE.")" "reload: the query went to the new upstream"
assert_eq 2 "$(xtest)" "reload: X-Test: 2 on a new connection"
assert_eq "200 NOERROR 192.0.2.10" "$(doh "www.$ZONE")" "reload: www.dohgate.test still answered (the cache survived)"
wait "$LOAD"
untrack "$LOAD"
LOAD=
sed 's/^/       | /' "$T/h2load1.out" | grep -E 'requests:|status codes:|finished in'
assert_match ' 0 failed, 0 errored, 0 timeout' "$(grep '^requests:' "$T/h2load1.out")" "h2load across the reload: no failed request"
assert_match 'status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' "$(cat "$T/h2load1.out")" "h2load across the reload: 2xx only"
assert_match 'requests: 800000 total, 800000 started, 800000 done, 800000 succeeded' \
    "$(cat "$T/h2load1.out")" "h2load across the reload: every request done"
wait "$KEEP"
untrack "$KEEP"
assert_eq "10 1" "$(awk '{c[$1]++; n+=$2} END{for (k in c) print c[k], n}' "$T/keep.out")" \
    "a connection opened before the reload: 10 answers, one connection"
assert_eq 10 "$(tr -d '\r' <"$T/keep.h" | grep -ci '^x-test: 1$')" \
    "a connection opened before the reload keeps its configuration (X-Test: 1 throughout)"
assert_file_match "$DG_LOG" "configuration reloaded from $CONF" "log: configuration reloaded"
assert_file_match "$DG_LOG" "upstream 127.0.0.1:$STUB_PORT" "log: the new upstream"

# ---- reload 2: deny-client 127.0.0.0/8 with acl-scope doh -> 403, the website stays
write_conf "127.0.0.1:$STUB_PORT" 2 "deny-client 127.0.0.0/8" "acl-scope doh"
hup
assert_eq 403 "$(doh "www.$ZONE")" "ACL reload: DoH from 127.0.0.1 refused with 403"
assert_eq 2 "$(xtest)" "ACL reload: the website stays public (acl-scope doh)"
write_conf "127.0.0.1:$STUB_PORT" 2
hup
assert_eq "200 NOERROR 192.0.2.1" "$(doh "back.$STUBZONE")" "ACL removed again: DoH answers"

# ---- cache knobs: a new cache-min-ttl applies to the running cache; a new cache-size starts an
# empty one (www.dohgate.test, cached from NSD, then comes from the stub)
max_age() { doh "$1" >/dev/null; tr -d '\r' <"$T/doh.h" | sed -n 's/^cache-control: max-age=//Ip'; }
assert_eq 5 "$(max_age "ttl-5.a.$STUBZONE")" "cache knobs: a TTL of 5 gives max-age=5"
write_conf "127.0.0.1:$STUB_PORT" 2 "cache-min-ttl 50"
hup
assert_eq 50 "$(max_age "ttl-5.b.$STUBZONE")" "cache-min-ttl 50 after a reload: max-age=50"
assert_eq "200 NOERROR 192.0.2.10" "$(doh "www.$ZONE")" "same cache-size: the cached answer from NSD is still served"
write_conf "127.0.0.1:$STUB_PORT" 2 "cache-size 32M"
hup
assert_file_match "$DG_LOG" "cache-size changed: a new, empty cache" "cache-size changed: logged"
assert_eq "200 NOERROR 192.0.2.1" "$(doh "www.$ZONE")" "new cache-size: a new cache, www.dohgate.test now from the stub"
assert_eq 5 "$(max_age "ttl-5.c.$STUBZONE")" "cache-min-ttl gone again: max-age=5"
metrics() { curl -s "http://127.0.0.1:$MET_PORT/metrics"; }
assert_match 'dohgate_cache_max_bytes 33554432' "$(metrics)" "metrics: the new cache-size and its cache"
assert_match "dohgate_upstream_up\\{upstream=\"127.0.0.1:$STUB_PORT\"\\} 1" "$(metrics)" \
    "metrics: upstreams labelled by the configuration in force"

# ---- reloads while upstream queries are in flight: 600 names the stub answers after 150 ms,
# asked over 4 connections that span two reloads (the retired views keep their upstream sets
# until their connections close)
# (one python for the 600 URLs: a python start-up per name took minutes on a loaded machine)
python3 -c '
import sys
sys.path.insert(0, sys.argv[1])
import dnsmsg
for i in range(1, 601):
    q = dnsmsg.build_query("slow-150.r%d.%s" % (i, sys.argv[3]), "A")
    print("%s?dns=%s" % (sys.argv[2], dnsmsg.b64url(q)))
' "$SRC_DIR/tests/tools" "$(dohgate_url)" "$STUBZONE" >"$T/slow.urls"
h2load -i "$T/slow.urls" -n 1800 -c 4 -m 10 >"$T/h2load2.out" 2>&1 &
LOAD=$!
track "$LOAD"
sleep 1
write_conf "127.0.0.1:$STUB_PORT" 5
hup
write_conf "127.0.0.1:$STUB_PORT" 2
hup
assert_eq yes "$LOAD_ALIVE" "slow queries: h2load still running after two reloads"
wait "$LOAD"
untrack "$LOAD"
LOAD=
sed 's/^/       | /' "$T/h2load2.out" | grep -E 'requests:|status codes:|finished in'
assert_match 'requests: 1800 total, 1800 started, 1800 done, 1800 succeeded, 0 failed, 0 errored, 0 timeout' \
    "$(cat "$T/h2load2.out")" "slow queries across two reloads: every request done, none failed"
assert_match 'status codes: 1800 2xx, 0 3xx, 0 4xx, 0 5xx' "$(cat "$T/h2load2.out")" \
    "slow queries across two reloads: 2xx only"
assert_range 400 2000 "$(grep -c 'slow-150\.r' "$STUB_LOG")" "slow queries: the names reached the stub"

# ---- rapid reloads while clients give up mid-query: retired views are freed with upstream
# queries still in flight (ASan builds check that nothing freed is read)
gone=()
for i in $(seq 1 20); do
    curl -s --http2 --cacert "$CERTS/ca.pem" --max-time 0.3 -o /dev/null \
        "$(dohgate_url)?dns=$(dnsmsg query "slow-800.gone$i.$STUBZONE" A --b64)" &
    gone+=($!)
done
for i in 1 2 3 4 5; do
    kill -HUP "$DG_PID"
    sleep 0.15
done
wait "${gone[@]}"
sleep 1.2 # the stub's late answers arrive after the views are gone
assert_eq "200 NOERROR 192.0.2.1" "$(doh "rapid.$STUBZONE")" "rapid reloads with abandoned queries: still answering"

# ---- broken files: one error line each, with FILE:LINE; the running settings stay
e0=$(errors)
write_conf "127.0.0.1:$NSD_PORT" 3 "cache-min-ttl soon"
hup
assert_eq $((e0 + 1)) "$(errors)" "bad value: exactly one error line"
assert_file_match "$DG_LOG" "error: reload refused: $CONF:8: 'cache-min-ttl': 'soon' is not a decimal number" \
    "bad value: the error names $CONF:8"
assert_eq 2 "$(xtest)" "bad value refused: X-Test stays 2"
assert_eq "200 NOERROR 192.0.2.1" "$(doh "refused1.$STUBZONE")" "bad value refused: the stub stays the upstream"

e0=$(errors)
write_conf "127.0.0.1:$NSD_PORT" 3 "site-root $T/no-such-dir"
hup
assert_eq $((e0 + 1)) "$(errors)" "missing site-root: exactly one error line"
assert_file_match "$DG_LOG" "error: reload refused: $CONF:8: site-root: .*no-such-dir" \
    "missing site-root: refused after parsing, the error names $CONF:8"
assert_eq 2 "$(xtest)" "missing site-root refused: X-Test stays 2"

e0=$(errors)
write_conf "127.0.0.1:$NSD_PORT" 3
sed -i "s|^cert .*|cert $T/no-such-cert.pem|" "$CONF"
hup
assert_eq $((e0 + 1)) "$(errors)" "missing certificate: exactly one error line"
assert_file_match "$DG_LOG" "error: reload refused: $CONF:2: certificate reload failed.*no-such-cert.pem" \
    "missing certificate: the error names $CONF:2"
assert_eq "200 NOERROR 192.0.2.1" "$(doh "refused3.$STUBZONE")" "missing certificate refused: the stub stays the upstream"

# ---- a restart-only option: named once, kept; the rest still applies
write_conf "127.0.0.1:$NSD_PORT" 4
sed -i 's/^workers 2$/workers 3/' "$CONF"
e0=$(errors)
hup
assert_file_match "$DG_LOG" "warn: reload: workers cannot change without a restart; the running value stays" \
    "workers changed: named in a warning"
assert_eq "$e0" "$(errors)" "workers changed: no error"
assert_eq 4 "$(xtest)" "workers changed: the other settings apply (X-Test: 4)"
assert_eq "200 NOERROR 192.0.2.10" "$(doh "www.$ZONE")" "back on NSD"
assert_match 'NXDOMAIN|REFUSED|SERVFAIL' "$(doh "again.$STUBZONE")" "back on NSD: stub.test names no longer resolve"

finish
