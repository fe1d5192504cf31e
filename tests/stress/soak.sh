#!/bin/bash
# soak.sh: a long run by hand (not in CI; tests/stress/run.sh only takes s_*.sh):
#   tests/stress/soak.sh [--minutes N]     (default 30; DOHGATE=path, default build/dohgate)
# One dohgate (2 workers, static site, two upstreams, a configuration file) under, all at once:
#   - a steady legitimate load from addresses no attacker uses, each request on a new
#     connection (tests/tools/dohprobe.py): DoH GET + POST of a cached name (10/s), DoH GET of a
#     42 s TTL name, so that the upstreams are asked again and again (2/s), website GETs (4/s);
#   - every attack of tests/stress in rotation, 10 s each with 5 s between them: zero-window,
#     body-hold, slowloris, dripped TLS handshakes, rapid reset, 300 idle connections, a rate-
#     limited query flood (h2load); handshake-timeout 3 and request-timeout 5, so that the slow
#     ones are closed within their 10 s (the never-reading HTTP/1.1 clients of s_nonreader are
#     not in it: that test has its client inline);
#   - every 15 s in turn: a configuration reload (the file rewritten, SIGHUP) or a certificate
#     reload (a new certificate and key with a new serial written over the files; dohgate polls
#     them every second: cert-check-interval 1), the new serial checked on a new connection;
#   - an upstream that flaps: the second NSD is stopped for 20 s, started for 20 s, and so on.
# Every 10 s a sample: RSS, descriptors, legitimate requests and failures in those 10 s, the
# attack running. At the end a table of the samples, then it asserts:
#   - no legitimate request failed (and some were made);
#   - RSS flat after warm-up: warm-up is the first max(60 s, a fifth of the run); after it, the
#     RSS is measured between two attacks (just before each starts, so like is compared with
#     like), and the lowest of the last third of those samples is at most the lowest of the first
#     third + max(4 MiB, 10%): troughs, because the allocator gives a freed burst (body-hold)
#     back to the system some seconds later or not at all, while a leak raises every trough;
#   - descriptors not growing: the same between-attack samples, lowest of the last third <= lowest
#     of the first third + 8, and once everything has stopped, within 8 of the count before any
#     load;
#   - every SIGHUP logged a reload, every new certificate was served.
# Exit status 1 when an assertion failed.
. "$(dirname "$0")/lib.sh"
MINUTES=30
while [ $# -gt 0 ]; do
    case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    *) echo "usage: soak.sh [--minutes N]"; exit 2 ;;
    esac
done
[[ $MINUTES =~ ^[0-9]+$ ]] && [ "$MINUTES" -ge 1 ] || { echo "--minutes: a whole number >= 1"; exit 2; }
need_tools nsd curl h2load python3 openssl
[ -x "$TOOLS_DIR/h2reset" ] || die "$TOOLS_DIR/h2reset missing (cmake --build build --target h2reset)"
DURATION=$((MINUTES * 60))
WARMUP=$((DURATION / 5 > 60 ? DURATION / 5 : 60))
SEND_TIMEOUT=5

# start_nsd_b: a second NSD for the same zone, from start_nsd's configuration (own dir, port)
start_nsd_b() {
    local d=$T/nsdb i
    mkdir -p "$d"
    cp "$T/nsd/test.zone" "$d/"
    [ -n "${NSDB_PORT:-}" ] || NSDB_PORT=$(free_port)
    sed -e "s|$T/nsd\\([\"/]\\)|$d\\1|g" -e "s/@$NSD_PORT\$/@$NSDB_PORT/" \
        -e "s/port: $NSD_PORT\$/port: $NSDB_PORT/" "$T/nsd/nsd.conf" >"$d/nsd.conf"
    "${GUARD[@]}" nsd -d -c "$d/nsd.conf" >>"$d/nsd.out" 2>&1 </dev/null &
    NSDB_PID=$!
    for i in $(seq 1 50); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$NSDB_PORT" "www.$ZONE" A 2>/dev/null |
            grep -q '^192\.0\.2\.10$' && return 0
        sleep 0.1
    done
    return 1
}

