#!/bin/bash
# t_workers: --workers 2 under load from h2load: 200 GET queries over 4 connections with 10
# streams each, a mix of cached names and (as NXDOMAIN) names seen once, then 1000 more over 8
# connections, and 200 POSTs; every request must be answered 2xx. --max-concurrent-streams is
# advertised in the server's SETTINGS. (h2load -m stays below it: a client that opens more
# streams than the limit before the server's SETTINGS arrive gets some refused, as RFC 9113
# allows.)
. "$(dirname "$0")/lib.sh"
need_tools nsd dig curl python3 openssl h2load

# ---- pre
start_nsd
start_dohgate --workers 2 --max-concurrent-streams 32

# uris FILE NAME-LIST...: one DoH GET URI per name ("name/TYPE")
uris() {
    local f=$1 nt
    shift
    : >"$f"
    for nt in "$@"; do
        echo "$(dohgate_url)?dns=$(dnsmsg query "${nt%/*}" "${nt#*/}" --b64)" >>"$f"
    done
}

# h2load_check WHAT N ARGS...: run h2load, expect N requests all succeeded with 2xx
h2load_check() {
    local what=$1 n=$2 out
    shift 2
    timeout 120 h2load "$@" >"$T/h2load.out" 2>&1
    out=$(grep -E '^(requests|status codes):' "$T/h2load.out")
    assert_match "requests: $n total, $n started, $n done, $n succeeded, 0 failed, 0 errored" "$out" "$what: $n requests succeeded"
    assert_match "status codes: $n 2xx, 0 3xx, 0 4xx, 0 5xx" "$out" "$what: all $n answered 2xx"
}

# ---- the hot set: names of the zone (after the first round, cache hits)
uris "$T/hot.txt" "www.$ZONE/A" "www.$ZONE/AAAA" "chain1.$ZONE/A" "mail.$ZONE/MX" "txt.$ZONE/TXT" \
    "short.$ZONE/A" "big.$ZONE/TXT" "nonexistent.$ZONE/A" "mx.$ZONE/A" "loop.$ZONE/A"
h2load_check "h2load -n 200 -c 4 -m 10, 10 names" 200 -n 200 -c 4 -m 10 -i "$T/hot.txt"

# ---- 400 distinct names (upstream misses, NXDOMAIN), more connections and streams
python3 - "$(dohgate_url)" "$ZONE" >"$T/cold.txt" <<'EOF'
import base64, struct, sys
url, zone = sys.argv[1], sys.argv[2]
for i in range(400):
    name = "miss%d.%s" % (i, zone)
    q = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", 1, 1)
    print("%s?dns=%s" % (url, base64.urlsafe_b64encode(q).decode().rstrip("=")))
EOF
h2load_check "h2load -n 1000 -c 8 -m 20, 400 distinct names + repeats" 1000 -n 1000 -c 8 -m 20 -i "$T/cold.txt"

# ---- POST under load
dnsmsg query "www.$ZONE" A --out "$T/post.bin"
h2load_check "h2load POST -n 200 -c 4 -m 10" 200 -n 200 -c 4 -m 10 -d "$T/post.bin" \
    -H 'content-type: application/dns-message' "$(dohgate_url)"

# ---- the stream limit is advertised
out=$(timeout 10 nghttp -nv "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)" 2>&1)
assert_match 'SETTINGS_MAX_CONCURRENT_STREAMS\(0x03\):32\]' "$out" "--max-concurrent-streams 32 is in the server's SETTINGS"

# ---- still answering
doh_get "www.$ZONE" A
assert_eq NOERROR "$(rcode)" "after the load: a query answers NOERROR"

# ---- post
finish
