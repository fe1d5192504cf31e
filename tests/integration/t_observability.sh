#!/bin/bash
# t_observability: the observability kit (issue 21) against a live dohgate.
#   1. contrib/prometheus/dohgate.rules.yml passes `promtool check rules` (every alert with for:,
#      severity, summary, description), the dashboard's expressions parse, and its unit tests
#      (contrib/prometheus/dohgate.rules.test.yml) pass `promtool test rules`
#   2. one dohgate with every feature whose series the rules or the dashboard use: ACME from
#      pebble (acme-domain: the dohgate_acme_* family) next to a --cert with a stapled OCSP
#      response (dohgate_certificate_ocsp_next_update_timestamp_seconds), cache-redis with a
#      real redis-server (dohgate_redis_*), a forward-zone (the upstream series' zone label),
#      dns-listen, dot-listen, plain-listen, a blocklist; queries over DoH h2 and HTTP/1.1, the JSON API,
#      DoT, UDP, TCP and clear-text DoH. Its /metrics must hold every dohgate series named by
#      any expression of the rules file and of contrib/grafana/dohgate.json, with the labels
#      the expressions select and group on (tests/tools/promrefs.py); the ACME certificate is
#      among the dohgate_certificate_expiry_timestamp_seconds series the expiry alerts watch
#   3. the checker is not blind: a dashboard naming a made-up series, one selecting on a label
#      the series does not have, and a rule grouping by a missing label each fail it
# Every other family of metrics.c is printed unconditionally once its feature is on (HELP/TYPE
# and a sample per label value), except dohgate_http_requests_total, whose samples appear per
# (version, method, status) that happened: status="429" and status=~"5.." are not caused here
# (t_limits.sh causes 429s); the checker is told so (--sparse) for the one `=` value.
. "$(dirname "$0")/lib.sh"
need_tools promtool nsd redis-server redis-cli pebble openssl curl kdig dig python3

RULES=$SRC_DIR/contrib/prometheus/dohgate.rules.yml
DASH=$SRC_DIR/contrib/grafana/dohgate.json
PROMREFS=$SRC_DIR/tests/tools/promrefs.py

# ---- 1. promtool ---------------------------------------------------------------------------
out=$(promtool check rules "$RULES" 2>&1)
assert_eq 0 "$?" "1: promtool check rules dohgate.rules.yml ($(echo "$out" | tr '\n' ' ' | head -c 300))"
assert_match 'SUCCESS: [0-9]+ rules found' "$out" "1: ... rules found"
out=$(cd "$SRC_DIR/contrib/prometheus" && promtool test rules dohgate.rules.test.yml 2>&1)
assert_eq 0 "$?" "1: promtool test rules dohgate.rules.test.yml"
assert_match 'SUCCESS' "$out" "1: ... SUCCESS"
[ "$FAIL" = 0 ] || echo "$out" | head -40
# every alert has a for:, a severity (warning or critical), a summary and a description
out=$(python3 - "$RULES" <<'EOF'
import sys, yaml
n = 0
for g in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for r in g["rules"]:
        if "alert" not in r:
            continue
        n += 1
        a = r.get("annotations", {})
        if not r.get("for") or r.get("labels", {}).get("severity") not in ("warning", "critical") \
                or not a.get("summary") or not a.get("description"):
            print("incomplete:", r["alert"])
print(n, "alerts")
EOF
)
assert_match '^[1-9][0-9]* alerts$' "$out" "1: every alert has for:, severity, summary and description ($(echo "$out" | tr '\n' ' '))"
# the dashboard's PromQL parses: each expression as a recording rule ($instance and Grafana's
# $__rate_interval replaced), checked by promtool
python3 - "$DASH" "$T/dash.rules.yml" <<'EOF'
import json, sys, yaml
exprs = []
def walk(n):
    if isinstance(n, dict):
        for k, v in n.items():
            if k == "expr" and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(n, list):
        for v in n:
            walk(v)
