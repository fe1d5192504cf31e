#!/bin/bash
# t_json: the JSON API (Google's and Cloudflare's application/dns-json) against NSD, with curl
# over HTTP/2 and HTTP/1.1: /resolve and the DoH path (accept header, or name= without dns=),
# answers checked with python3's strict JSON parser (Status, flags, Question, Answer with TTL and
# data, Authority with the SOA of a negative answer), the CNAME chain, MX and TXT data, do/cd
# flags reaching the upstream query, ct=application/dns-message (wire answer), cache-control as
# for wire answers and CORS, a cache hit shared with the wire form, bad parameters (400 with a
# reason naming the parameter), other methods (405), json-api no, admission (403 for a denied
# client) and the metrics by transport.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3

start_nsd
M_PORT=$(free_port)
start_dohgate --workers 1 --metrics-listen "127.0.0.1:$M_PORT"
Z=dohgate.test

# jget PATH-AND-QUERY [curl options]: GET it; body in $T/resp.bin, headers in $T/resp.hdr
jget() {
    local p=$1
    shift
    dcurl "$@" "https://127.0.0.1:$DG_PORT$p"
}
# jq_py EXPR: evaluate a python expression on the parsed body (j); prints the result, or
# "INVALID: ..." when the body is not strict JSON
jq_py() {
    python3 -c '
import json, sys
try:
    j = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
except Exception as e:
    print("INVALID: %s" % e); sys.exit(0)
print(eval(sys.argv[2]))' "$T/resp.bin" "$1"
}

# ---- /resolve, positive answer
jget "/resolve?name=www.$Z&type=A"
assert_eq 200 "$HTTP_CODE" "/resolve A: 200"
assert_eq application/dns-json "$(hdr content-type)" "/resolve: content-type application/dns-json"
assert_eq '*' "$(hdr access-control-allow-origin)" "/resolve: CORS allows any origin"
assert_match '^max-age=(600|59[0-9])$' "$(hdr cache-control)" "/resolve: max-age from the TTL (600)"
assert_eq 0 "$(jq_py 'j["Status"]')" "/resolve: Status 0"
assert_eq "www.$Z. 1" "$(jq_py '" ".join([j["Question"][0]["name"], str(j["Question"][0]["type"])])')" "/resolve: Question"
assert_eq "192.0.2.10" "$(jq_py '",".join(a["data"] for a in j["Answer"] if a["type"] == 1)')" "/resolve: the A record's data"
assert_range 590 600 "$(jq_py 'j["Answer"][0]["TTL"]')" "/resolve: the record's TTL"
assert_eq "False True False" "$(jq_py '" ".join(str(j[k]) for k in ("TC", "RD", "CD"))')" "/resolve: TC false, RD true, CD false"

# ---- the DoH path: with the accept header, and name= without dns=
jget "/dns-query?name=www.$Z&type=AAAA" -H 'accept: application/dns-json'
assert_eq 200 "$HTTP_CODE" "doh path + accept: 200"
assert_eq "2001:db8::10" "$(jq_py 'j["Answer"][0]["data"]')" "doh path + accept: the AAAA data"
jget "/dns-query?name=mail.$Z&type=mx" --http1.1
assert_eq 200 "$HTTP_CODE" "doh path, name= without dns=, HTTP/1.1: 200"
assert_eq application/dns-json "$(hdr content-type)" "doh path, name=: JSON"
assert_eq "10 mx.$Z." "$(jq_py 'j["Answer"][0]["data"]')" "MX data in presentation form, type given in lower case"

# ---- CNAME chain, TXT with quotes, ANY, negative answers
jget "/resolve?name=chain1.$Z"
assert_eq "5 5 1" "$(jq_py '" ".join(str(a["type"]) for a in j["Answer"])')" "CNAME chain: CNAME, CNAME, A"
jget "/resolve?name=txt.$Z&type=TXT"
assert_eq '"hello from dohgate.test"' "$(jq_py 'j["Answer"][0]["data"]')" "TXT data keeps its quotes (valid JSON)"
jget "/resolve?name=nothing-here.$Z"
assert_eq 3 "$(jq_py 'j["Status"]')" "NXDOMAIN: Status 3"
assert_eq 6 "$(jq_py 'j["Authority"][0]["type"]')" "NXDOMAIN: the SOA in Authority"
assert_eq "max-age=300" "$(hdr cache-control)" "NXDOMAIN: max-age = min(SOA TTL, MINIMUM) = 300"
assert_eq "False" "$(jq_py '"Answer" in j')" "NXDOMAIN: no Answer member"
jget "/resolve?name=big.$Z&type=TXT"
assert_eq 40 "$(jq_py 'len(j["Answer"])')" "a 3 KB answer (TCP upstream) as 40 JSON records"

