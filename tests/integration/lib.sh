# Shared harness of dohgate's integration tests; each tests/integration/t_<name>.sh sources it.
#
# Environment (set by ctest, see tests/CMakeLists.txt):
#   DOHGATE    the dohgate binary            TOOLS_DIR  build dir of tests/tools/*.c (h2reset)
#   SRC_DIR    the repository root
# Optional:
#   KEEP_TMP=1           keep the temp dir (its path is printed) for post-mortems
#   DG_LOG_LEVEL         dohgate's --log-level (default info)
#   DG_START_TIMEOUT     seconds to wait for dohgate to answer (default 10; raise it under valgrind)
#   DG_STOP_TIMEOUT      seconds dohgate has to exit after SIGTERM (default 10)
#   DG_VALGRIND=1        run dohgate under valgrind memcheck: any error or definite leak makes
#                        it exit 99 (so "post: exits 0" fails) and is shown from its log
#
# A test is pre / test / post (like unbound's .tdir):
#   need_tools nsd curl ...     fail when a tool is missing (an install bug: contrib/deps.sh --test)
#   start_nsd; start_stub       the upstreams (NSD with zone/test.zone, the fault-injecting stub)
#   start_dohgate [FLAGS...]    dohgate on a free port with the test certificate; waits until it
#                               answers a DoH query (adds --upstream NSD when FLAGS name none)
#   ... checks with assert_* ...
#   finish                      post: SIGTERM dohgate, it must exit 0 in time, with no sanitizer
#                               report in its log; prints "N passed, N failed"; exits 1 on failure
# Everything the test starts is killed, and the temp dir removed, on exit.

set -u

TESTNAME=$(basename "$0" .sh)
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=${SRC_DIR:-$(cd "$LIB_DIR/../.." && pwd)}
DOHGATE=${DOHGATE:-$SRC_DIR/build/dohgate}
TOOLS_DIR=${TOOLS_DIR:-$(dirname "$DOHGATE")/tests}
STUB_PY=$SRC_DIR/tests/tools/stubdns.py
DNSMSG_PY=$SRC_DIR/tests/tools/dnsmsg.py
ZONE=dohgate.test
STUBZONE=stub.test

PASS=0
FAIL=0
PIDS=()
DG_PID=
DG_PORT=
NSD_PORT=
STUB_PORT=
FINISHED=0

T=$(mktemp -d "${TMPDIR:-/tmp}/dohgate-$TESTNAME.XXXXXX") || { echo "mktemp failed"; exit 1; }
DG_LOG=$T/dohgate.log

# ---------------------------------------------------------------------------------------------
# processes

