#!/bin/sh
# Instructions per request of straddle-webhook, by where they are spent,
# and of the load bench's do-nothing floor server given the webhook's
# answer: each release server runs under callgrind (user-space instructions
# only; the kernel's share, TCP loopback and wake-ups, is not counted), the
# load bench sends `--rate` requests/s for `--duration` over HTTPS, and the
# counts of that phase are divided by the requests it answered. Unlike CPU
# time on this VM, the counts and their ratio are the same from run to run.
#
# At 200 requests/s the keep-alive connections' handshakes are about 1 % of
# the requests; at lower rates they inflate TLS's share.
#
#   webhook/benches/budget.sh [rate] [seconds]     (needs valgrind, openssl)
set -eu
rate=${1:-200}
secs=${2:-5}
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
# Self cost per function of a dump after the zeroing, grouped: budget FILE REQUESTS.
budget() {
    callgrind_annotate --threshold=100 --auto=no --inclusive=no "$1" 2>/dev/null |
        python3 -c '
import collections, re, sys
n = int(sys.argv[1])
# Frames the zeroing left holding their callees cost: threads, tokio loops.
skip = re.compile(r"clone\.S:clone|start_thread|thread_start|call_once\{\{vtable|__rust_begin_short_backtrace|tokio::runtime::(task::raw::poll|blocking::pool::Inner::run|task::core::Core|context::runtime::enter_runtime|context::scoped|scheduler::multi_thread::worker::run|scheduler::current_thread::(CoreGuard|CurrentThread)::block_on|runtime::Runtime::block_on|task::harness)")
groups = [
    # ring'"'"'s C for the handshakes: X25519 and P-256 (static functions, no prefix).
    ("TLS (rustls, ring)", r"rustls|ring_core|ring::|aesni|ghash|x25519|sha512|sha256|curve25519|p256|nistz256|table_select|(^|[:\s])(fe|ge|fiat_25519|fiat_p256|x25519)_"),
    ("guest code (JIT, no symbols)", r"\?\?\?:0x[0-9a-f]+ \[\?\?\?\]"),
    ("wasmtime (instantiate, call, reset)", r"wasmtime|cranelift|wasm|straddle_policy_host"),
    ("HTTP (hyper, axum)", r"hyper|h2::|httparse|http::|axum|tower"),
    ("tokio (reactor, scheduler, hand-offs)", r"tokio|mio"),
    ("decode + encode (serde_json, kube, base64)", r"serde|kube|k8s_openapi|base64|straddle_webhook::admission|from_utf8|simdutf8"),
    ("metrics", r"prometheus|metrics"),
    ("libc (allocator, memcpy)", r"malloc|free|memcpy|memmove|memset|realloc|_int_|libc\.so|__rdl_|__rust_(alloc|dealloc|realloc)"),
]
total, cost, other = 0, collections.Counter(), collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m:
        continue
    ir, name = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in name:
        total = ir
    elif not skip.search(name):
        group = next((g for g, rx in groups if re.search(rx, name)), "other")
        cost[group] += ir
        if group == "other":
            other[name] += ir
print("total user-space instructions per request".ljust(45) + f"{total // n:>9}")
for g, ir in cost.most_common():
    print(f"  {g:42} {ir // n:>9} {100 * ir / total:5.1f}%")
print("largest in other:")
for name, ir in other.most_common(5):
    print(f"  {ir // n:>9}  {name[:100]}")
' "$2"
}
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
echo "== webhook: requests measured: $n"
table=$(budget "$dir/cg.out.1" "$n")
echo "$table"
webhook_total=$(echo "$table" | sed -n '1s/.* //p')

# The floor: the webhook's answer to the first fixture, served by the load
# bench's floor server (its own process, as in the load bench) under callgrind.
"$load" --connect "127.0.0.1:$port" --ca "$dir/ca.pem" --record-answer "$dir/floor-answer.json" \
    >/dev/null 2>&1
kill "$pid"
wait "$pid" 2>/dev/null || true
valgrind --tool=callgrind --callgrind-out-file="$dir/floor.out" \
    "$load" --serve-floor "$dir/tls.crt" "$dir/tls.key" "$dir/floor-answer.json" \
    >"$dir/floor.log" 2>"$dir/floor-valgrind.log" &
pid=$!
until grep -q "floor listening on" "$dir/floor.log"; do sleep 1; done
floor=$(sed -n 's/floor listening on //p' "$dir/floor.log")
served() {
    "$load" --connect "$floor" --ca "$dir/ca.pem" --rate "$rate" --duration "$1" --skip-saturation 2>&1 |
        sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' | head -n 1
}
served 2s >/dev/null
callgrind_control -z "$pid" >/dev/null
# The load bench's 1 s warm-up (min(rate, 1000) requests/s, not printed) is
# inside the window, as it is in the webhook's /metrics count above.
n=$(($(served "${secs}s") + (rate < 1000 ? rate : 1000)))
callgrind_control -d "$pid" >/dev/null
echo "== floor: requests measured: $n"
table=$(budget "$dir/floor.out.1" "$n")
echo "$table"
floor_total=$(echo "$table" | sed -n '1s/.* //p')
echo "== instructions per request, webhook vs floor: $webhook_total vs $floor_total" \
    "($(python3 -c "print(f'{$webhook_total / $floor_total:.2f}x')"))"