walk(json.load(open(sys.argv[1])))
rules = [{"record": f"dashboard:expr{i}",
          "expr": e.replace("$instance", ".+").replace("$__rate_interval", "5m")}
         for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
EOF
NEXPR=$(grep -c '"expr"' "$DASH")
out=$(promtool check rules "$T/dash.rules.yml" 2>&1)
assert_eq 0 "$?" "1: the dashboard's expressions parse (promtool check rules on them)"
assert_match "SUCCESS: $NEXPR rules found" "$out" "1: ... all $NEXPR of them ($(echo "$out" | tail -1))"

# ---- 2. a live scrape ------------------------------------------------------------------------
start_nsd
make_certs
N1=acme.$ZONE # an A record 127.0.0.1 in zone/test.zone: pebble validates there
DG_PORT=$(free_port)
M_PORT=$(free_port)
DNSP=$(free_port)
DOTP=$(free_port)
PLAINP=$(free_port)
REDIS_PORT=$(free_port)
PEBBLE_TLS_PORT=$DG_PORT
PEBBLE_HTTP_PORT=$(free_port)
export DOHGATE_TEST_ACME_RETRY_S=1

start_redis
start_pebble

# an OCSP response for the static certificate, made by the test CA (as t_ocsp.sh does); it is
# stapled only when the certificate file carries the issuer after the leaf
cat "$CERTS/server.pem" "$CERTS/ca.pem" >"$T/full.pem"
serial=$(openssl x509 -in "$CERTS/server.pem" -noout -serial | cut -d= -f2)
printf 'V\t301231000000Z\t\t%s\tunknown\t/CN=localhost\n' "$serial" >"$T/ocsp-index.txt"
openssl ocsp -issuer "$CERTS/ca.pem" -cert "$CERTS/server.pem" -no_nonce -reqout "$T/ocsp-req.der" >/dev/null 2>&1 &&
    openssl ocsp -index "$T/ocsp-index.txt" -rsigner "$CERTS/ca.pem" -rkey "$CERTS/ca.key" \
        -CA "$CERTS/ca.pem" -reqin "$T/ocsp-req.der" -respout "$T/full.pem.ocsp" -ndays 7 >/dev/null 2>&1 ||
    die "openssl ocsp could not make a response"
printf '0.0.0.0 ads.%s\n' "$ZONE" >"$T/ads.hosts" # a blocklist: dohgate_blocked_total{list}

launch_dohgate --listen "127.0.0.1:$DG_PORT" --log-level "${DG_LOG_LEVEL:-info}" \
    --cert "$T/full.pem" --key "$CERTS/server.key" --blocklist "ads=$T/ads.hosts" \
    --upstream "127.0.0.1:$NSD_PORT" --forward-zone "fz.$ZONE 127.0.0.1:$NSD_PORT" \
    --metrics-listen "127.0.0.1:$M_PORT" --dns-listen "127.0.0.1:$DNSP" \
    --dot-listen "127.0.0.1:$DOTP" --plain-listen "127.0.0.1:$PLAINP" \
    --cache-redis "127.0.0.1:$REDIS_PORT" \
    --acme-domain "$N1" --acme-email admin@example.test --acme-state-dir "$T/acme" \
    --acme-directory "https://127.0.0.1:$PEBBLE_PORT/dir" --acme-ca "$CERTS/ca.pem"

acme_done() { [ "$(metric_of dohgate_acme_last_success_timestamp_seconds)" != 0 ]; }
wait_for $((${DG_START_TIMEOUT:-10} * 3 + 30)) acme_done
assert_ne 0 "$(metric_of dohgate_acme_last_success_timestamp_seconds)" "2: ACME obtained a certificate from pebble"

# a few queries of each kind
Q=$(dnsmsg query "www.$ZONE" A --b64)
for _ in 1 2; do
    curl -s -o /dev/null --http2 --cacert "$CERTS/ca.pem" "https://127.0.0.1:$DG_PORT/dns-query?dns=$Q"
    dnsmsg query "mx.$ZONE" MX >"$T/q.bin"
    curl -s -o /dev/null --http1.1 --cacert "$CERTS/ca.pem" -H 'content-type: application/dns-message' \
        --data-binary @"$T/q.bin" "https://127.0.0.1:$DG_PORT/dns-query"
    json "www.$ZONE" AAAA >/dev/null
    kdig +tls +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$ZONE" A >/dev/null 2>&1
    dig_udp "$DNSP" "www.$ZONE" A >/dev/null
    dig @127.0.0.1 -p "$DNSP" +tcp +tries=1 +time=2 "www.$ZONE" A >/dev/null 2>&1
    dig_udp "$DNSP" "nx.$ZONE" A >/dev/null
    dig_udp "$DNSP" "a.fz.$ZONE" A >/dev/null
    curl -s -o /dev/null --http1.1 "http://127.0.0.1:$PLAINP/dns-query?dns=$Q"
    dig_udp "$DNSP" "ads.$ZONE" A >/dev/null
done
curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" >"$T/metrics.txt"
assert_match '^dohgate_build_info' "$(head -3 "$T/metrics.txt" | grep -v '^#')" "2: /metrics scraped"
for t in doh json dns-udp dns-tcp dot; do
    assert_ne 0 "$(metric_of "dohgate_dns_answers_total{transport=\"$t\",rcode=\"NOERROR\"}")" "2: $t answers counted"
done
assert_match '^[1-9]' "$(metric_of 'dohgate_redis_lookups_total{result="miss"}')" "2: Redis lookups counted"

# the ACME certificate is among the certificates the expiry series (and so the alerts) cover
acme_na=$(metric_of dohgate_acme_certificate_expiry_timestamp_seconds)
acme_serial=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$N1" </dev/null 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null | cut -d= -f2)
line=$(grep "^dohgate_certificate_expiry_timestamp_seconds{.*serial=\"$acme_serial\"" "$T/metrics.txt")
assert_match "$acme_na\$" "$line" "2: ACME certificate $acme_serial in dohgate_certificate_expiry_timestamp_seconds, notAfter = the ACME series ($acme_na)"
assert_match '^[1-9]' "$(metric_of 'dohgate_certificate_ocsp_next_update_timestamp_seconds{')" "2: the OCSP staple's nextUpdate exported"

out=$(python3 "$PROMREFS" "$T/metrics.txt" "$RULES" "$DASH" \
    --sparse 'dohgate_http_requests_total:status=429' 2>&1)
rc=$?
echo "$out" | grep -v '^ok:' | head -40
assert_eq 0 "$rc" "2: every series and label the rules and the dashboard use is in the scrape ($(echo "$out" | tail -1))"

# ---- 3. the checker fails on references that do not exist ---------------------------------------
python3 - "$DASH" "$T" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for name, expr in (("madeup", 'sum(rate(dohgate_queries_by_protocol_total[5m]))'),
                   ("badlabel", 'sum(rate(dohgate_dns_answers_total{proto="doh"}[5m]))'),
                   ("badvalue", 'sum(rate(dohgate_connections_refused_total{reason="rate-limit"}[5m]))')):
    d["panels"][1]["targets"][0]["expr"] = expr
    json.dump(d, open(f"{sys.argv[2]}/{name}.json", "w"))
EOF
sed 's/sum by (instance, job, transport, rcode)/sum by (instance, job, proto, rcode)/' "$RULES" >"$T/badby.rules.yml"
for f in madeup.json badlabel.json badvalue.json badby.rules.yml; do
    out=$(python3 "$PROMREFS" "$T/metrics.txt" "$T/$f" 2>&1)
    assert_eq 1 "$?" "3: $f fails the check"
    assert_match '^MISSING .*(dohgate_queries_by_protocol_total|proto|rate-limit)' "$out" "3: ... naming it ($(echo "$out" | head -1 | head -c 200))"
done

finish
