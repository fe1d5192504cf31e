#!/bin/bash
# t_idle_memory: an idle HTTP/2 connection gives its frame-buffer page and its stream-map page
# back (h2_session_trim(), after 2 s without a byte either way), and a connection that was
# trimmed serves its next requests as before.
# - 300 idle connections (tests/tools/h2conns.py, one answered GET each): after 4 s the pages of
#   the worker's two page pools (one ~20 KiB frame-buffer block and one 4 KiB page per session)
#   that are resident stay below one page per 8 connections (without the trim: 2 per connection);
#   dohgate's debug log says what each connection gave back (24576 bytes: 5 + 1 pages).
# - one connection (tests/tools/h2keep.py) asks a question every 3 s, so it is trimmed before
#   each request: every answer arrives whole (status 200, the same stream, no reset or GOAWAY).
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
DG_LOG_LEVEL=debug start_dohgate --workers 1 --max-connections "$MAXC" --idle-timeout 120 \
    --max-connections-per-client 0 --connection-rate-limit 0
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
gave=$(grep -c 'h2: idle connection gave back 24576 bytes' "$DG_LOG")
assert_range "$N" $((N + 50)) "$gave" "each idle session gave back its frame buffer and its stream map's page (24576 bytes; $gave log lines)"
kill "$C" 2>/dev/null
wait "$C" 2>/dev/null
untrack "$C"

# ---- test: one connection trimmed before each of its requests
out=$(timeout 60 python3 "$SRC_DIR/tests/tools/h2keep.py" --port "$DG_PORT" --sni localhost \
    --cert-out "$T/keep.pem" --interval 3 --max 13 --query "$Q" --cafile "$CERTS/ca.pem" 2>&1)
rc=$?
echo "$out" | tail -3
assert_match 'summary sent=[4-9] ok=[4-9]' "$out" "a connection asked every 3 s got every answer (trimmed in between)"
assert_nomatch 'broken' "$out" "... on one connection, no reset, no GOAWAY"
assert_eq 0 "$rc" "... h2keep.py exits 0"
before=$gave
gave=$(grep -c 'h2: idle connection gave back' "$DG_LOG")
assert_range $((before + 3)) $((before + 20)) "$gave" "... and that connection was trimmed between its requests ($((gave - before)) times)"

# ---- post
finish
