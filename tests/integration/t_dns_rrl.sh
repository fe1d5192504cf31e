#!/bin/bash
# t_dns_rrl: --dns-rate-limit 20 --dns-rate-slip 2 on plain DNS over UDP, two workers. A flood
# of 2,000 queries in about 1 s from one network (127.0.1.0/24, over 8 source ports, so both
# workers see it: the table is shared) gets at most burst + rate x time full answers, and of the
# rest every second one goes out truncated (TC=1, no records) and the others get nothing; the
# counters agree. Meanwhile another network (127.0.2.1) is answered every time. Two addresses
# of one /24 share their bucket. Bounds are computed from the parameters and the times the
# flood tool measured.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig python3 curl

RATE=20
SLIP=2
BURST=$RATE # one second's worth (rrl.h)
N=2000

# ---- pre
start_nsd
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 2 --dns-listen "127.0.0.1:$UP" --metrics-listen "127.0.0.1:$M_PORT" \
    --dns-rate-limit "$RATE" --dns-rate-slip "$SLIP"
dnsmsg query "www.$ZONE" A --out "$T/q"
# the answer in the cache first (from a network of its own), so that the flood is cache hits
out=$(udpdns ask 127.0.0.1 "$UP" "$T/q" --src 127.0.4.1)
assert_match '^answer ' "$out" "warm-up query answered"

# jf KEY: a number from the last flood's JSON
jf() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/flood.json" "$1"; }
# calc EXPR: integer result (floor) of a Python expression
calc() { python3 -c "import math; print(math.floor($1))"; }

# ---- test: one network floods, another asks every 100 ms
udpdns flood 127.0.0.1 "$UP" "$T/q" --count "$N" --seconds 1 --src 127.0.1.1 --ports 8 \
    --other 127.0.2.1 --other-every 100 >"$T/flood.json"
cat "$T/flood.json"
sent=$(jf sent) full=$(jf full) tc=$(jf tc) bad=$(jf bad) span=$(jf span) window=$(jf window)
assert_eq "$N" "$sent" "the flood sent $N queries"
# Full answers: the burst, plus what refilled while the server handled the flood: at most
# rate x (first send .. last answer), +1 for the millisecond clock; at least half of
# rate x (the sending time), so that a bucket that never refills fails.
lo=$(calc "$BURST + $RATE * $span / 2")
hi=$(calc "$BURST + $RATE * $window + 1")
assert_range "$lo" "$hi" "$full" "full answers within burst + rate x time ($lo..$hi; span ${span}s, window ${window}s)"
assert_eq 0 "$bad" "no other kind of answer (each is full, or TC=1 without records)"
# what the server counted: every limited query slipped (TC=1) or dropped, alternately
m_tc=$(metric_of 'dohgate_dns_truncated_total')
m_drop=$(metric_of 'dohgate_dns_dropped_total{reason="rate-limit"}')
assert_eq "$m_tc" "$tc" "every slipped answer arrived (TC=1 answers = dohgate_dns_truncated_total)"
assert_range "$m_tc" $((m_tc + 1)) "$m_drop" "slip 2: as many dropped as slipped (+1) ($m_drop dropped, $m_tc slipped)"
handled=$((full + m_tc + m_drop))
if [ "${DG_VALGRIND:-0}" = 1 ]; then
    # under valgrind the server can fall behind and the kernel drop queries before it reads them
    assert_range $((N / 4)) "$N" "$handled" "the server handled the flood ($handled of $N; valgrind)"
else
    assert_eq "$N" "$handled" "the server handled every query of the flood: full + slipped + dropped"
fi
limited=$((handled - full))
assert_range $(((limited - 1) / SLIP)) $(((limited + 1) / SLIP)) "$tc" \
    "about 1 in $SLIP of the $limited limited answers went out truncated ($tc)"
# the other network, asking all along
o_sent=$(jf other_sent) o_full=$(jf other_full)
assert_range 5 30 "$o_sent" "the other network asked during the flood ($o_sent queries)"
assert_eq "$o_sent" "$o_full" "the other network (127.0.2.1) was answered every time"
assert_eq 0 "$(metric_of 'dohgate_dns_dropped_total{reason="malformed"}')" "nothing counted as malformed"

# ---- one /24, two addresses: one bucket (a bounded flood from 127.0.3.1, 127.0.3.2 asking every
# 50 ms: together they get no more than one network's share; which of the two gets a refilled
# token depends on who asks first, so only the sum is checked)
sleep 1.1 # the first flood's network refills; this one is new anyway
udpdns flood 127.0.0.1 "$UP" "$T/q" --count 400 --seconds 0.5 --src 127.0.3.1 --ports 4 \
    --other 127.0.3.2 --other-every 50 >"$T/flood.json"
cat "$T/flood.json"
both=$(($(jf full) + $(jf other_full)))
hi=$(calc "$BURST + $RATE * $(jf window) + 1")
assert_range "$BURST" "$hi" "$both" "127.0.3.1 and 127.0.3.2 share one bucket: $both full answers together (at most $hi)"
# (two buckets would give the flood alone about as many, and 127.0.3.2 its ~10 on top)

# ---- after a pause the bucket is full again
sleep 1.1
files=()
for i in $(seq 1 10); do
    dnsmsg query "www.$ZONE" A --id $((200 + i)) --out "$T/p$i.q"
    files+=("$T/p$i.q")
done
assert_eq 10 "$(udpdns ask 127.0.0.1 "$UP" "${files[@]}" --src 127.0.1.1 | grep -c '^answer ')" \
    "1.1 s after the flood: the flooding network is answered again (10 of 10)"

finish