start_nsd
start_nsd_b || die "the second NSD did not start ($(snip "$T/nsdb/nsd.out"))"
echo "$NSDB_PID" >"$T/nsdb.pid"
make_certs
LIVE=$T/live
mkdir -p "$LIVE"
SERIAL=1000
issue_cert localhost "$SERIAL" ec "$T/cert$SERIAL" "DNS:localhost,DNS:*.dohgate.test,IP:127.0.0.1"
cp "$T/cert$SERIAL.pem" "$LIVE/server.pem"
cp "$T/cert$SERIAL.key" "$LIVE/server.key"
W=$T/www
mkdir -p "$W"
echo '<html>soak</html>' >"$W/index.html"
head -c 1048576 /dev/zero >"$W/big.bin"
CONF=$T/dohgate.conf
DG_PORT=$(free_port)
# write_conf N: the configuration file, whole (as a config manager replaces it); N changes a
# response header and the rate limit, so that every reload changes something
write_conf() {
    cat >"$CONF.new" <<EOF
listen 127.0.0.1:$DG_PORT
cert $LIVE/server.pem
key $LIVE/server.key
cert-check-interval 1
upstream 127.0.0.1:$NSD_PORT
upstream 127.0.0.1:$NSDB_PORT
upstream-timeout 500
site-root $W
workers 2
log-level info
send-timeout $SEND_TIMEOUT
handshake-timeout 3
request-timeout 5
rate-limit $((200 + $1 % 2 * 100))
connection-rate-limit 1000
header "X-Soak: $1"
EOF
    mv -f "$CONF.new" "$CONF"
}
write_conf 0
launch_dohgate -c "$CONF"
fds0=$(fd_count "$DG_PID")
rss0=$(rss_kib "$DG_PID")
figure "soak: $MINUTES min, warm-up $WARMUP s, dohgate pid $DG_PID, before any load: fds=$fds0 rss_kib=$rss0"
T_START=$(date +%s)
T_END=$((T_START + DURATION))

# legitimate load (addresses 127.0.0.9-11: no attacker uses them)
start_probe doh --source 127.0.0.9 --kinds get,post --interval 0.1 --timeout 5
start_probe upstream --source 127.0.0.10 --kinds get --name short.dohgate.test --expect 192.0.2.42 \
    --interval 0.5 --timeout 5
start_probe site --source 127.0.0.11 --kinds site --site-path / --interval 0.25 --timeout 5

