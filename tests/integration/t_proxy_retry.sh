#!/bin/bash
# t_proxy_retry: a request whose kept-alive backend connection fails before any byte of the
# response is sent again on a new connection only when its method is idempotent (RFC 9110
# §9.2.2, as nginx does): a GET is retried and answered 200; a POST gets 502 and reaches the
# backend once, never twice. tests/tools/backend.py /drop-reused makes the backend close a
# reused connection on the request that arrives on it, unanswered.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3


# ---- pre
start_nsd
BP=$(free_port)
BE_LOG=$T/backend.log
start_backend "$BP" "$BE_LOG"
# one worker: one pool of idle backend connections
start_dohgate --workers 1 --site-backend "http://127.0.0.1:$BP" --backend-timeout 5

# proxied VERB PATH [CURL-ARGS]: the status of one request through dohgate (a new client
# connection each time; the backend connection comes from the worker's pool)
proxied() {
    local verb=$1 path=$2
    shift 2
    curl -s -o "$T/resp.bin" -w '%{http_code}' --max-time 10 --http1.1 --cacert "$CERTS/ca.pem" \
        -X "$verb" "$@" "https://127.0.0.1:$DG_PORT$path"
}
# seen LINE: how often the backend logged LINE
seen() { grep -cxF "$1" "$BE_LOG"; }

# ---- test
# The switch goes through dohgate, which then keeps that backend connection for the next one.
assert_eq 200 "$(proxied GET /drop-reused?on=1)" "backend told to drop requests on reused connections"

# POST: not idempotent. The reused connection closes on it: 502, and the backend saw it once.
code=$(proxied POST /echo --data-binary 'pay once')
assert_eq 502 "$code" "a POST whose reused backend connection closed unanswered gets 502"
assert_eq 1 "$(seen 'DROPPED POST /echo')" "... it reached the backend once (dropped there)"
assert_eq 0 "$(seen 'POST /echo')" "... and was not sent again on a new connection"

# GET: idempotent. Park a connection, then the next GET reuses it, is dropped, and retried.
assert_eq 200 "$(proxied GET /echo?first)" "a GET on a fresh or retried connection: 200"
assert_eq 200 "$(proxied GET /echo?second)" "a GET whose reused connection closed unanswered is retried: 200"
assert_eq 1 "$(seen 'DROPPED GET /echo?second')" "... the first try was dropped by the backend"
assert_eq 1 "$(seen 'GET /echo?second')" "... and the retry on a new connection answered"
assert_eq GET "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["method"])' "$T/resp.bin" 2>&1)" "... with the backend's body"

# DELETE is idempotent too (RFC 9110 §9.2.2): retried (the GET's retry parked a connection)
assert_eq 200 "$(proxied DELETE /echo)" "a DELETE whose reused connection closed unanswered is retried: 200"
assert_eq 1 "$(seen 'DROPPED DELETE /echo')" "... the first try was dropped by the backend"
assert_eq 1 "$(seen 'DELETE /echo')" "... and the retry answered"

# ---- post
kill -TERM "$BE_PID" 2>/dev/null
finish
