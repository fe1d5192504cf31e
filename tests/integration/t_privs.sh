#!/bin/bash
# t_privs: started as root with "user", dohgate binds a privileged port and then runs as that
# user in every thread, with no capabilities left; a certificate reload after the drop works
# (files readable by the user), an unreadable key is warned about at start and refused on
# reload without losing the old certificate; an unknown user stops the start.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl curl python3 ps

[ "$(id -u)" = 0 ] || skip "needs root (binds a port below 1024, switches users)"
getent passwd nobody >/dev/null || die "no user 'nobody'"
NOGROUP=$(id -gn nobody)

start_nsd
make_certs
chmod 755 "$T" # nobody must reach the certificate files
mkdir -m 755 "$T/tls"
SANS="DNS:doh.dohgate.test,DNS:localhost,IP:127.0.0.1"
issue_cert doh.dohgate.test 0x5001 ec "$T/tls/a" "$SANS"
issue_cert doh.dohgate.test 0x5002 ec "$T/tls/b" "$SANS"
cp "$T/tls/a.full.pem" "$T/tls/cert.pem"
cp "$T/tls/a.key" "$T/tls/key.pem"
chmod 644 "$T/tls/cert.pem"
chgrp "$NOGROUP" "$T/tls/key.pem" && chmod 640 "$T/tls/key.pem" # as the deploy hook does

# a free port below 1024
PRIV_PORT=$(python3 -c '
import socket
for p in range(990, 900, -1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: s.close()')
[ -n "$PRIV_PORT" ] || die "no free port below 1024"

DG_PORT=$PRIV_PORT
launch_dohgate --listen "127.0.0.1:$PRIV_PORT" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$T/tls/cert.pem" --key "$T/tls/key.pem" --user nobody --workers 2 \
    --cert-check-interval 0
assert_eq "nobody" "$(ps -o user= -p "$DG_PID" | tr -d ' ')" "dohgate runs as nobody after binding port $PRIV_PORT"
uid=$(id -u nobody)
bad=0
ntask=0
for st in /proc/"$DG_PID"/task/*/status; do
    ntask=$((ntask + 1))
    grep -qE "^Uid:[[:space:]]+$uid[[:space:]]+$uid[[:space:]]+$uid[[:space:]]+$uid$" "$st" || bad=$((bad + 1))
    grep -qE '^CapEff:[[:space:]]+0+$' "$st" || bad=$((bad + 1))
    grep -qE '^CapPrm:[[:space:]]+0+$' "$st" || bad=$((bad + 1))
done
assert_range 3 100 "$ntask" "the process has its worker threads ($ntask tasks)"
assert_eq 0 "$bad" "every thread: real, effective, saved and fs uid are nobody's; no capabilities"
assert_eq "$(id -g nobody)" "$(awk '/^Gid:/ {print $2}' /proc/"$DG_PID"/status)" "the group is nobody's"
assert_file_match "$DG_LOG" "running as user nobody \(uid $uid" "the log says which user it runs as"
assert_file_nomatch "$DG_LOG" "is not readable by user" "readable files: no warning"
assert_eq 5001 "$(served_serial)" "the certificate is served"

# ---- reload after the drop: the files are read as nobody
cp "$T/tls/b.full.pem" "$T/tls/cert.pem.new" && mv "$T/tls/cert.pem.new" "$T/tls/cert.pem"
cp "$T/tls/b.key" "$T/tls/key.pem.new" && chgrp "$NOGROUP" "$T/tls/key.pem.new" &&
    chmod 640 "$T/tls/key.pem.new" && mv "$T/tls/key.pem.new" "$T/tls/key.pem"
kill -HUP "$DG_PID"
assert_eq 5002 "$(wait_serial 5002 5)" "SIGHUP after the privilege drop loads the new certificate"

# ---- a key nobody cannot read: refused, the old certificate stays
chmod 600 "$T/tls/key.pem" # root's only
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "certificate reload failed, still serving the previous certificates: cannot load private key $T/tls/key.pem" \
    "an unreadable key: the reload fails with the file named"
assert_eq 5002 "$(served_serial)" "an unreadable key: the previous certificate is still served"
stop_dohgate

# ---- started with an unreadable key: it starts (root reads it) and warns about reloads
DG_PORT=$(free_port)
launch_dohgate --listen "127.0.0.1:$DG_PORT" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$T/tls/cert.pem" --key "$T/tls/key.pem" --user nobody
assert_file_match "$DG_LOG" "$T/tls/key.pem is not readable by user nobody .*reloads will fail" \
    "start-up with a key only root can read: a warning names the file"
stop_dohgate

# ---- started unprivileged with CAP_NET_BIND_SERVICE (as systemd's AmbientCapabilities does):
# the port is bound, then every capability is given up
if command -v setpriv >/dev/null; then
    chgrp "$NOGROUP" "$T/tls/b.key" && chmod 640 "$T/tls/b.key" # it reads them as nobody
    DG_PORT=$PRIV_PORT
    echo "# setpriv ... $DOHGATE" >>"$DG_LOG"
    setpriv --reuid=nobody --regid="$NOGROUP" --clear-groups --inh-caps=+net_bind_service \
        --ambient-caps=+net_bind_service "$DOHGATE" --listen "127.0.0.1:$PRIV_PORT" \
        --upstream "127.0.0.1:$NSD_PORT" --cert "$T/tls/b.full.pem" --key "$T/tls/b.key" \
        >>"$DG_LOG" 2>&1 </dev/null &
    DG_PID=$!
    track "$DG_PID"
    wait_dohgate
    st=$(cat /proc/"$DG_PID"/status)
    assert_match "CapEff:[[:space:]]+0+
" "$st" "unprivileged start with an ambient capability: none effective after binding"
    assert_match "CapPrm:[[:space:]]+0+
" "$st" "... none permitted"
    assert_match "CapAmb:[[:space:]]+0+
" "$st" "... none ambient"
    stop_dohgate
fi

# ---- ticket-key files are read on reload too: warned about like the certificates
head -c 80 /dev/urandom >"$T/tls/ticket.key"
chmod 600 "$T/tls/ticket.key"
DG_PORT=$(free_port)
launch_dohgate --listen "127.0.0.1:$DG_PORT" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$T/tls/a.full.pem" --key "$T/tls/a.key" --ticket-key-file "$T/tls/ticket.key" --user nobody
assert_file_match "$DG_LOG" "$T/tls/ticket.key is not readable by user nobody .*reloads will fail" \
    "start-up with a ticket-key file only root can read: warned"
stop_dohgate

# ---- unknown user / group: no start
out=$("$DOHGATE" --listen "127.0.0.1:$(free_port)" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$T/tls/cert.pem" --key "$T/tls/key.pem" --user no-such-user-dg 2>&1)
assert_eq 1 "$?" "an unknown user: exit status 1"
assert_match "user 'no-such-user-dg' does not exist" "$out" "an unknown user: the message names it"
out=$("$DOHGATE" --listen "127.0.0.1:$(free_port)" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$T/tls/cert.pem" --key "$T/tls/key.pem" --user nobody --group no-such-group-dg 2>&1)
assert_match "group 'no-such-group-dg' does not exist" "$out" "an unknown group: the message names it"

finish