# attacks in rotation; before each, a between-attacks sample "quiet EPOCH RSS FDS" to $T/quiet.
# Each is bounded in time by its own options (--hold, --max, -D; h2reset reads 2 s at most).
ATTACKS=(zerowindow bodyhold slowloris slowtls rapidreset idle flood)
attack() {
    local a=$1 p=$DG_PORT G=("${GUARD[@]}")
    case $a in
    zerowindow) "${G[@]}" python3 "$H2HOLD" --port "$p" --mode zero-window --path /big.bin --conns 20 --streams 100 \
        --sources 5 --source-prefix 127.0.20. --hold 10 --connect-timeout 5 ;;
    bodyhold) "${G[@]}" python3 "$H2HOLD" --port "$p" --mode body-hold --path /upload --conns 20 --streams 20 \
        --sources 5 --source-prefix 127.0.21. --body 262144 --withhold 1 --hold 10 --connect-timeout 5 ;;
    slowloris) "${G[@]}" python3 "$SRC_DIR/tests/tools/slowloris.py" --port "$p" --kind slowloris --count 50 \
        --sources 5 --every 1 --max 10 ;;
    slowtls) "${G[@]}" python3 "$SRC_DIR/tests/tools/slowloris.py" --port "$p" --kind slow-tls --count 50 \
        --sources 5 --every 1 --max 10 ;;
    rapidreset) for _ in 1 2 3 4; do "${G[@]}" "$TOOLS_DIR/h2reset" "$p" rapid 4000 "www.$ZONE"; done ;;
    idle) "${G[@]}" python3 "$H2CONNS" --port "$p" --count 300 --sources 30 --hold 10 --cafile "$CERTS/ca.pem" ;;
    flood) "${G[@]}" h2load -D 10 -c 4 -m 20 "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)" ;;
    esac
}
(
    i=0
    while [ ! -e "$T/soak.stop" ] && [ "$(date +%s)" -lt "$T_END" ]; do
        a=${ATTACKS[$((i % ${#ATTACKS[@]}))]}
        echo "quiet $(date +%s) $(rss_kib "$DG_PID") $(fd_count "$DG_PID") $a" >>"$T/quiet"
        echo "$a" >"$T/attack.now"
        attack "$a" >>"$T/attack.$a.out" 2>&1
        echo "$a rc=$? at $(date +%s)" >>"$T/attacks.done"
        echo "-" >"$T/attack.now"
        sleep 5
        i=$((i + 1))
    done
) &
ROT=$!
track "$ROT"

# reloads: every 15 s, a configuration reload or a certificate reload in turn
(
    k=0
    while [ ! -e "$T/soak.stop" ] && [ "$(date +%s)" -lt $((T_END - 10)) ]; do
        sleep 15
        k=$((k + 1))
        if [ $((k % 2)) = 1 ]; then
            write_conf "$k"
            kill -HUP "$DG_PID" && echo "hup $(date +%s)" >>"$T/reloads"
        else
            s=$((SERIAL + k))
            issue_cert localhost "$s" ec "$T/cert$s" "DNS:localhost,DNS:*.dohgate.test,IP:127.0.0.1" >/dev/null
            # key first, then the certificate (each replaced whole): dohgate loads the pair when
            # they match, and keeps the old one in between
            cp "$T/cert$s.key" "$LIVE/server.key.new" && mv -f "$LIVE/server.key.new" "$LIVE/server.key"
            cp "$T/cert$s.pem" "$LIVE/server.pem.new" && mv -f "$LIVE/server.pem.new" "$LIVE/server.pem"
            got=$(wait_serial "$(printf '%04X' "$s")" 10) # as openssl prints it: 03EA
            echo "cert $(date +%s) want=$(printf '%04X' "$s") got=$got" >>"$T/reloads"
        fi
    done
) &
REL=$!
track "$REL"

# the flapping upstream: NSD b down 20 s, up 20 s
(
    while [ ! -e "$T/soak.stop" ] && [ "$(date +%s)" -lt $((T_END - 25)) ]; do
        sleep 20
        kill -TERM "$(cat "$T/nsdb.pid")" 2>/dev/null
        wait_gone "$(cat "$T/nsdb.pid")" 5
        echo "down $(date +%s)" >>"$T/flaps"
        sleep 20
        start_nsd_b && echo "$NSDB_PID" >"$T/nsdb.pid"
        echo "up $(date +%s)" >>"$T/flaps"
    done
) &
FLAP=$!
track "$FLAP"

# samples every 10 s: "T_S RSS_KIB FDS LEGIT_N LEGIT_FAIL ATTACK" (legit counts in the last 10 s)
legit_counts() { cat "$T"/doh.log "$T"/upstream.log "$T"/site.log 2>/dev/null | awk '{n++} $3 != "ok" {f++} END {print n + 0, f + 0}'; }
printf '%6s %9s %6s %7s %6s  %s\n' t_s rss_kib fds legit failed attack >"$T/table"
prev_n=0
prev_f=0
while [ "$(date +%s)" -lt "$T_END" ]; do
    sleep 10
    proc_alive "$DG_PID" || break
    read -r n f <<<"$(legit_counts)"
    printf '%6d %9d %6d %7d %6d  %s\n' $(($(date +%s) - T_START)) "$(rss_kib "$DG_PID")" \
        "$(fd_count "$DG_PID")" $((n - prev_n)) $((f - prev_f)) "$(cat "$T/attack.now" 2>/dev/null)" |
        tee -a "$T/table"
    prev_n=$n
    prev_f=$f
done
touch "$T/soak.stop"
for p in "$ROT" "$REL" "$FLAP"; do wait "$p" 2>/dev/null; untrack "$p"; done
for p in doh upstream site; do stop_probe "$p"; done
kill -TERM "$(cat "$T/nsdb.pid")" 2>/dev/null
sleep $((SEND_TIMEOUT + 2))
fds_end=$(fd_count "$DG_PID")
rss_end=$(rss_kib "$DG_PID")

echo
cat "$T/table"
echo
for p in doh upstream site; do
    figure "legit $p: $(tail -n 1 "$T/$p.out")"
done
figure "attacks run: $(awk '{print $1}' "$T/attacks.done" 2>/dev/null | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
hups=$(grep -c '^hup' "$T/reloads" 2>/dev/null)
reloaded=$(grep -c 'configuration reloaded' "$DG_LOG")
certs=$(grep -c '^cert' "$T/reloads" 2>/dev/null)
certs_ok=$(awk '$1 == "cert" && substr($3, 6) == substr($4, 5) {n++} END {print n + 0}' "$T/reloads" 2>/dev/null)
flaps=$(grep -c '^down' "$T/flaps" 2>/dev/null)
figure "reloads: SIGHUP=${hups:-0} logged=$reloaded certificates=${certs:-0} served=$certs_ok upstream_flaps=${flaps:-0}"
# between-attack samples after warm-up: the lowest RSS and descriptors of the first and of the
# last third of them
awk -v w=$((T_START + WARMUP)) '$1 == "quiet" && $2 >= w' "$T/quiet" >"$T/quiet.after"
nq=$(wc -l <"$T/quiet.after")
third() { # third first|last COLUMN: the lowest value of that third
    awk -v n="$nq" -v which="$1" -v c="$2" 'BEGIN { k = int(n / 3) }
        (which == "first" && NR <= k) || (which == "last" && NR > n - k) { if (m == "" || $c < m) m = $c }
        END { print m }' "$T/quiet.after"
}
rss_q1=$(third first 3)
rss_q2=$(third last 3)
fds_q1=$(third first 4)
fds_q2=$(third last 4)
figure "between attacks after warm-up: $nq samples, lowest rss_kib first third=${rss_q1:-?} last third=${rss_q2:-?}, lowest fds first third=${fds_q1:-?} last third=${fds_q2:-?}; after the run: fds=$fds_end rss_kib=$rss_end (before any load: fds=$fds0 rss_kib=$rss0)"

read -r n f <<<"$(legit_counts)"
assert_range 100 100000000 "$n" "legitimate requests were made ($n)"
assert_eq 0 "$f" "no legitimate request failed ($f of $n; $(grep -h FAIL "$T"/doh.log "$T"/upstream.log "$T"/site.log 2>/dev/null | awk '{$1=""; print}' | sort | uniq -c | sort -rn | head -3 | tr '\n' ';'))"
assert_range 3 1000000 "$nq" "at least three between-attack samples after warm-up"
if [ -n "$rss_q1" ] && [ -n "$rss_q2" ]; then
    tol=$((rss_q1 / 10 > 4096 ? rss_q1 / 10 : 4096))
    assert_range 0 $((rss_q1 + tol)) "$rss_q2" "RSS flat after warm-up (lowest between attacks, last third vs first): $rss_q2 KiB <= $rss_q1 + $tol KiB"
    assert_range 0 $((fds_q1 + 8)) "$fds_q2" "descriptors not growing between attacks (lowest, last third vs first): $fds_q2 <= $fds_q1 + 8"
fi
assert_range 0 $((fds0 + 8)) "$fds_end" "descriptors back once everything stopped: $fds_end <= $fds0 + 8"
assert_range 1 1000000 "${hups:-0}" "configuration reloads were sent"
assert_eq "${hups:-0}" "$reloaded" "every SIGHUP reloaded the configuration"
assert_range 1 1000000 "${certs:-0}" "certificates were replaced"
assert_eq "${certs:-0}" "$certs_ok" "every new certificate was served"
assert_range 1 1000000 "${flaps:-0}" "the second upstream flapped"
finish
