#!/bin/bash
# s_rapid_reset: the HTTP/2 rapid-reset flood (CVE-2023-44487): clients that open streams and
# cancel them at once, 8 clients x 4,000 (long: 32 x 4,000), each stream a
# query the upstream never answers. nghttp2's flood limit ends each such connection (GOAWAY,
# then close);
# the server's CPU and memory for the whole flood are printed and bounded, nothing is left in
# flight, and a legitimate query is answered right after.
. "$(dirname "$0")/lib.sh"
need_tools curl python3
H2RESET=$TOOLS_DIR/h2reset
[ -x "$H2RESET" ] || die "h2reset not built"
C=$(by_mode 8 32)
N=4000 # h2reset's most

start_stub
start_nsd
start_dohgate --workers 2 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 2000 --query-timeout 2000
cpu0=$(cpu_ms "$DG_PID")
rss0=$(rss_kib "$DG_PID")
t0=$(now_ms)
pids=()
for i in $(seq 1 "$C"); do
    "$H2RESET" "$DG_PORT" rapid "$N" "silent.rapid$i.$STUBZONE" >"$T/r$i.out" 2>&1 &
    pids+=($!)
    track $!
done
peak=$rss0
while :; do
    r=$(rss_kib "$DG_PID")
    [ "$r" -gt "$peak" ] && peak=$r
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.05
done
for p in "${pids[@]}"; do wait "$p"; untrack "$p"; done
dt=$(($(now_ms) - t0))
cpu=$(($(cpu_ms "$DG_PID") - cpu0))
goaway=$(cat "$T"/r*.out | grep -c 'GOAWAY received')
# the server's GOAWAY is followed by its close; a flooder still writing may see the close (a TCP
# reset drops the unread GOAWAY) before it reads the GOAWAY: stopped either way
stopped=$(grep -lE 'GOAWAY received|connection closed by the server' "$T"/r*.out | wc -l)
opened=$(awk '{s += $2} END {print s}' "$T"/r*.out)
figure "clients=$C streams_each=$N opened=$opened goaway_seen=$goaway stopped=$stopped wall_ms=$dt server_cpu_ms=$cpu rss_before_kib=$rss0 rss_peak_kib=$peak"
assert_eq "$C" "$stopped" "the server ended every flooding connection, with GOAWAY ($goaway seen) ($(head -c 200 "$T/r1.out"))"
assert_eq "$C" "$goaway" "every flooder read the GOAWAY (lingering close: no reset ate it)"
assert_range 0 $((30 * 1024)) "$((peak - rss0))" "server memory grew by at most 30 MiB during the flood ($((peak - rss0)) KiB)"
assert_range 0 $((dt * 2)) "$cpu" "server CPU stayed within the wall time of 2 cores ($cpu ms in $dt ms)"
upq=$(grep -c 'silent.rapid' "$STUB_LOG")
figure "queries_reaching_upstream=$upq"
read -r code ms <<<"$(legit)"
assert_eq 200 "$code" "a legitimate query is answered right after (${ms} ms)"
finish
