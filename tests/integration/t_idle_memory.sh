#!/bin/bash
# t_idle_memory: a connection quiet for 2 s (no byte either way) gives its idle memory back
# (conn.c conn_trim()): an HTTP/2 one its frame-buffer page and its stream-map page
# (h2_session_trim()), every one its output buffer, a DNS-over-TLS one its emptied input and
# answer buffers (dnsstream_session_trim()); and a connection that was trimmed serves its next
# requests as before.
# - 300 idle connections (tests/tools/h2conns.py, one answered GET each): after 4 s the pages of
#   the worker's two page pools (one ~20 KiB frame-buffer block and one 4 KiB page per session)
#   that are resident stay below one page per 8 connections (without the trim: 2 per connection);
#   dohgate's debug log says what each connection gave back (the session 24576 bytes: 5 + 1
#   pages, and its output buffer).
# - one connection (tests/tools/h2keep.py) asks a question every 3 s, so it is trimmed before
#   each request: every answer arrives whole (status 200, the same stream, no reset or GOAWAY).
# - one DoT connection (tests/tools/dnsconn.py --again) pipelines 20 queries, is quiet for 3 s,
#   then sends them again: the log shows it gave back its output and answer buffers (the
#   capacity of the burst: more than the 256 bytes of a single answer's), and the second round
#   is answered whole on the same connection.
. "$(dirname "$0")/lib.sh"
need_tools nsd python3

# pool_rss_kib FB_KIB PG_KIB: resident KiB of dohgate's two page pools, found by their exact
# sizes: the frame-buffer pool's reservation (2 x (max-connections + 32) blocks of 20 KiB) and
# the one-page pool's ((max-connections + 32) pages), or both as one mapping when the kernel
# merged the neighbours (a sanitizer's large mappings have other sizes); -1: not found
pool_rss_kib() {
    python3 - "$DG_PID" "$1" "$2" <<'PYEOF'
import re, sys
pid, fb, pg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sizes = {fb, pg, fb + pg}
total, size, found = 0, 0, 0
for line in open(f"/proc/{pid}/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
    if m:
        size = (int(m.group(2), 16) - int(m.group(1), 16)) // 1024
    elif line.startswith("Rss:") and size in sizes:
        total += int(line.split()[1])
        found += 1
print(total if found else -1)
PYEOF
}

# ---- pre
start_nsd
MAXC=1000
DOTP=$(free_port)
DG_LOG_LEVEL=debug start_dohgate --workers 1 --max-connections "$MAXC" --idle-timeout 120 \
    --max-connections-per-client 0 --connection-rate-limit 0 --dot-listen "127.0.0.1:$DOTP"
FB_KIB=$((2 * (MAXC + 32) * 20))
PG_KIB=$(((MAXC + 32) * 4))
assert_range 0 100000 "$(pool_rss_kib "$FB_KIB" "$PG_KIB")" "the page pools' mappings are found in smaps"

# ---- test: many idle connections
N=300
Q=$(dnsmsg query "www.$ZONE" A --b64)
python3 "$SRC_DIR/tests/tools/h2conns.py" --port "$DG_PORT" --count "$N" --sources 3 --hold 60 \
    --query "$Q" --cafile "$CERTS/ca.pem" >"$T/conns.out" 2>"$T/conns.err" &
C=$!
track "$C"
for i in $(seq 1 300); do grep -q '^up' "$T/conns.out" && break; sleep 0.2; done
assert_eq "up $N" "$(grep '^up' "$T/conns.out")" "$N idle HTTP/2 connections up, one answered GET each ($(snip "$T/conns.err"))"
sleep 4
kib=$(pool_rss_kib "$FB_KIB" "$PG_KIB")
echo "# page pools resident with $N idle connections: $kib KiB"
assert_range 0 $((N * 4 / 8)) "$kib" "the idle connections gave their pool pages back ($kib KiB resident for $N connections; 2 pages each without the trim)"
gave=$(grep -c 'idle connection gave back [0-9]* bytes: output buffer [1-9][0-9]*, session 24576$' "$DG_LOG")
assert_range "$N" $((N + 50)) "$gave" "each idle connection gave back its output buffer, and its session its frame buffer and its stream map's page (24576 bytes; $gave log lines)"
kill "$C" 2>/dev/null
wait "$C" 2>/dev/null
untrack "$C"

# ---- test: one connection trimmed before each of its requests
cp "$DG_LOG" "$T/before_keep.log"
out=$(timeout 60 python3 "$SRC_DIR/tests/tools/h2keep.py" --port "$DG_PORT" --sni localhost \
    --cert-out "$T/keep.pem" --interval 3 --max 13 --query "$Q" --cafile "$CERTS/ca.pem" 2>&1)
rc=$?
echo "$out" | tail -3
assert_match 'summary sent=[4-9] ok=[4-9]' "$out" "a connection asked every 3 s got every answer (trimmed in between)"
assert_nomatch 'broken' "$out" "... on one connection, no reset, no GOAWAY"
assert_eq 0 "$rc" "... h2keep.py exits 0"
before=$(grep -c 'idle connection gave back' "$T/before_keep.log")
gave=$(grep -c 'idle connection gave back' "$DG_LOG")
assert_range $((before + 3)) $((before + 20)) "$gave" "... and that connection was trimmed between its requests ($((gave - before)) times)"

# ---- test: a DoT connection after a burst of answers
qs=()
for i in $(seq 1 20); do qs+=("www.$ZONE+pad"); done
before=$(grep -c 'idle connection gave back' "$DG_LOG")
out=$(python3 "$SRC_DIR/tests/tools/dnsconn.py" --tls --timeout 10 --again 3 127.0.0.1 "$DOTP" "${qs[@]}" 2>&1)
first=$(echo "$out" | sed -n '1,/^again$/p' | grep -c 'rcode=NOERROR')
second=$(echo "$out" | sed -n '/^again$/,$p' | grep -c 'rcode=NOERROR')
assert_eq 20 "$first" "DoT: 20 pipelined queries answered NOERROR ($(echo "$out" | tail -2 | tr '\n' ' '))"
assert_eq 20 "$second" "DoT: after 3 s quiet, the same 20 queries answered NOERROR on the same connection"
# The DoT connection's trim is the one line with a session part other than the h2 sessions'
# 24576 (the h2 connections were closed above and trimmed nothing more).
line=$(grep 'idle connection gave back' "$DG_LOG" | tail -n +$((before + 1)) | grep -v 'session 24576$' | head -1)
ob=$(echo "$line" | sed -n 's/.*output buffer \([0-9]*\), session \([0-9]*\)$/\1/p')
sb=$(echo "$line" | sed -n 's/.*output buffer \([0-9]*\), session \([0-9]*\)$/\2/p')
assert_range 512 1000000 "${ob:-0}" "DoT: the quiet connection gave back its output buffer, grown by the burst ($line)"
assert_range 512 1000000 "${sb:-0}" "DoT: ... and its session its answer buffer, grown by the burst"

# ---- post
finish
