#!/bin/bash
# t_logs: no query data in the log unless the query log is on (not even at log-level debug);
# the query log's lines and its client-address modes (truncate, full, none; IPv4 and IPv6);
# log-target syslog delivers to /dev/log (checked with a listener of our own when no syslog
# daemon holds /dev/log).
. "$(dirname "$0")/lib.sh"
need_tools nsd curl kdig python3

start_nsd
SECRET=secret-label.$ZONE

# ---- default: nothing about queries, at the most verbose level
start_dohgate --log-level debug
doh_get "$SECRET" A >/dev/null
kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost "$SECRET" AAAA >/dev/null 2>&1
doh_get "www.$ZONE" TXT >/dev/null
stop_dohgate
assert_file_nomatch "$DG_LOG" 'secret-label' "query-log off, log-level debug: no query name in the log"
assert_file_nomatch "$DG_LOG" 'query:' "query-log off: no query lines"
assert_file_nomatch "$DG_LOG" ' TXT|AAAA' "query-log off: no query types"

# ---- query log, default client mode: truncated
: >"$DG_LOG"
start_dohgate --query-log yes
doh_get "$SECRET" A >/dev/null
kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost "nope.$ZONE" MX >/dev/null 2>&1
curl -s --http1.1 --cacert "$CERTS/ca.pem" -o /dev/null "$(dohgate_url)?dns=$(dnsmsg query "txt.$ZONE" TXT --b64)"
stop_dohgate
assert_file_match "$DG_LOG" "query: 127\.0\.0\.0 $SECRET\. A NXDOMAIN GET HTTP/2$" "query log: GET over HTTP/2, client truncated to /24"
assert_file_match "$DG_LOG" "query: 127\.0\.0\.0 nope\.$ZONE\. MX NXDOMAIN POST HTTP/2$" "query log: kdig's POST, NXDOMAIN"
assert_file_match "$DG_LOG" "query: 127\.0\.0\.0 txt\.$ZONE\. TXT NOERROR GET HTTP/1\.1$" "query log: HTTP/1.1"
assert_file_nomatch "$DG_LOG" 'query: 127\.0\.0\.1 ' "truncate: the full address never appears"

# ---- full and none; IPv6
: >"$DG_LOG"
start_dohgate --query-log yes --query-log-client full
doh_get "$SECRET" A >/dev/null
stop_dohgate
assert_file_match "$DG_LOG" "query: 127\.0\.0\.1 $SECRET\. A NXDOMAIN" "query-log-client full: the whole address"
: >"$DG_LOG"
start_dohgate --query-log yes --query-log-client none
doh_get "$SECRET" A >/dev/null
stop_dohgate
assert_file_match "$DG_LOG" "query: - $SECRET\. A NXDOMAIN" "query-log-client none: no address"
if python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
    : >"$DG_LOG"
    DG_PORT=$(free_port)
    launch_dohgate --listen "127.0.0.1:$DG_PORT" --listen "[::1]:$DG_PORT" --upstream "127.0.0.1:$NSD_PORT" \
        --cert "$CERTS/server.pem" --key "$CERTS/server.key" --query-log yes
    curl -s -6 --cacert "$CERTS/ca.pem" -o /dev/null \
        "https://localhost:$DG_PORT/dns-query?dns=$(dnsmsg query "$SECRET" A --b64)"
    stop_dohgate
    assert_file_match "$DG_LOG" "query: :: $SECRET\. A NXDOMAIN" "truncate: IPv6 ::1 becomes its /48, ::"
fi

# ---- syslog
if [ ! -e /dev/log ] && [ "$(id -u)" = 0 ]; then
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
out = open(sys.argv[1], "a")
while True:
    out.write(s.recv(4096).decode(errors="replace") + "\n")
    out.flush()
' "$T/syslog.txt" &
    SYSLOGD=$!
    track "$SYSLOGD"
    for i in $(seq 1 50); do [ -S /dev/log ] && break; sleep 0.1; done
    : >"$DG_LOG"
    start_dohgate --log-target syslog --query-log yes
    doh_get "$SECRET" A >/dev/null
    stop_dohgate
    kill "$SYSLOGD"
    wait "$SYSLOGD" 2>/dev/null
    untrack "$SYSLOGD"
    rm -f /dev/log
    assert_file_match "$T/syslog.txt" '^<30>.*dohgate\[[0-9]+\]: listening on 127\.0\.0\.1' \
        "log-target syslog: start-up lines reach /dev/log as daemon.info (<30>)"
    assert_file_match "$T/syslog.txt" "dohgate\[[0-9]+\]: query: 127\.0\.0\.0 $SECRET\. A NXDOMAIN" \
        "log-target syslog: query-log lines too"
    assert_file_nomatch "$DG_LOG" 'listening on' "log-target syslog: nothing on stderr"
else
    echo "# /dev/log is taken by a syslog daemon (or not root): syslog delivery not checked"
fi

finish
