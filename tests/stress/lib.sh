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
