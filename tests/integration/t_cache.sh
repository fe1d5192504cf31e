#!/bin/bash
# t_cache: the message cache and the coalescing of identical in-flight queries (design.md "DNS
# pipeline rules"), seen from outside by counting the queries that reach the stub upstream:
# a repeated query is a hit (ID rewritten, TTL aged), the key is case-insensitive and includes
# the qtype, negative answers are cached, an expired entry is fetched again, identical queries
# in flight at once cause one upstream query (10 curl processes; 100 queries over 4 HTTP/2
# connections from h2load and from curl --parallel; per worker with --workers 2), a SERVFAIL is
# cached --cache-servfail-ttl seconds only, EDNS Client Subnet never reaches the upstream nor
# splits the cache, SIGUSR1 logs the counters, the TTL clamps (--cache-min-ttl/--cache-max-ttl)
# and --cache-size 0 (no cache, coalescing still on).
# Serve-stale and prefetch are in t_cache_stale.sh.
. "$(dirname "$0")/lib.sh"
need_tools dig curl python3 openssl h2load kdig

S=$STUBZONE

# ---- helpers

# use_log NAME: the next dohgate logs to $T/dohgate-NAME.log (one log per instance, so that the
# SIGUSR1 lines and a failure's log tail are that instance's)
use_log() { DG_LOG=$T/dohgate-$1.log; }

# noerror_count FILE...: how many files hold a DNS answer with QR=1, NOERROR, A 192.0.2.1
noerror_count() {
    python3 - "$@" <<'EOF'
import struct, sys
n = 0
for f in sys.argv[1:]:
    try:
        d = open(f, "rb").read()
    except OSError:
        continue
    if (len(d) >= 16 and d[2] & 0x80 and d[3] & 0x0F == 0
            and struct.unpack("!H", d[6:8])[0] >= 1 and d[-4:] == bytes([192, 0, 2, 1])):
        n += 1
print(n)
EOF
}