# proc_alive PID: the process exists and is not a zombie (kill -0 succeeds on zombies)
proc_alive() {
    local st
    st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# wait_gone PID SECONDS: 0 when the process is gone (or a zombie) within the time
wait_gone() {
    local pid=$1 n=$(($2 * 10))
    while [ "$n" -gt 0 ]; do
        proc_alive "$pid" || return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

# GUARD: a command prefix for long-running helpers so that they get SIGTERM if this script dies
# without running its EXIT trap (SIGKILL from a harness); empty when setpriv cannot do it
GUARD=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then GUARD=(setpriv --pdeathsig TERM); fi

# track PID: kill PID at exit (untrack PID when the test reaped it itself)
track() { PIDS+=("$1"); }

untrack() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        if ! wait_gone "$p" 3; then
            echo "cleanup: pid $p ignored SIGTERM, sending SIGKILL"
            kill -KILL "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "temp dir kept: $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# results

ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
ko() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

# assert_eq EXPECTED GOT WHAT
assert_eq() {
    if [ "$2" = "$1" ]; then ok "$3"; else ko "$3: expected '$1', got '$2'"; fi
}
# assert_ne UNEXPECTED GOT WHAT
assert_ne() {
    if [ "$2" != "$1" ]; then ok "$3"; else ko "$3: expected anything but '$1', got it"; fi
}
# assert_match ERE GOT WHAT   (the whole of GOT is searched, multi-line allowed)
assert_match() {
    if [[ $2 =~ $1 ]]; then ok "$3"; else ko "$3: expected a match of /$1/, got '$(printf '%s' "$2" | head -c 600)'"; fi
}
assert_nomatch() {
    if [[ $2 =~ $1 ]]; then ko "$3: expected no match of /$1/, got '$(printf '%s' "$2" | head -c 600)'"; else ok "$3"; fi
}
# assert_range LO HI GOT WHAT   (integers, inclusive)
assert_range() {
    if [[ $3 =~ ^-?[0-9]+$ ]] && [ "$3" -ge "$1" ] && [ "$3" -le "$2" ]; then
        ok "$4"
    else
        ko "$4: expected a number in [$1, $2], got '$3'"
    fi
}
# assert_file_match FILE ERE WHAT   (grep -E on a file)
assert_file_match() {
    if grep -Eq -- "$2" "$1" 2>/dev/null; then ok "$3"; else
        ko "$3: expected a line matching /$2/ in $(basename "$1"), got:"
        head -c 1500 "$1" 2>/dev/null | sed 's/^/       | /'
    fi
}
assert_file_nomatch() {
    if grep -Eq -- "$2" "$1" 2>/dev/null; then
        ko "$3: expected no line matching /$2/ in $(basename "$1"), got:"
        grep -E -- "$2" "$1" | head -20 | sed 's/^/       | /'
    else ok "$3"; fi
}

# die WHY: a pre step failed; the test cannot go on
die() {
    ko "$*"
    finish
}

# skip WHY: exit 77 (ctest: skipped). Only for a condition that is legitimate on some machine
# (t_privs run by a user without root); contrib/test.sh fails on any other skipped test.
skip() {
    echo "SKIP: $*"
    FINISHED=1
    exit 77
}

need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 ||
            die "$t is not installed (needed by $TESTNAME; contrib/deps.sh --test installs it)"
    done
}

# finish: post step, summary line, exit status
finish() {
    [ "$FINISHED" = 1 ] && exit 1
    FINISHED=1
    if [ -n "$DG_PID" ]; then stop_dohgate; fi
    if [ "$FAIL" -gt 0 ] && [ -s "$DG_LOG" ]; then
        echo "---- last lines of dohgate's log ($DG_LOG) ----"
        tail -n 60 "$DG_LOG"
        echo "----"
    fi
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
    exit $?
}

# ---------------------------------------------------------------------------------------------
# set-up helpers

# free_port: a port free on 127.0.0.1 for both TCP and UDP (bound to port 0, then released)
free_port() {
    python3 - <<'EOF'
import socket
for _ in range(50):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close(); u.close()
        continue
    t.close(); u.close()
    print(port)
    break
EOF
}

# start_backend PORT [LOG]: tests/tools/backend.py on 127.0.0.1:PORT in the background (request
# log in LOG if given; BACKEND_RCVBUF from the caller's environment), tracked, its pid in BE_PID;
# returns once /echo answers 200 (or after 5 s: the test's own checks then fail).
start_backend() {
    "${GUARD[@]}" python3 "$SRC_DIR/tests/tools/backend.py" "$1" ${2:+"$2"} >>"$T/backend.out" 2>&1 </dev/null &
    BE_PID=$!
    track "$BE_PID"
    local i
    for i in $(seq 1 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/echo")" = 200 ] && break
        sleep 0.1
    done
}

# metric_of LINE-PREFIX: the value of the first line of dohgate's /metrics (on $M_PORT) that
# starts with LINE-PREFIX (empty when there is none)
metric_of() {
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk -v p="$1" 'index($0, p) == 1 { print $NF; exit }'
}

# dnsmsg ARGS...: tests/tools/dnsmsg.py (build queries, parse answers)
dnsmsg() { python3 "$DNSMSG_PY" "$@"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds (0) or the time is up (1)
wait_for() {
    local n=$(($1 * 5))
    shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        sleep 0.2
        n=$((n - 1))
    done
    return 1
}
# json NAME [TYPE] [PATH]: "Status data,data" of dohgate's JSON API answer (PATH: /resolve)
json() {
    curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" \
        "https://127.0.0.1:$DG_PORT${3:-/resolve}?name=$1&type=${2:-A}" | python3 -c '
import json, sys
try:
    j = json.load(sys.stdin)
except ValueError:
    print("not-json"); sys.exit(0)
print(j.get("Status"), ",".join(str(a.get("data")) for a in j.get("Answer", [])))'
}

# make_certs: $T/certs/{ca.pem,ca.key,server.pem,server.key}, ECDSA P-256, for localhost,
# *.dohgate.test, 127.0.0.1 and ::1
make_certs() {
    CERTS=$T/certs
    mkdir -p "$CERTS"
    (
        cd "$CERTS" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=dohgate test CA" -keyout ca.key -out ca.pem 2>openssl.err &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr 2>>openssl.err &&
        printf 'subjectAltName=DNS:localhost,DNS:*.dohgate.test,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile ext.cnf -out server.pem 2>>openssl.err
    ) || { cat "$CERTS/openssl.err"; die "could not make the test certificates"; }
}

# issue_cert NAME SERIAL ec|rsa OUT SANS: OUT.key, OUT.pem (signed by the test CA, made by
# make_certs) and OUT.full.pem (leaf + CA, like certbot's fullchain.pem)
issue_cert() {
    local name=$1 serial=$2 kt=$3 out=$4 sans=$5 key=$4.key
    [ -n "${CERTS:-}" ] || make_certs
    if [ "$kt" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>>"$T/issue.err"
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>>"$T/issue.err"
    fi
    openssl req -new -key "$key" -subj "/CN=$name" -out "$out.csr" 2>>"$T/issue.err" &&
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
            "$sans" >"$out.ext" &&
        openssl x509 -req -in "$out.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
            -set_serial "$serial" -days 30 -extfile "$out.ext" -out "$out.pem" 2>>"$T/issue.err" ||
        die "issue $name: $(cat "$T/issue.err")"
    # certbot's fullchain.pem: leaf then CA (the chain must load too)
    cat "$out.pem" "$CERTS/ca.pem" >"$out.full.pem"
}

# served_serial [SNI [s_client args...]]: the serial of the certificate dohgate presents now
served_serial() {
    local sni=${1:-doh.dohgate.test}
    shift 2>/dev/null
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$sni" "$@" </dev/null 2>/dev/null |
        openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}
# wait_serial WANT SECONDS: until the presented serial is WANT; prints the last one seen
wait_serial() {
    local got n=$(($2 * 5))
    while [ "$n" -gt 0 ]; do
        got=$(served_serial)
        [ "$got" = "$1" ] && break
        sleep 0.2
        n=$((n - 1))
    done
    echo "$got"
}

# start_nsd: NSD, authoritative for dohgate.test (zone/test.zone) on 127.0.0.1:$NSD_PORT
start_nsd() {
    local d=$T/nsd i
    mkdir -p "$d"
    cp "$LIB_DIR/zone/test.zone" "$d/test.zone"
    NSD_PORT=$(free_port)
    cat >"$d/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    port: $NSD_PORT
    server-count: 1
    zonesdir: "$d"
    database: ""
    pidfile: "$d/nsd.pid"
    username: ""
    chroot: ""
    zonelistfile: "$d/zone.list"
    xfrdfile: "$d/xfrd.state"
    xfrdir: "$d"
    logfile: "$d/nsd.log"
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$d/test.zone"
EOF
    if command -v nsd-checkzone >/dev/null 2>&1; then
        nsd-checkzone "$ZONE" "$d/test.zone" >"$d/checkzone.out" 2>&1 ||
            { cat "$d/checkzone.out"; die "zone/test.zone does not load"; }
    fi
    "${GUARD[@]}" nsd -d -c "$d/nsd.conf" >"$d/nsd.out" 2>&1 </dev/null &
    NSD_PID=$!
    track "$NSD_PID"
    for i in $(seq 1 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$NSD_PORT" "www.$ZONE" A 2>/dev/null | grep -q '^192\.0\.2\.10$'; then
            return 0
        fi
        proc_alive "$NSD_PID" || break
        sleep 0.1
    done
    cat "$d/nsd.out" "$d/nsd.log" 2>/dev/null
    die "NSD did not answer on 127.0.0.1:$NSD_PORT"
}

# start_nsd_zone VAR ZONE FILE [ZONE FILE...]: another NSD on a port of its own, authoritative
# for each ZONE from tests/integration/zone/FILE (forward-zone tests: one server per zone set).
# Its port goes in $VAR, its pid in ${VAR}_PID, its files in $T/nsd-VAR; returns once it answers
# the first ZONE's SOA.
start_nsd_zone() {
    local var=$1 d=$T/nsd-$1 port pid i first
    shift
    first=$1
    mkdir -p "$d"
    port=$(free_port)
    printf '%s\n' "server:" "    ip-address: 127.0.0.1@$port" "    port: $port" \
        "    server-count: 1" "    zonesdir: \"$d\"" "    database: \"\"" \
        "    pidfile: \"$d/nsd.pid\"" "    username: \"\"" "    chroot: \"\"" \
        "    zonelistfile: \"$d/zone.list\"" "    xfrdfile: \"$d/xfrd.state\"" "    xfrdir: \"$d\"" \
        "    logfile: \"$d/nsd.log\"" "    verbosity: 1" "    hide-version: yes" \
        "    rrl-ratelimit: 0" "    rrl-whitelist-ratelimit: 0" \
        "remote-control:" "    control-enable: no" >"$d/nsd.conf"
    while [ $# -ge 2 ]; do
        cp "$LIB_DIR/zone/$2" "$d/$2"
        printf 'zone:\n    name: "%s"\n    zonefile: "%s/%s"\n' "$1" "$d" "$2" >>"$d/nsd.conf"
        if command -v nsd-checkzone >/dev/null 2>&1; then
            nsd-checkzone "$1" "$d/$2" >>"$d/checkzone.out" 2>&1 ||
                { cat "$d/checkzone.out"; die "zone/$2 does not load as $1"; }
        fi
        shift 2
    done
    "${GUARD[@]}" nsd -d -c "$d/nsd.conf" >"$d/nsd.out" 2>&1 </dev/null &
    pid=$!
    track "$pid"
    printf -v "$var" '%s' "$port"
    printf -v "${var}_PID" '%s' "$pid"
    for i in $(seq 1 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "$first" SOA 2>/dev/null | grep -q .; then
            return 0
        fi
        proc_alive "$pid" || break
        sleep 0.1
    done
    cat "$d/nsd.out" "$d/nsd.log" 2>/dev/null
    die "NSD for $first did not answer on 127.0.0.1:$port"
}

# start_stub: tests/tools/stubdns.py on 127.0.0.1:$STUB_PORT, query log in $STUB_LOG
start_stub() {
    local i
    STUB_PORT=$(free_port)
    STUB_LOG=$T/stub.log
    : >"$STUB_LOG"
    "${GUARD[@]}" python3 "$STUB_PY" "$STUB_PORT" "$STUB_LOG" >"$T/stub.out" 2>&1 </dev/null &
    STUB_PID=$!
    track "$STUB_PID"
    for i in $(seq 1 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$STUB_PORT" "ready.$STUBZONE" A 2>/dev/null | grep -q '^192\.0\.2\.1$'; then
            : >"$STUB_LOG"
            return 0
        fi
        proc_alive "$STUB_PID" || break
        sleep 0.1
    done
    cat "$T/stub.out"
    die "the DNS stub did not answer on 127.0.0.1:$STUB_PORT"
}

# stub_count TRANSPORT NAME: how many queries for NAME (lower case, trailing dot) reached the stub
stub_count() { grep -cxF "$1 $2" "$STUB_LOG"; }

# dohgate_url [PATH]
dohgate_url() { echo "https://127.0.0.1:$DG_PORT${1:-/dns-query}"; }

# start_dohgate [FLAGS...]: dohgate --listen 127.0.0.1:$DG_PORT --cert --key --log-level FLAGS,
# plus --upstream 127.0.0.1:$NSD_PORT unless FLAGS have an --upstream. DG_NO_CERT=1 leaves out
# --cert/--key (dohgate makes an ephemeral self-signed certificate). Waits until a GET on
# $DG_READY_PATH (default /dns-query) for www.dohgate.test answers 200.
start_dohgate() {
    local args=() a have_up=0
    for a in "$@"; do [ "$a" = "--upstream" ] && have_up=1; done
    DG_PORT=$(free_port)
    [ -n "${CERTS:-}" ] || make_certs
    args=(--listen "127.0.0.1:$DG_PORT" --log-level "${DG_LOG_LEVEL:-info}")
    [ "${DG_NO_CERT:-0}" = 1 ] || args+=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
    if [ "$have_up" = 0 ]; then
        [ -n "$NSD_PORT" ] || die "start_dohgate: no --upstream given and NSD not started"
        args+=(--upstream "127.0.0.1:$NSD_PORT")
    fi
    launch_dohgate "${args[@]}" "$@"
}

# launch_dohgate ARGS...: run "$DOHGATE ARGS" as given (the caller sets DG_PORT to the port it
# listens on) and wait until it answers. SIGINT/SIGQUIT are reset to their defaults (bash starts
# background jobs with them ignored), so that the SIGINT test means something.
launch_dohgate() {
    [ -x "$DOHGATE" ] || die "DOHGATE=$DOHGATE is not an executable (build it first)"
    [ -n "${CERTS:-}" ] || make_certs
    echo "# $DOHGATE $*" >>"$DG_LOG"
    local vg=()
    if [ "${DG_VALGRIND:-0}" = 1 ]; then
        # --freelist-vol 2 MB (default 20 MB): freed blocks held back for use-after-free
        # checks would count in the RSS bounds of the memory tests (t_bodies, t_upload); ASan
        # (the other sanitizer run) keeps catching those with its own quarantine
        vg=(valgrind --quiet --vgdb=no --error-exitcode=99 --leak-check=full --show-leak-kinds=definite
            --errors-for-leak-kinds=definite --freelist-vol=2000000 --log-file="$T/valgrind.%p.log")
    fi
    if env --default-signal=INT true 2>/dev/null; then
        "${GUARD[@]}" env --default-signal=INT,QUIT "${vg[@]}" "$DOHGATE" "$@" >>"$DG_LOG" 2>&1 </dev/null &
    else
        "${GUARD[@]}" "${vg[@]}" "$DOHGATE" "$@" >>"$DG_LOG" 2>&1 </dev/null &
    fi
    DG_PID=$!
    track "$DG_PID"
    wait_dohgate
}

# wait_dohgate: until a DoH GET answers 200 (timeout $DG_START_TIMEOUT s)
wait_dohgate() {
    local q code n=$((${DG_START_TIMEOUT:-10} * 5))
    q=$(dnsmsg query "www.$ZONE" A --b64)
    while [ "$n" -gt 0 ]; do
        if ! proc_alive "$DG_PID"; then
            wait "$DG_PID"
            local rc=$?
            untrack "$DG_PID"
            DG_PID=
            die "dohgate exited during start-up with status $rc"
        fi
        # shellcheck disable=SC2046
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --http2 $(dg_trust) \
            "$(dohgate_url "${DG_READY_PATH:-/dns-query}")?dns=$q" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.2
        n=$((n - 1))
    done
    die "dohgate did not answer a DoH query on port $DG_PORT within ${DG_START_TIMEOUT:-10} s (last HTTP code '$code')"
}

# dg_trust: the curl option that makes dohgate's certificate trusted
dg_trust() { if [ "${DG_NO_CERT:-0}" = 1 ]; then echo "-k"; else echo "--cacert $CERTS/ca.pem"; fi; }

# shellcheck disable=SC2120
# stop_dohgate [SIGNAL]: the post step. SIGTERM (or SIGNAL); dohgate must exit 0 within
# $DG_STOP_TIMEOUT s, and its log must hold no sanitizer report (under ASan, LeakSanitizer turns
# a leak into exit status 23). Same as signal_dohgate + reap_dohgate.
stop_dohgate() {
    local sig=${1:-TERM}
    [ -n "$DG_PID" ] || return 0
    signal_dohgate "$sig" && reap_dohgate "$sig"
}

# signal_dohgate SIGNAL: send it (1 when dohgate has already died: that is reported as a failure)
signal_dohgate() {
    local rc
    if ! proc_alive "$DG_PID"; then
        wait "$DG_PID"; rc=$?
        untrack "$DG_PID"
        DG_PID=
        ko "dohgate had died before the end of the test (exit status $rc; 139 = SIGSEGV, 134 = SIGABRT)"
        check_sanitizer_log
        return 1
    fi
    kill -"$1" "$DG_PID"
}

# reap_dohgate [SIGNAL-NAME]: wait up to $DG_STOP_TIMEOUT s for the signalled dohgate; exit 0
reap_dohgate() {
    local pid=$DG_PID rc sig=${1:-TERM}
    DG_PID=
    if wait_gone "$pid" "${DG_STOP_TIMEOUT:-10}"; then
        wait "$pid"; rc=$?
        untrack "$pid"
        assert_eq 0 "$rc" "post: dohgate exits 0 after SIG$sig"
    else
        ko "post: dohgate did not exit within ${DG_STOP_TIMEOUT:-10} s of SIG$sig (sending SIGKILL)"
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        untrack "$pid"
    fi
    check_sanitizer_log
}

check_sanitizer_log() {
    assert_file_nomatch "$DG_LOG" 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|ThreadSanitizer|AddressSanitizer:DEADLYSIGNAL' \
        "post: no sanitizer report in dohgate's log"
    if [ "${DG_VALGRIND:-0}" = 1 ]; then
        local f bad=0
        for f in "$T"/valgrind.*.log; do
            [ -s "$f" ] || continue
            # valgrind 3.19 does not know openat2 (dohgate then walks the path itself): that
            # notice is about valgrind, not about dohgate's memory
            grep -v -e 'WARNING: unhandled amd64-linux syscall: 437' -e 'write your own handler' \
                -e 'README_MISSING_SYSCALL_OR_IOCTL' -e 'Nevertheless we consider this a bug' \
                -e 'valgrind.org/support/bug_reports' "$f" >"$f.errors"
            : >"$f" # reported once
            [ -s "$f.errors" ] || continue
            bad=1
            sed 's/^/       | /' "$f.errors" | head -n 40
        done
        assert_eq 0 "$bad" "post: valgrind memcheck found nothing"
    fi
}

# ---------------------------------------------------------------------------------------------
# DoH client helpers. Each leaves the response in $T/resp.hdr (headers, CR stripped),
# $T/resp.bin (body) and $T/resp.txt (`dnsmsg show` of the body, empty if it does not parse),
# and sets HTTP_CODE and CURL_RC.

# dcurl CURL-ARGS...: curl over HTTP/2 with the test CA
dcurl() {
    rm -f "$T/resp.hdr" "$T/resp.bin" "$T/resp.txt" "$T/resp.raw"
    # shellcheck disable=SC2046
    local w
    w=$(curl -sS --http2 --max-time "${CURL_MAX_TIME:-10}" $(dg_trust) \
        -D "$T/resp.raw" -o "$T/resp.bin" -w '%{http_code} %{time_total}' "$@" 2>"$T/curl.err")
    CURL_RC=$?
    HTTP_CODE=${w%% *}
    # CURL_MS: curl's own time for the request (connect, TLS, answer), without the python work
    # around it, so that timing checks measure the server and not a loaded machine's
    # interpreter start-ups
    CURL_MS=$(awk -v s="${w#* }" 'BEGIN { printf "%d", s * 1000 }')
    [ "$HTTP_CODE" = 000 ] && HTTP_CODE="000 (curl exit $CURL_RC: $(snip "$T/curl.err" 150))"
    tr -d '\r' <"$T/resp.raw" >"$T/resp.hdr" 2>/dev/null
    [ -f "$T/resp.bin" ] || : >"$T/resp.bin"
    if [ -s "$T/resp.bin" ]; then
        dnsmsg show "$T/resp.bin" >"$T/resp.txt" 2>/dev/null || : >"$T/resp.txt"
    else
        : >"$T/resp.txt"
    fi
}

# doh_get NAME [TYPE] [dnsmsg query options]: GET /dns-query?dns=...
doh_get() {
    local q
    q=$(dnsmsg query "$@" --b64)
    dcurl -H 'accept: application/dns-message' "$(dohgate_url)?dns=$q"
}

# doh_post NAME [TYPE] [dnsmsg query options]: POST /dns-query
doh_post() {
    dnsmsg query "$@" --out "$T/query.bin"
    dcurl -H 'content-type: application/dns-message' -H 'accept: application/dns-message' \
        --data-binary "@$T/query.bin" "$(dohgate_url)"
}

# hdr NAME: value of a response header of the last dcurl (lower-case name, first occurrence)
hdr() { grep -i "^$1:" "$T/resp.hdr" 2>/dev/null | head -1 | sed -e 's/^[^:]*:[[:space:]]*//' -e 's/[[:space:]]*$//'; }

# rcode: the DNS rcode of the last response ("" if the body is no DNS message)
rcode() { sed -n 's/^hdr .* rcode=\([A-Z0-9]*\) .*/\1/p' "$T/resp.txt"; }
# dns_id: the DNS ID of the last response
dns_id() { sed -n 's/^hdr id=\([0-9]*\) .*/\1/p' "$T/resp.txt"; }
# answers: the answer section lines "NAME TTL TYPE RDATA"
answers() { sed -n 's/^an //p' "$T/resp.txt"; }
# max_age: the max-age of the last response's cache-control
max_age() { hdr cache-control | sed -n 's/.*max-age=\([0-9]*\).*/\1/p'; }
# body_size
body_size() { wc -c <"$T/resp.bin" | tr -d ' '; }

# snip FILE [N]: the first N (default 200) bytes of a file, printable characters only
snip() { head -c "${2:-200}" "$1" 2>/dev/null | tr -c '[:print:]\n' '.' | tr '\n' ' '; }

# now_ms
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---------------------------------------------------------------------------------------------
# encrypted upstreams (issue 15): certificates, a real DoT server (Unbound), the fault stub

# make_upstream_certs: the certificates of the DoT/DoH upstream tests, in $UPCERTS (=$T/upcerts),
# all ECDSA P-256 and, but for unknownca, signed by the test CA of make_certs ($CERTS/ca.pem):
#   good.{pem,key}        dot.dohgate.test + IP SAN 127.0.0.1, valid
#   wrongname.{pem,key}   other.example only (no IP SAN either)
#   expired.{pem,key}     as good, but notBefore 3 days and notAfter 1 day ago (`openssl ca`
#                         -startdate/-enddate: openssl 3.0's x509 -req cannot backdate)
#   unknownca.{pem,key}   as good, signed by a second CA ($UPCERTS/ca2.pem) that nobody trusts
# UPCERT_PIN: base64 SHA-256 of good.pem's SPKI (pin-sha256=); UPCERT_PIN_OTHER: the same of
# unknownca.pem's key (a well-formed pin that does not match good.pem)
make_upstream_certs() {
    [ -n "${CERTS:-}" ] || make_certs
    UPCERTS=$T/upcerts
    mkdir -p "$UPCERTS/db"
    (
        cd "$UPCERTS" || exit 1
        : >db/index.txt
        echo 1000 >db/serial
        printf '%s\n' '[ca]' 'default_ca = tca' '[tca]' 'database = db/index.txt' \
            'new_certs_dir = db' 'serial = db/serial' 'default_md = sha256' 'policy = pany' \
            'unique_subject = no' '[pany]' 'commonName = supplied' >ca.cnf
        printf '%s\n' 'subjectAltName = DNS:dot.dohgate.test,IP:127.0.0.1' \
            'extendedKeyUsage = serverAuth' 'basicConstraints = CA:FALSE' >good.ext
        printf '%s\n' 'subjectAltName = DNS:other.example' 'extendedKeyUsage = serverAuth' \
            'basicConstraints = CA:FALSE' >wrongname.ext
        cp good.ext expired.ext && cp good.ext unknownca.ext
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=unknown test CA" -keyout ca2.key -out ca2.pem 2>>openssl.err || exit 1
        for c in good wrongname expired unknownca; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=$c.dohgate.test" -keyout $c.key -out $c.csr 2>>openssl.err || exit 1
        done
        for c in good wrongname; do
            openssl x509 -req -in $c.csr -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -CAcreateserial \
                -days 30 -extfile $c.ext -out $c.pem 2>>openssl.err || exit 1
        done
        openssl x509 -req -in unknownca.csr -CA ca2.pem -CAkey ca2.key -CAcreateserial -days 30 \
            -extfile unknownca.ext -out unknownca.pem 2>>openssl.err || exit 1
        openssl ca -batch -config ca.cnf -cert "$CERTS/ca.pem" -keyfile "$CERTS/ca.key" \
            -in expired.csr -out expired.pem -notext -extfile expired.ext \
            -startdate "$(date -u -d '-3 days' +%Y%m%d%H%M%SZ)" \
            -enddate "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" >>openssl.err 2>&1 || exit 1
    ) || { cat "$UPCERTS/openssl.err"; die "could not make the upstream test certificates"; }
    UPCERT_PIN=$(spki_pin "$UPCERTS/good.pem")
    UPCERT_PIN_OTHER=$(spki_pin "$UPCERTS/unknownca.pem")
    [ ${#UPCERT_PIN} = 44 ] && [ ${#UPCERT_PIN_OTHER} = 44 ] || die "could not compute the SPKI pins"
}

# spki_pin CERT: base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (RFC 7469)
spki_pin() {
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64
}

# start_unbound_dot: Unbound on 127.0.0.1:$UB_PORT serving DNS over TLS only (tls-port) with
# $UPCERTS/good.pem (dot.dohgate.test, IP 127.0.0.1), resolving dohgate.test through a stub-zone
# to the test NSD (start_nsd first). No root key, no validator, no remote control, no chroot;
# it never leaves loopback for the test zone. Log in $T/unbound/unbound.log.
start_unbound_dot() {
    local d=$T/unbound i
    [ -n "$NSD_PORT" ] || die "start_unbound_dot: start_nsd first"
    [ -n "${UPCERTS:-}" ] || make_upstream_certs
    mkdir -p "$d"
    UB_PORT=$(free_port)
    UB_HTTPS_PORT=$(free_port) # Unbound's own DoH listener (built with libnghttp2 on Debian)
    cat >"$d/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$UB_PORT
    interface: 127.0.0.1@$UB_HTTPS_PORT
    tls-port: $UB_PORT
    https-port: $UB_HTTPS_PORT
    tls-service-key: "$UPCERTS/good.key"
    tls-service-pem: "$UPCERTS/good.pem"
    do-ip6: no
    # TLS only: with UDP on, the port would also answer clear-text UDP, and a forwarder that
    # sent clear text there would pass a DoT test (NSD is then reached over TCP)
    do-udp: no
    num-threads: 1
    so-reuseport: no
    incoming-num-tcp: 64
    chroot: ""
    username: ""
    directory: "$d"
    pidfile: "$d/unbound.pid"
    logfile: "$d/unbound.log"
    use-syslog: no
    verbosity: 1
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    access-control: 127.0.0.0/8 allow
    # Unbound answers the special-use "test." itself (RFC 6761) unless told not to
    local-zone: "test." nodefault
remote-control:
    control-enable: no
stub-zone:
    name: "$ZONE"
    stub-addr: 127.0.0.1@$NSD_PORT
EOF
    unbound-checkconf "$d/unbound.conf" >"$d/checkconf.out" 2>&1 ||
        { cat "$d/checkconf.out"; die "unbound.conf does not check"; }
    "${GUARD[@]}" unbound -d -c "$d/unbound.conf" >"$d/unbound.out" 2>&1 </dev/null &
    UB_PID=$!
    track "$UB_PID"
    for i in $(seq 1 100); do
        if kdig +short +time=1 +retry=0 +tls +tls-ca="$CERTS/ca.pem" +tls-hostname=dot.dohgate.test \
            @127.0.0.1 -p "$UB_PORT" "www.$ZONE" A 2>/dev/null | grep -q '^192\.0\.2\.10$'; then
            return 0
        fi
        proc_alive "$UB_PID" || break
        sleep 0.1
    done
    cat "$d/unbound.out" "$d/unbound.log" 2>/dev/null
    die "Unbound did not answer over TLS on 127.0.0.1:$UB_PORT"
}

# start_tlsstub dot|doh MODE [tlsstub.py args...]: tests/tools/tlsstub.py on 127.0.0.1:$TS_PORT
# with $UPCERTS/${TS_CERT:-good}.{pem,key}; its JSON log in $TS_LOG (a new file per call), its
# pid in $TS_PID; returns once it printed "ready"
start_tlsstub() {
    local proto=$1 mode=$2 i
    shift 2
    [ -n "${UPCERTS:-}" ] || make_upstream_certs
    TS_PORT=$(free_port)
    TS_N=$((${TS_N:-0} + 1))
    TS_LOG=$T/tlsstub.$TS_N.log
    : >"$TS_LOG"
    "${GUARD[@]}" python3 "$SRC_DIR/tests/tools/tlsstub.py" --port "$TS_PORT" --proto "$proto" \
        --mode "$mode" --cert "$UPCERTS/${TS_CERT:-good}.pem" --key "$UPCERTS/${TS_CERT:-good}.key" \
        --log "$TS_LOG" "$@" >"$T/tlsstub.$TS_N.out" 2>&1 </dev/null &
    TS_PID=$!
    track "$TS_PID"
    for i in $(seq 1 100); do
        grep -qx ready "$T/tlsstub.$TS_N.out" && return 0
        proc_alive "$TS_PID" || break
        sleep 0.1
    done
    cat "$T/tlsstub.$TS_N.out"
    die "tlsstub $proto $mode did not start"
}

# stop_tlsstub: stop the last stub started
stop_tlsstub() {
    [ -n "${TS_PID:-}" ] || return 0
    kill -TERM "$TS_PID" 2>/dev/null
    wait_gone "$TS_PID" 3 || kill -KILL "$TS_PID" 2>/dev/null
    wait "$TS_PID" 2>/dev/null
    untrack "$TS_PID"
    TS_PID=
}

# ts_stat KEY [LOG]: one figure of `tlsstub.py summary` of $TS_LOG (lists joined by commas)
ts_stat() {
    python3 "$SRC_DIR/tests/tools/tlsstub.py" summary "${2:-$TS_LOG}" | python3 -c '
import json, sys
v = json.load(sys.stdin)[sys.argv[1]]
print(",".join(str(x) for x in v) if isinstance(v, list) else v)' "$1"
}

# slowread --http2|--http1.1 ARGS...: tests/tools/slowread.py against dohgate ($DG_PORT, the test
# CA): one GET read slowly but steadily; prints its JSON line ("status", "bytes", "end", "seconds")
slowread() { python3 "$SRC_DIR/tests/tools/slowread.py" --port "$DG_PORT" --cafile "$CERTS/ca.pem" "$@"; }

# ---------------------------------------------------------------------------------------------
# DNS over TCP and over TLS (dns-listen, dot-listen)

# dnsconn ARGS...: tests/tools/dnsconn.py (a pipelining DNS-over-TCP/TLS client; see its --help)
dnsconn() { python3 "$SRC_DIR/tests/tools/dnsconn.py" "$@"; }

# ans_ids OUTPUT: the IDs of the "ans" lines of dnsconn's OUTPUT, in arrival order, space-separated
ans_ids() { printf '%s\n' "$1" | sed -n 's/^ans id=\([0-9]*\) .*/\1/p' | tr '\n' ' ' | sed 's/ $//'; }

# closed_ms OUTPUT: N of dnsconn's "closed ms=N" line (empty when the connection stayed open)
closed_ms() { printf '%s\n' "$1" | sed -n 's/^closed ms=\([0-9]*\)$/\1/p'; }

# ---------------------------------------------------------------------------------------------
# plain DNS over UDP (issue 16)

# udpdns ask|flood ARGS...: tests/tools/udpdns.py (raw datagrams: answers by ID, the sending
# address of each answer, a rate-limit flood with a second source interleaved)
udpdns() { python3 "$SRC_DIR/tests/tools/udpdns.py" "$@"; }

# dig_udp PORT [dig args...]: dig over UDP only (+ignore: a TC=1 answer is shown, not retried
# over TCP) at 127.0.0.1:PORT, one try of 2 s
dig_udp() {
    local port=$1
    shift
    dig @127.0.0.1 -p "$port" +notcp +ignore +tries=1 +time=2 "$@" 2>&1
}

# ---------------------------------------------------------------------------------------------
# ACME (issue 19): pebble, the test CA of Let's Encrypt (Debian's pebble 2.4), on loopback

# start_redis: a redis-server on 127.0.0.1:$REDIS_PORT (set by the caller), no persistence, its
# log in $T/redis.log; REDIS_PID tracked
start_redis() {
    redis-server --save '' --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 \
        --daemonize no >>"$T/redis.log" 2>&1 </dev/null &
    REDIS_PID=$!
    track "$REDIS_PID"
    wait_for 10 sh -c "redis-cli -p $REDIS_PORT ping 2>/dev/null | grep -q PONG" ||
        die "redis-server did not start on 127.0.0.1:$REDIS_PORT"
}

# start_pebble: pebble on 127.0.0.1:$PEBBLE_PORT (directory $PEBBLE_DIR), management interface
# on $PEBBLE_MGMT_PORT; it validates http-01 at port $PEBBLE_HTTP_PORT and tls-alpn-01 at
# $PEBBLE_TLS_PORT (set both first: the ports of the dohgate under test) of the names, which
# it resolves through the test NSD (start_nsd first: names with an A record 127.0.0.1). Its
# API runs on the test CA's certificate ($CERTS/server.pem: trust $CERTS/ca.pem to reach it).
# PEBBLE_VALIDITY (seconds, optional): lifetime of the certificates it issues. PEBBLE_EAB
# (optional): a JSON object kid -> base64url HMAC key; then external account binding is required.
# No validation delay (PEBBLE_VA_NOSLEEP), no reuse of valid authorizations (PEBBLE_AUTHZREUSE=0:
# every order goes through a challenge), no good nonce refused as badNonce unless
# PEBBLE_NONCEREJECT (percent; pebble's own default is 5) says so: a client that retries a
# badNonce once still fails an order now and then at 5 %, and a test counting orders would
# flake. Call it again after stop_pebble: a new process with a
# new root and intermediate (pebble makes them at start) and no accounts (they are in memory).
# Sets PEBBLE_PID, PEBBLE_ROOT (the root of this process: $T/pebble/root.N.pem) and
# PEBBLE_CHAIN (its intermediate then root); appends to $PEBBLE_LOG (one log for all runs, so
# that pebble_orders counts every order).
start_pebble() {
    local d=$T/pebble i
    mkdir -p "$d"
    [ -n "${NSD_PORT:-}" ] || die "start_pebble: start_nsd first"
    [ -n "${PEBBLE_HTTP_PORT:-}" ] && [ -n "${PEBBLE_TLS_PORT:-}" ] ||
        die "start_pebble: set PEBBLE_HTTP_PORT and PEBBLE_TLS_PORT"
    [ -n "${CERTS:-}" ] || make_certs
    if [ -z "${PEBBLE_PORT:-}" ]; then # the same ports for every run: dohgate keeps its directory URL
        PEBBLE_PORT=$(free_port)
        PEBBLE_MGMT_PORT=$(free_port)
    fi
    PEBBLE_DIR=https://127.0.0.1:$PEBBLE_PORT/dir
    PEBBLE_LOG=$d/pebble.log
    PEBBLE_RUN=$((${PEBBLE_RUN:-0} + 1))
    local extra=""
    [ -n "${PEBBLE_VALIDITY:-}" ] && extra+=", \"certificateValidityPeriod\": $PEBBLE_VALIDITY"
    if [ -n "${PEBBLE_EAB:-}" ]; then
        extra+=", \"externalAccountBindingRequired\": true, \"externalAccountMACKeys\": $PEBBLE_EAB"
    else
        extra+=", \"externalAccountBindingRequired\": false"
    fi
    cat >"$d/pebble.json" <<EOF2
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT",
 "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT_PORT",
 "certificate": "$CERTS/server.pem", "privateKey": "$CERTS/server.key",
 "httpPort": $PEBBLE_HTTP_PORT, "tlsPort": $PEBBLE_TLS_PORT, "ocspResponderURL": ""$extra}}
EOF2
    echo "# start_pebble run $PEBBLE_RUN" >>"$PEBBLE_LOG"
    PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=${PEBBLE_NONCEREJECT:-0} \
        "${GUARD[@]}" pebble -config "$d/pebble.json" \
        -dnsserver "127.0.0.1:$NSD_PORT" >>"$PEBBLE_LOG" 2>&1 </dev/null &
    PEBBLE_PID=$!
    track "$PEBBLE_PID"
    PEBBLE_ROOT=$d/root.$PEBBLE_RUN.pem
    PEBBLE_CHAIN=$d/chain.$PEBBLE_RUN.pem
    for i in $(seq 1 100); do
        if curl -sf --max-time 2 --cacert "$CERTS/ca.pem" -o /dev/null "$PEBBLE_DIR" &&
            curl -sf --max-time 2 --cacert "$CERTS/ca.pem" -o "$PEBBLE_ROOT" \
                "https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0" &&
            curl -sf --max-time 2 --cacert "$CERTS/ca.pem" -o "$d/inter.$PEBBLE_RUN.pem" \
                "https://127.0.0.1:$PEBBLE_MGMT_PORT/intermediates/0"; then
            cat "$d/inter.$PEBBLE_RUN.pem" "$PEBBLE_ROOT" >"$PEBBLE_CHAIN"
            return 0
        fi
        proc_alive "$PEBBLE_PID" || break
        sleep 0.1
    done
    tail -20 "$PEBBLE_LOG"
    die "pebble did not start on 127.0.0.1:$PEBBLE_PORT"
}

# stop_pebble: SIGTERM to the running pebble (SIGKILL after 3 s), reaped
stop_pebble() {
    [ -n "${PEBBLE_PID:-}" ] || return 0
    kill -TERM "$PEBBLE_PID" 2>/dev/null
    wait_gone "$PEBBLE_PID" 3 || kill -KILL "$PEBBLE_PID" 2>/dev/null
    wait "$PEBBLE_PID" 2>/dev/null
    untrack "$PEBBLE_PID"
    PEBBLE_PID=
}

# pebble_orders: how many orders pebble accepted, over all its runs (its log line per new order)
pebble_orders() { grep -c 'Added order' "$PEBBLE_LOG" 2>/dev/null; }