# ---- ct=application/dns-message: the wire form
jget "/resolve?name=www.$Z&ct=application/dns-message"
assert_eq application/dns-message "$(hdr content-type)" "ct=application/dns-message: wire answer"
assert_eq NOERROR "$(rcode)" "ct=application/dns-message: parses as DNS"
jget "/resolve?name=www.$Z&ct=application/x-javascript"
assert_eq application/x-javascript "$(hdr content-type)" "ct=application/x-javascript: that content type"

# ---- do and cd reach the upstream query: NSD copies both into its answer (RFC 3225, RFC 4035),
# and the cache keys on them, so the answer comes from a query that carried them
jget "/resolve?name=www.$Z&do=1&cd=true"
assert_eq 200 "$HTTP_CODE" "do=1&cd=true: 200"
# (NSD does not copy CD into its answers, so CD is checked in the unit test of the wire query)
jget "/resolve?name=www.$Z&do&ct=application/dns-message"
do_bit() {
    python3 -c '
import struct, sys
d = open(sys.argv[1], "rb").read()
# walk to the OPT: question, then the records; print its DO bit
qd, an, ns, ar = struct.unpack("!HHHH", d[4:12])
o = 12
def skip_name(o):
    while True:
        l = d[o]
        if l >= 0xC0: return o + 2
        if l == 0: return o + 1
        o += 1 + l
for _ in range(qd): o = skip_name(o) + 4
for _ in range(an + ns + ar):
    o = skip_name(o)
    t, c, ttl, rl = struct.unpack("!HHIH", d[o:o + 10])
    if t == 41: print((ttl >> 15) & 1); sys.exit(0)
    o += 10 + rl
print("no-OPT")' "$T/resp.bin"
}
assert_eq 1 "$(do_bit)" "do (no value = true): the upstream answer carries DO=1"
jget "/resolve?name=www.$Z&do=0&ct=application/dns-message"
assert_eq 0 "$(do_bit)" "do=0: DO=0"
# ---- bad parameters: 400 with a reason that names the parameter
jget "/resolve?type=A"
assert_eq 400 "$HTTP_CODE" "no name: 400"
assert_match '^name' "$(cat "$T/resp.bin")" "no name: the reason names the parameter"
jget "/resolve?name=$(printf 'a%.0s' $(seq 1 64)).$Z"
assert_eq 400 "$HTTP_CODE" "a 64-byte label: 400"
assert_match '63' "$(cat "$T/resp.bin")" "a 64-byte label: the reason says 63"
jget "/resolve?name=www.$Z&type=NOSUCHTYPE"
assert_eq 400 "$HTTP_CODE" "unknown type: 400"
assert_match 'type' "$(cat "$T/resp.bin")" "unknown type: the reason names type"
jget "/resolve?name=www.$Z&type=65536"
assert_eq 400 "$HTTP_CODE" "type 65536: 400"
jget "/resolve?name=www.$Z&ct=text/html"
assert_eq 400 "$HTTP_CODE" "ct=text/html: 400"
jget "/resolve?name=a&name=b"
assert_eq 400 "$HTTP_CODE" "name twice: 400"
jget "/resolve?name=www.$Z" -X POST --data x
assert_eq 405 "$HTTP_CODE" "POST to /resolve: 405"
assert_match 'GET' "$(hdr allow)" "405: allow names GET"
# the wire form is untouched by all this
doh_get "www.$Z" A
assert_eq "200 NOERROR" "$HTTP_CODE $(rcode)" "RFC 8484 GET on the same path still answers wire"

# ---- metrics by transport
m=$(curl -s "http://127.0.0.1:$M_PORT/metrics")
n=$(echo "$m" | sed -n 's/^dohgate_dns_answers_total{transport="json",rcode="NOERROR"} //p')
assert_range 2 100 "$n" "dohgate_dns_answers_total{transport=json,rcode=NOERROR} counts the JSON answers"

# ---- json-api no: /resolve belongs to the website again, and the DoH path is RFC 8484 only
stop_dohgate
start_dohgate --workers 1 --json-api no
jget "/resolve?name=www.$Z"
assert_ne application/dns-json "$(hdr content-type)" "json-api no: /resolve is not the JSON API"
jget "/dns-query?name=www.$Z" -H 'accept: application/dns-json'
assert_eq 400 "$HTTP_CODE" "json-api no: a JSON request on the DoH path is a bad RFC 8484 request"

# ---- admission applies: a denied client gets 403
stop_dohgate
start_dohgate --workers 1 --deny-client 127.0.0.2/32
jget "/resolve?name=www.$Z" --interface 127.0.0.2
assert_eq 403 "$HTTP_CODE" "deny-client: the JSON API is refused like DoH (403)"
jget "/resolve?name=www.$Z"
assert_eq 200 "$HTTP_CODE" "deny-client: another client is answered"

finish
