#!/bin/bash
# s_ratelimit: one address floods DoH queries (h2load, 4 connections x 50 streams, for 3 s;
# long: 20 s) against rate-limit 200/s; it gets mostly 429s, at most the burst plus 200 per
# second answered, while another address asking every 0.1 s is answered every time.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl h2load python3
SECS=$(by_mode 3 20)

start_nsd
start_dohgate --workers 2 --rate-limit 200 --rate-limit-burst 400
sleep 2.1 # the start-up query's token back
Q=$(dnsmsg query "www.$ZONE" A --b64)
( ok=0; n=0
  while [ ! -e "$T/stop" ] && [ $n -lt 600 ]; do
      c=$(curl -s --max-time 5 --http2 --interface 127.0.0.9 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$(dohgate_url)?dns=$Q")
      n=$((n + 1)); [ "$c" = 200 ] && ok=$((ok + 1))
      sleep 0.1
  done
  echo "$ok $n" >"$T/other" ) &
O=$!
track "$O"
t0=$(now_ms)
h2load -D "$SECS" -c 4 -m 50 "$(dohgate_url)?dns=$Q" >"$T/h2load.out" 2>&1
dt=$(($(now_ms) - t0))
touch "$T/stop"
wait "$O"
untrack "$O"
ok2=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$T/h2load.out")
r4=$(sed -n 's/^status codes: [0-9]* 2xx, [0-9]* 3xx, \([0-9]*\) 4xx.*/\1/p' "$T/h2load.out")
total=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' "$T/h2load.out")
rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$T/h2load.out")
read -r other_ok other_n <"$T/other"
figure "flood_queries=$total wall_ms=$dt answered_2xx=${ok2:-?} refused_429=${r4:-?} flood_req_per_s=${rps:-?} other_address=${other_ok}/${other_n}"
max_ok=$((400 + 200 * (dt + 999) / 1000 + 50))
assert_range 1 "$max_ok" "${ok2:-x}" "the flooder got at most burst + 200/s answered (${ok2} of $total in $dt ms; bound $max_ok)"
assert_range 10000 1000000000 "${r4:-0}" "the rest of the flood got 429 (${r4})"
assert_eq "$other_n" "$other_ok" "the other address was answered every time ($other_ok of $other_n)"
finish
