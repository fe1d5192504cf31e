# Shared by tests/stress/s_*.sh: the integration harness (tests/integration/lib.sh) plus figures.
. "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"
STRESS_MODE=${STRESS_MODE:-short}
H2CONNS=$SRC_DIR/tests/tools/h2conns.py
# short or long value
by_mode() { if [ "$STRESS_MODE" = long ]; then echo "$2"; else echo "$1"; fi; }
rss_kib() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }
# cpu_ms PID: user+system CPU time of the process so far
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' /proc/"$1"/stat; }
figure() { echo "FIGURE $TESTNAME $*"; }
# legit: one DoH query from 127.0.0.9 on a new connection: "CODE MS"
legit() {
    local t0 code
    t0=$(now_ms)
    code=$(curl -s --max-time 10 --http2 --interface 127.0.0.9 --cacert "$CERTS/ca.pem" -o /dev/null \
        -w '%{http_code}' "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)" 2>/dev/null)
    echo "$code $(($(now_ms) - t0))"
}

# ---------------------------------------------------------------------------------------------
# issue 14: attacks that make the server hold resources (s_zerowindow, s_bodyhold, soak.sh)
H2HOLD=$SRC_DIR/tests/tools/h2hold.py
DOHPROBE=$SRC_DIR/tests/tools/dohprobe.py
fd_count() { find /proc/"$1"/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# jget FILE KEY: a top-level field of the last JSON line of FILE (h2hold.py, dohprobe.py)
jget() {
    python3 -c 'import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
v = json.loads(lines[-1]).get(sys.argv[2]) if lines else None
print("" if v is None else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)' "$1" "$2" 2>/dev/null
}
# start_sampler: every 0.2 s "MS FDS RSS_KIB" of dohgate into $T/samples (until stop_sampler)
start_sampler() {
    rm -f "$T/samples.stop"
    ( while [ ! -e "$T/samples.stop" ]; do
          echo "$(now_ms) $(fd_count "$DG_PID") $(rss_kib "$DG_PID")"
          sleep 0.2
      done >>"$T/samples" ) &
    SAMPLER=$!
    track "$SAMPLER"
}
stop_sampler() { touch "$T/samples.stop"; wait "$SAMPLER" 2>/dev/null; untrack "$SAMPLER"; }
# peak FROM_MS COLUMN: the highest value of column 2 (fds) or 3 (rss KiB) sampled since FROM_MS
peak() { awk -v f="$1" -v c="$2" '$1 >= f && $c > m { m = $c } END { print m + 0 }' "$T/samples"; }
# start_probe NAME [dohprobe.py args]: legitimate requests from 127.0.0.9 until stop_probe NAME;
# its summary goes to $T/NAME.out, one line per request to $T/NAME.log
start_probe() {
    local name=$1
    shift
    rm -f "$T/$name.stop"
    python3 "$DOHPROBE" --port "$DG_PORT" --cafile "$CERTS/ca.pem" --stop-file "$T/$name.stop" \
        --log "$T/$name.log" "$@" >"$T/$name.out" 2>"$T/$name.err" &
    eval "PROBE_$name=$!"
    track $!
}
stop_probe() {
    local p
    eval "p=\$PROBE_$1"
    touch "$T/$1.stop"
    wait "$p" 2>/dev/null
    untrack "$p"
}
# wait_line FILE ERE SECONDS: until FILE has a line matching ERE (1 if it never came)
wait_line() {
    local n=$(($3 * 10))
    while [ "$n" -gt 0 ]; do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

# hold_attack LABEL H2HOLD-ARGS...: one attack by tests/tools/h2hold.py (its --hold is HOLD, set
# by the caller, with SEND_TIMEOUT and the bounds below) while legitimate DoH GETs and POSTs
# come from another address. Figures: descriptors and RSS before, at the peak, SEND_TIMEOUT +
# MARGIN after the attack was up (attackers still connected) and after it left; the legitimate
# latency. Asserts:
#   - peak descriptors <= fds before + connections + FD_BOUND   (the caller's budget sum)
#   - peak RSS <= RSS before + RSS_BOUND_KIB
#   - SEND_TIMEOUT + MARGIN after the attack was up (the attackers still connected, PINGing):
#     descriptors <= before + connections + 16 (what they held is given back; their sockets
#     remain, bounded by max-connections-per-client)
#   - once they left: descriptors <= before + 16, RSS <= before + RSS_BOUND_KIB
#   - every legitimate request answered (and at least a few were sent)
hold_attack() {
    local label=$1 fds0 rss0 t0 up hp fds_late fds_after rss_after pk_fd pk_rss conns
    shift
    fds0=$(fd_count "$DG_PID")
    rss0=$(rss_kib "$DG_PID")
    t0=$(now_ms)
    start_sampler
    start_probe "probe_$label" --kinds get,post --interval 0.1 --timeout 5
    python3 "$H2HOLD" --port "$DG_PORT" --hold "$HOLD" --connect-timeout 5 "$@" >"$T/$label.hold" 2>"$T/$label.err" &
    hp=$!
    track "$hp"
    wait_line "$T/$label.hold" '^up' 120 || ko "$label: h2hold.py did not come up ($(snip "$T/$label.err"))"
    conns=$(sed -n 's/^up //p' "$T/$label.hold")
    sleep $((SEND_TIMEOUT + MARGIN))
    fds_late=$(fd_count "$DG_PID")
    wait "$hp"
    untrack "$hp"
    sleep 2
    fds_after=$(fd_count "$DG_PID")
    rss_after=$(rss_kib "$DG_PID")
    stop_probe "probe_$label"
    stop_sampler
    pk_fd=$(peak "$t0" 2)
    pk_rss=$(peak "$t0" 3)
    local out=$T/probe_$label.out
    figure "$label: attackers=${conns:-0} fds_before=$fds0 fds_peak=$pk_fd fds_at_send_timeout_plus_${MARGIN}s=$fds_late fds_after=$fds_after rss_before_kib=$rss0 rss_peak_kib=$pk_rss rss_after_kib=$rss_after"
    figure "$label: server did: $(tail -n 1 "$T/$label.hold")"
    figure "$label: legit=$(jget "$out" ok)/$(jget "$out" n) p50_ms=$(jget "$out" p50_ms) p99_ms=$(jget "$out" p99_ms) max_ms=$(jget "$out" max_ms) failures=$(jget "$out" reasons)"
    conns=${conns:-0}
    assert_range 1 1000000 "$conns" "$label: the attack came up ($(snip "$T/$label.err"))"
    assert_range 0 $((fds0 + conns + FD_BOUND)) "$pk_fd" "$label: peak descriptors $pk_fd <= $fds0 before + $conns connections + $FD_BOUND ($FD_WHY)"
    assert_range 0 $((rss0 + RSS_BOUND_KIB)) "$pk_rss" "$label: peak RSS $pk_rss KiB <= $rss0 KiB before + $RSS_BOUND_KIB KiB ($RSS_WHY)"
    assert_range 0 $((fds0 + conns + 16)) "$fds_late" "$label: ${SEND_TIMEOUT}+${MARGIN} s into the attack, attackers still connected, what they held is given back: $fds_late descriptors <= $fds0 + $conns connections + 16"
    assert_range 0 $((fds0 + 16)) "$fds_after" "$label: after the attackers left, descriptors back to near baseline: $fds_after <= $fds0 + 16"
    assert_range 0 $((rss0 + RSS_BOUND_KIB)) "$rss_after" "$label: after the attack, RSS $rss_after KiB <= $rss0 + $RSS_BOUND_KIB KiB"
    assert_range 10 1000000 "$(jget "$out" n)" "$label: legitimate requests were sent during the attack ($(snip "$T/probe_$label.err"))"
    assert_eq 0 "$(jget "$out" failed)" "$label: every legitimate DoH request answered during the attack (failures: $(jget "$out" reasons))"
}
