#!/bin/bash
# t_cache: the message cache and the coalescing of identical in-flight queries (design.md "DNS
# pipeline rules"), seen from outside by counting the queries that reach the stub upstream:
# a repeated query is a hit (ID rewritten, TTL aged), the key is case-insensitive and includes
# the qtype, negative answers are cached, an expired entry is fetched again, and 10 identical
# queries in flight at once cause one upstream query.
. "$(dirname "$0")/lib.sh"
need_tools dig curl python3 openssl

# ---- pre
start_stub
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 500 --query-timeout 1500
S=$STUBZONE

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

# ---- TTLs age
doh_get "ttl-30.$S" A
sleep 2.2
doh_get "ttl-30.$S" A
assert_eq 1 "$(stub_count udp "ttl-30.$S.")" "ttl-30: the second query is a hit"
assert_range 0 28 "$(answers | awk '{ print $2 }')" "ttl-30: after 2 s the cached record's TTL is aged"
assert_range 0 28 "$(max_age)" "ttl-30: after 2 s max-age is aged"

# ---- expiry
doh_get "ttl-1.$S" A
sleep 2.2
doh_get "ttl-1.$S" A
assert_eq NOERROR "$(rcode)" "ttl-1: answered after expiry"
assert_eq 2 "$(stub_count udp "ttl-1.$S.")" "ttl-1: an expired entry is fetched again"

# ---- negative caching
doh_get "nxdomain.$S" A
doh_get "nxdomain.$S" A
assert_eq NXDOMAIN "$(rcode)" "NXDOMAIN from the cache"
assert_eq 1 "$(stub_count udp "nxdomain.$S.")" "NXDOMAIN is cached"

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

# the same over one connection (10 streams) with h2reset-free tooling: h2load if present
if command -v h2load >/dev/null 2>&1; then
    q=$(dnsmsg query "slow-300.coalesce2.$S" A --b64)
    h2load -n 10 -c 1 -m 10 "$(dohgate_url)?dns=$q" >"$T/h2load.out" 2>&1
    assert_file_match "$T/h2load.out" 'status codes: 10 2xx' "coalescing on one connection: 10 streams answered 2xx"
    assert_eq 1 "$(stub_count udp "slow-300.coalesce2.$S.")" "coalescing on one connection: one upstream query"
fi

# ---- post
finish
