#!/bin/sh
# Instructions per request of straddle-webhook, by where they are spent:
# the release server runs under callgrind (user-space instructions only; the
# kernel's share, TCP loopback and wake-ups, is not counted), the load bench
# sends `--rate` requests/s for `--duration` over HTTPS, and the counts of
# that phase are divided by the requests the server's /metrics counted.
#
#   webhook/benches/budget.sh [rate] [seconds]     (needs valgrind, openssl)
set -eu
rate=${1:-50}
secs=${2:-10}
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cargo build --release -q -p straddle-compiler
# The server binary cargo builds along with the bench (the bench's features).
load=$(cargo bench -p straddle-webhook --bench load --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*load[^"]*\)".*/\1/p' | tail -n 1)
bin=$(dirname "$load")/..
"$bin/straddle" compile examples/cp-two-clusters.yaml -o "$dir/policy.wasm" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 1 -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null
port=18443
# One review slot: valgrind cannot map 8 slots' address space reservations.
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$bin/straddle-webhook" --cluster cluster-0 --policy "$dir/policy.wasm" \
    --tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key" --listen "127.0.0.1:$port" \
    --io-threads 1 --max-concurrent-reviews 1 --log warn 2>"$dir/valgrind.log" &
pid=$!
until curl -sfk "https://127.0.0.1:$port/readyz" >/dev/null; do sleep 1; done
requests() {
    curl -sfk "https://127.0.0.1:$port/metrics" |
        awk '/^straddle_webhook_requests_total/ { n += $NF } END { print n + 0 }'
}
# Warm-up (connections, first instances), then count only the measured phase.
"$load" --connect "127.0.0.1:$port" --ca "$dir/ca.pem" --rate "$rate" --duration 2s \
    --skip-saturation >/dev/null 2>&1
before=$(requests)
callgrind_control -z "$pid" >/dev/null
"$load" --connect "127.0.0.1:$port" --ca "$dir/ca.pem" --rate "$rate" --duration "${secs}s" \
    --skip-saturation >/dev/null 2>&1
callgrind_control -d "$pid" >/dev/null
n=$(($(requests) - before))
dump=$(ls -t "$dir"/cg.out* | head -n 1)
echo "requests measured: $n"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk -v n="$n" '
    /^ *[0-9,]+ +\(/ || /^ *[0-9,]+  / {
        ir = $1; gsub(",", "", ir); $1 = ""; name = $0
        if (name ~ /PROGRAM TOTALS/) { total = ir; next }
        g = "other"
        if (name ~ /rustls|ring_core|ring::/) g = "TLS (rustls, ring)"
        else if (name ~ /hyper|h2::|http::|httparse|axum|tower/) g = "HTTP (hyper, axum)"
        else if (name ~ /tokio/) g = "tokio (reactor, scheduler, hand-offs)"
        else if (name ~ /wasmtime|cranelift/) g = "wasmtime (instantiate, call, reset)"
        else if (name ~ /\?\?\?/) g = "guest code (JIT, no symbols) and unknown"
        else if (name ~ /serde|kube|k8s_openapi|base64|straddle_webhook::admission/) g = "decode + encode (serde_json, kube types, base64)"
        else if (name ~ /prometheus|metrics/) g = "metrics"
        else if (name ~ /malloc|free|memcpy|memmove|memset|realloc|libc/) g = "libc (allocator, memcpy)"
        else if (name ~ /tracing/) g = "logging"
        sum[g] += ir
    }
    END {
        if (total == 0) { print "no totals (callgrind_annotate failed?)"; exit 1 }
        printf "%-52s %12.0f\n", "total instructions per request", total / n
        for (g in sum) printf "  %-50s %12.0f\n", g, sum[g] / n
    }' | sort -k1,1 -s
