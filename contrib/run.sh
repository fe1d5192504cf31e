#!/bin/sh
# One command from a fresh Debian 12 checkout to a running dohgate: installs the dependencies,
# builds (build/), and runs it with any arguments given (none: the embedded default, port 443,
# ephemeral self-signed certificate, upstreams from /etc/resolv.conf).
#   sudo contrib/run.sh [dohgate flags]        e.g. contrib/run.sh --listen 127.0.0.1:8443
set -eu
cd "$(dirname "$0")/.."
contrib/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j"$(nproc)" --target dohgate
exec build/dohgate "$@"
