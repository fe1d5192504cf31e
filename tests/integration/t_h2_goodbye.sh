#!/bin/bash
# t_h2_goodbye: after an HTTP/2 protocol error the connection closes within the goodbye time
# (2 s) even when the client does not read and the GOAWAY cannot leave, not at --idle-timeout
# (60 s here). tests/tools/h2stuck.py fills the server's socket (flow control granted in steps
# until the server falls behind), commits the error and waits for the connection to go.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3

# ---- pre
start_nsd
W=$T/www
mkdir -p "$W"
head -c 40000000 /dev/zero >"$W/big.bin"
M_PORT=$(free_port)
start_dohgate --workers 1 --idle-timeout 60 --site-root "$W" --metrics-listen "127.0.0.1:$M_PORT"

# ---- test
out=$(timeout 120 python3 "$SRC_DIR/tests/tools/h2stuck.py" --port "$DG_PORT" --metrics-port "$M_PORT" \
    --path /big.bin --cafile "$CERTS/ca.pem" --wait 8 2>&1)
rc=$?
echo "$out"
assert_match '^stuck [0-9]+ [0-9]+' "$out" "the client filled the server's socket without reading (precondition)"
assert_eq 0 "$rc" "after a protocol error with its GOAWAY stuck, the connection is closed within 8 s (idle-timeout 60)"
assert_match 'closed ' "$out" "... the server closed it"

# the server still serves
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --http2 --cacert "$CERTS/ca.pem" "https://127.0.0.1:$DG_PORT/big.bin" -r 0-9)
assert_eq 206 "$code" "the server answers other clients afterwards"

# ---- post
finish