# par_curl NAME PROCS PER: PROCS curl processes at once, each sending PER identical GETs for
# NAME/A as parallel streams of one HTTP/2 connection (curl -Z multiplexes by default). Sets
# PAR_2XX (responses with a 2xx status) and PAR_OK (bodies that are NOERROR answers).
par_curl() {
    local name=$1 procs=$2 per=$3 q p i pids=()
    q=$(dnsmsg query "$name" A --b64)
    rm -rf "$T/par"
    mkdir -p "$T/par"
    for p in $(seq 1 "$procs"); do
        for i in $(seq 1 "$per"); do
            printf 'url = "%s"\noutput = "%s"\n' "$(dohgate_url)?dns=$q" "$T/par/$p.$i.bin"
        done >"$T/par/$p.cfg"
        # shellcheck disable=SC2046
        timeout 30 curl -s --http2 --max-time 15 $(dg_trust) -Z --parallel-max "$per" \
            -K "$T/par/$p.cfg" -w '%{http_code}\n' >"$T/par/$p.codes" 2>"$T/par/$p.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    PAR_2XX=$(cat "$T"/par/*.codes | grep -c '^2')
    PAR_OK=$(noerror_count "$T"/par/*.bin)
}

# h2load_run N C M NAME: h2load -n N -c C -m M, GET for NAME/A (bounded); output in $T/h2load.out
h2load_run() {
    timeout 60 h2load -n "$1" -c "$2" -m "$3" "$(dohgate_url)?dns=$(dnsmsg query "$4" A --b64)" \
        >"$T/h2load.out" 2>&1
}

# usr1 [NWORKERS]: SIGUSR1 to dohgate, then wait (at most 5 s) until the log has gained one
# "worker N:" line per worker (default 1); the lines it gained are left in $T/usr1.txt
usr1() {
    local nw=${1:-1} before i
    before=$(wc -l <"$DG_LOG")
    kill -USR1 "$DG_PID"
    for i in $(seq 1 50); do
        tail -n +"$((before + 1))" "$DG_LOG" >"$T/usr1.txt"
        [ "$(grep -c 'info: worker [0-9]*:' "$T/usr1.txt")" -ge "$nw" ] && return 0
        sleep 0.1
    done
    return 1
}

# wstat FIELD: a counter from the "worker 0:" line of $T/usr1.txt; FIELD is one of queries,
# hits, stale, misses, coalesced, prefetches, servfail, upstream
wstat() {
    local re
    case $1 in
    queries) re='connections; queries \([0-9]*\)' ;;
    hits) re='cache hits \([0-9]*\)' ;;
    upstream) re='upstream queries \([0-9]*\)' ;;
    *) re="[;,] $1 \([0-9]*\)" ;;
    esac
    grep 'info: worker 0:' "$T/usr1.txt" | head -1 | sed -n "s/.*$re.*/\1/p"
}

# ============================================================================================
# dohgate A: one worker, default cache, SERVFAILs cached 5 s
# ---- pre
start_stub
use_log a
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 500 \
    --query-timeout 1500 --cache-servfail-ttl 5

# ---- hits
doh_get "cached.$S" A
assert_eq NOERROR "$(rcode)" "first query: NOERROR"
doh_get "cached.$S" A --id 999
assert_eq NOERROR "$(rcode)" "second query: NOERROR"
assert_eq 999 "$(dns_id)" "second query: the cached answer carries the new query's ID"
assert_eq 1 "$(stub_count udp "cached.$S.")" "second query: a cache hit (the stub saw the name once)"
doh_get "CaChEd.StUb.TeSt" A
assert_eq NOERROR "$(rcode)" "mixed-case query: NOERROR"
assert_eq 1 "$(stub_count udp "cached.$S.")" "the cache key is case-insensitive (CaChEd.StUb.TeSt is a hit)"
doh_get "cached.$S" TXT
assert_eq 2 "$(stub_count udp "cached.$S.")" "the cache key includes the qtype (TXT is a miss)"

# ---- TTLs age (the ttl-1 entry of the expiry check below ages at the same time)
doh_get "ttl-1.$S" A
doh_get "ttl-30.$S" A
sleep 2.2
doh_get "ttl-30.$S" A
assert_eq 1 "$(stub_count udp "ttl-30.$S.")" "ttl-30: the second query is a hit"
assert_range 0 28 "$(answers | awk '{ print $2 }')" "ttl-30: after 2 s the cached record's TTL is aged"
assert_range 0 28 "$(max_age)" "ttl-30: after 2 s max-age is aged"

# ---- expiry
doh_get "ttl-1.$S" A
assert_eq NOERROR "$(rcode)" "ttl-1: answered after expiry"
assert_eq 2 "$(stub_count udp "ttl-1.$S.")" "ttl-1: an expired entry is fetched again"

# ---- negative caching
doh_get "nxdomain.$S" A
doh_get "nxdomain.$S" A
assert_eq NXDOMAIN "$(rcode)" "NXDOMAIN from the cache"
assert_eq 1 "$(stub_count udp "nxdomain.$S.")" "NXDOMAIN is cached"

# ---- SERVFAIL is cached --cache-servfail-ttl (5) seconds: two quick queries fit even on a loaded machine, then asked for again
doh_get "servfail.sf.$S" A
assert_eq SERVFAIL "$(rcode)" "servfail: the upstream's SERVFAIL is passed on"
doh_get "servfail.sf.$S" A
assert_eq SERVFAIL "$(rcode)" "servfail: second query answered SERVFAIL"
assert_eq 1 "$(stub_count udp "servfail.sf.$S.")" "servfail: two quick queries, one upstream query (cached)"
sleep 5.5
doh_get "servfail.sf.$S" A
assert_eq SERVFAIL "$(rcode)" "servfail: after 5.5 s answered SERVFAIL"
assert_eq 2 "$(stub_count udp "servfail.sf.$S.")" "servfail: after 5.5 s (--cache-servfail-ttl 5) a new upstream query"

# ---- coalescing: 10 identical queries in flight at once share one upstream query
q=$(dnsmsg query "slow-300.coalesce.$S" A --b64)
pids=()
for i in $(seq 1 10); do
    curl -s --http2 --max-time 10 --cacert "$CERTS/ca.pem" -o "$T/co.$i" -w '%{http_code}' \
        "$(dohgate_url)?dns=$q" >"$T/co.$i.code" 2>/dev/null &
    pids+=($!)
done
wait "${pids[@]}"
good=0
for i in $(seq 1 10); do
    [ "$(cat "$T/co.$i.code")" = 200 ] && dnsmsg show "$T/co.$i" 2>/dev/null | grep -q 'rcode=NOERROR' && good=$((good + 1))
done
assert_eq 10 "$good" "coalescing: 10 parallel identical queries all answered NOERROR"
assert_eq 1 "$(stub_count udp "slow-300.coalesce.$S.")" "coalescing: one upstream query for 10 identical in-flight queries"

# the same over one connection (10 streams)
h2load_run 10 1 10 "slow-300.coalesce2.$S"
assert_file_match "$T/h2load.out" 'status codes: 10 2xx' "coalescing on one connection: 10 streams answered 2xx"
assert_eq 1 "$(stub_count udp "slow-300.coalesce2.$S.")" "coalescing on one connection: one upstream query"

# ---- 100 identical queries over 4 connections (25 streams each), one worker: one upstream query.
# SIGUSR1 snapshots around the h2load run show that the 100 reached the resolver and that
# coalescing (not only the cache) kept them from the upstream.
usr1 || ko "SIGUSR1: no worker line in the log within 5 s"
q0=$(wstat queries) c0=$(wstat coalesced) u0=$(wstat upstream)
h2load_run 100 4 25 "slow-300.h2load100.$S"
assert_file_match "$T/h2load.out" '^requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed' \
    "100 over 4 connections (h2load -n 100 -c 4 -m 25): 100 requests succeeded"
assert_file_match "$T/h2load.out" '^status codes: 100 2xx' "100 over 4 connections (h2load): all answered 2xx"
assert_eq 1 "$(stub_count udp "slow-300.h2load100.$S.")" "100 over 4 connections (h2load): exactly one upstream query"
usr1 || ko "SIGUSR1: no worker line in the log within 5 s"
assert_eq 100 "$(($(wstat queries) - q0))" "100 over 4 connections (h2load): the worker resolved 100 queries"
assert_eq 1 "$(($(wstat upstream) - u0))" "100 over 4 connections (h2load): the worker sent 1 upstream query"
assert_range 1 99 "$(($(wstat coalesced) - c0))" "100 over 4 connections (h2load): queries were coalesced onto the one in flight"

# the same with curl (4 processes, 25 parallel streams each), whose bodies we can read
par_curl "slow-300.curl100.$S" 4 25
assert_eq 100 "$PAR_2XX" "100 over 4 connections (curl -Z): all answered 2xx"
assert_eq 100 "$PAR_OK" "100 over 4 connections (curl -Z): all NOERROR with the A record"
assert_eq 1 "$(stub_count udp "slow-300.curl100.$S.")" "100 over 4 connections (curl -Z): exactly one upstream query"

# ---- EDNS Client Subnet is removed before forwarding (RFC 7871 §7.1.2 leaves it to us; the
# README promises it): the stub appends " ecs" to its log line when the OPT it received carries
# option 8. Positive control first: a query with ECS sent straight to the stub is seen as such.
dig +short +time=2 +tries=1 +subnet=192.0.2.0/24 @127.0.0.1 -p "$STUB_PORT" "ecsprobe.$S" A >/dev/null 2>&1
assert_file_match "$STUB_LOG" "^udp ecsprobe\.$S\. ecs$" "ECS: the stub notices an ECS option (control, dig +subnet straight to it)"
doh_get "ecs.$S" A --ecs 192.0.2.0/24
assert_eq NOERROR "$(rcode)" "ECS: a GET query with ECS 192.0.2.0/24 is answered NOERROR"
doh_post "ecs.$S" A --ecs 198.51.100.0/24 --id 77
assert_eq NOERROR "$(rcode)" "ECS: a POST query with another subnet is answered NOERROR"
assert_eq 77 "$(dns_id)" "ECS: the second answer carries its own ID"
assert_eq 1 "$(stub_count udp "ecs.$S.")" "ECS: the name reached the stub once, without ECS (other subnet = same cache entry)"
doh_post "ecs6.$S" A --ecs 2001:db8::/56 --edns 4096
assert_eq 1 "$(stub_count udp "ecs6.$S.")" "ECS: an IPv6 ECS query reached the stub without ECS"
# shellcheck disable=SC2046
kout=$(timeout 10 kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" \
    +subnet=203.0.113.0/24 "ecs-kdig.$S" A 2>&1)
assert_match 'status: NOERROR' "$kout" "ECS: kdig +https +subnet is answered NOERROR"
assert_eq 1 "$(stub_count udp "ecs-kdig.$S.")" "ECS: kdig's ECS query reached the stub without ECS"
grep -v "^udp ecsprobe\.$S\. " "$STUB_LOG" >"$T/stub-noprobe.log"
assert_file_nomatch "$T/stub-noprobe.log" ' ecs$' "ECS: no query dohgate forwarded carried ECS"

# ---- SIGUSR1 after all this traffic: a "cache:" line with hits and the worker's line
usr1 || ko "SIGUSR1: no worker line in the log within 5 s"
assert_file_match "$T/usr1.txt" 'info: cache: [0-9]+ entries, [0-9]+ bytes of [0-9]+; hits [1-9][0-9]*, stale hits [0-9]+, misses [1-9][0-9]*, inserts [1-9]' \
    "SIGUSR1: the log gains a cache line with non-zero hits"
assert_file_match "$T/usr1.txt" 'info: worker 0: [0-9]+ connections; queries [1-9][0-9]*: cache hits [1-9][0-9]*, .*coalesced [1-9][0-9]*, .*upstream queries [1-9]' \
    "SIGUSR1: the log gains the worker's line (queries, hits, coalesced, upstream queries)"
stop_dohgate

# ============================================================================================
# dohgate B: two workers. Coalescing is per worker by design (resolver.h: like Unbound's
# per-thread mesh); the cache is shared. So 100 identical queries over 4 connections that land
# on both workers may cause one upstream query per worker: 1 or 2, never more.
use_log b
start_dohgate --workers 2 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 500 --query-timeout 1500
h2load_run 100 4 25 "slow-300.w2.$S"
assert_file_match "$T/h2load.out" '^status codes: 100 2xx' "--workers 2: 100 over 4 connections (h2load) answered 2xx"
assert_range 1 2 "$(stub_count udp "slow-300.w2.$S.")" "--workers 2: h2load's 100 queries caused 1 or 2 upstream queries (coalescing is per worker)"
par_curl "slow-300.w2curl.$S" 4 25
assert_eq 100 "$PAR_OK" "--workers 2: 100 over 4 connections (curl -Z) all NOERROR with the A record"
assert_range 1 2 "$(stub_count udp "slow-300.w2curl.$S.")" "--workers 2: curl's 100 queries caused 1 or 2 upstream queries (coalescing is per worker)"
usr1 2 || ko "SIGUSR1: not two worker lines in the log within 5 s"
assert_file_match "$T/usr1.txt" 'info: worker 0: ' "--workers 2: SIGUSR1 logs worker 0's counters"
assert_file_match "$T/usr1.txt" 'info: worker 1: ' "--workers 2: SIGUSR1 logs worker 1's counters"
stop_dohgate

# ============================================================================================
# dohgate C: --cache-min-ttl 60. The cached TTL (and max-age) is raised to 60 and ages from there;
# a ttl-1 entry lives past its own TTL.
use_log c
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --cache-min-ttl 60
doh_get "ttl-1.min.$S" A
t1=$(now_ms)
doh_get "ttl-5.min.$S" A
assert_range 59 60 "$(answers | awk '{ print $2 }')" "--cache-min-ttl 60: the first (upstream) ttl-5 answer is clamped too"
assert_range 59 60 "$(max_age)" "--cache-min-ttl 60: ... and so is its max-age"
doh_get "ttl-5.min.$S" A
assert_eq 1 "$(stub_count udp "ttl-5.min.$S.")" "--cache-min-ttl 60: the second ttl-5 query is a hit"
assert_range 55 60 "$(answers | awk '{ print $2 }')" "--cache-min-ttl 60: the cached ttl-5 record carries TTL 55..60"
assert_range 55 60 "$(max_age)" "--cache-min-ttl 60: the cached ttl-5 answer carries max-age 55..60"
wait_ms=$((t1 + 1600 - $(now_ms)))
[ "$wait_ms" -gt 0 ] && sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
doh_get "ttl-1.min.$S" A
assert_eq 1 "$(stub_count udp "ttl-1.min.$S.")" "--cache-min-ttl 60: a ttl-1 answer is still a hit 1.6 s later"
assert_range 55 59 "$(answers | awk '{ print $2 }')" "--cache-min-ttl 60: ... with its TTL aged from 60"
stop_dohgate

# ============================================================================================
# dohgate D: --cache-max-ttl 10
use_log d
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --cache-max-ttl 10
doh_get "ttl-3600.max.$S" A
assert_range 9 10 "$(answers | awk '{ print $2 }')" "--cache-max-ttl 10: the first (upstream) ttl-3600 answer is clamped too"
assert_range 9 10 "$(max_age)" "--cache-max-ttl 10: ... and so is its max-age"
doh_get "ttl-3600.max.$S" A
assert_eq 1 "$(stub_count udp "ttl-3600.max.$S.")" "--cache-max-ttl 10: the second ttl-3600 query is a hit"
assert_range 0 10 "$(answers | awk '{ print $2 }')" "--cache-max-ttl 10: the cached ttl-3600 record carries TTL <= 10"
assert_range 0 10 "$(max_age)" "--cache-max-ttl 10: the cached ttl-3600 answer carries max-age <= 10"
stop_dohgate

# ============================================================================================
# dohgate E: --cache-size 0: nothing is cached, identical in-flight queries are still coalesced
use_log e
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --cache-size 0
doh_get "nocache.$S" A
assert_eq NOERROR "$(rcode)" "--cache-size 0: first query NOERROR"
doh_get "nocache.$S" A
assert_eq NOERROR "$(rcode)" "--cache-size 0: second query NOERROR"
assert_eq 2 "$(stub_count udp "nocache.$S.")" "--cache-size 0: the same name twice, two upstream queries"
par_curl "slow-300.nocache.$S" 1 10
assert_eq 10 "$PAR_OK" "--cache-size 0: 10 parallel identical queries all NOERROR"
assert_eq 1 "$(stub_count udp "slow-300.nocache.$S.")" "--cache-size 0: 10 identical in-flight queries, one upstream query (coalescing)"
usr1 || ko "SIGUSR1: no worker line in the log within 5 s"
assert_file_nomatch "$T/usr1.txt" 'info: cache:' "--cache-size 0: SIGUSR1 logs no cache line"
assert_file_match "$T/usr1.txt" 'info: worker 0: .*cache hits 0, .*coalesced 9,' "--cache-size 0: SIGUSR1: no hits, 9 coalesced"

# ---- post
finish
