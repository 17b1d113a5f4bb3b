#!/bin/sh
# Where the policy module's instructions go, by guest function, per review:
# the guest built with its function names, run by tests/tools/guest-profile
# (wasmtime with a perf map of the JIT code) under callgrind, once with one
# review and once with N+1 in the same warm instance; the difference over N
# is one review (instantiation and the first review's page faults cancel).
# Host functions (wasmtime's calls, lifting, memcpy) are listed too.
#
#   tests/tools/guest-profile.sh [N] [TOP]      (needs valgrind)
#
# Environment: SPEC (default the cp example), FIXTURE, CLUSTER, NAMESPACE (see the
# tool's src/main.rs); DUMP=<file> also writes the compiled code, for
# `llvm-objdump -d`; EPOCH=0 compiles without the epoch interruption checks
# (the webhook always has them), to see what they cost each function.
# Builds under $CARGO_TARGET_DIR/guest-profile (or target/guest-profile).
set -eu
n=${1:-200}
top=${2:-40}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${CARGO_TARGET_DIR:-$root/target}/guest-profile
cd "$root"
# The guest as policy/artifact/build.rs builds it (its target features), but
# with its names.
CARGO_PROFILE_GUEST_STRIP=false CARGO_ENCODED_RUSTFLAGS=-Ctarget-feature=+simd128 cargo build -q -p straddle-policy-guest --locked \
    --target wasm32-unknown-unknown --profile guest --target-dir "$out/guest"
STRADDLE_POLICY_GUEST_WASM="$out/guest/wasm32-unknown-unknown/guest/straddle_policy_guest.wasm" \
    cargo build -q --release --locked --manifest-path tests/tools/guest-profile/Cargo.toml \
    --target-dir "$out/tool"
tool="$out/tool/release/straddle-guest-profile"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo build -q --release --locked -p straddle-compiler --bin straddle
"${CARGO_TARGET_DIR:-target}/release/straddle" compile "${SPEC:-examples/cp-two-clusters.yaml}" \
    -o "$scratch/policy.wasm" 2>/dev/null
export MODULE="$scratch/policy.wasm"
run() {
    PERFMAP=1 valgrind --tool=callgrind --callgrind-out-file="$scratch/$1.out" "$tool" "$2" \
        2>"$scratch/$1.log" &
    pid=$!
    wait "$pid" || { cat "$scratch/$1.log" >&2; exit 1; }
    mv "/tmp/perf-$pid.map" "$scratch/$1.map"
}
run one 1
run many $((n + 1))
grep -h "reviews of" "$scratch/many.log"
for run in one many; do
    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$scratch/$run.out" \
        >"$scratch/$run.txt" 2>/dev/null
done
# Names demangled (c++filt reads both of rustc's manglings), without hashes.
python3 - "$scratch" "$n" "$top" <<'PY' | c++filt | sed -E 's/::h[0-9a-f]{16}//; s/\[[0-9a-f]{16}\]//g'
import bisect, collections, re, sys
scratch, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def costs(run):
    """Self cost per function, JIT addresses named by the perf map."""
    spans = sorted(
        (int(a, 16), int(s, 16), name)
        for a, s, name in (l.rstrip("\n").split(" ", 2) for l in open(f"{scratch}/{run}.map"))
    )
    starts = [s[0] for s in spans]
    total = collections.Counter()
    for line in open(f"{scratch}/{run}.txt"):
        m = re.match(r"\s*([\d,]+)\s+\([ \d.%]+\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        cost, where = int(m.group(1).replace(",", "")), m.group(2)
        name = None
        address = re.match(r"\?\?\?:0x([0-9a-fA-F]+)", where)
        if address:
            at = int(address.group(1), 16)
            k = bisect.bisect_right(starts, at) - 1
            if k >= 0 and at < spans[k][0] + spans[k][1]:
                name = "guest " + spans[k][2]
        if name is None:
            name = "host  " + re.sub(r" \[.*$", "", re.sub(r"^[^:]*:", "", where))
        total[name] += cost
    return total

one, many = costs("one"), costs("many")
per_review = {k: (many[k] - one.get(k, 0)) / n for k in many}
guest = sum(v for k, v in per_review.items() if k.startswith("guest"))
print(f"{sum(per_review.values()):9.0f}  all, per review")
print(f"{guest:9.0f}  guest code (the rest: wasmtime's call, lifting and lowering, the host's memcpy)")
for name, cost in sorted(per_review.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{cost:9.0f}  {name}")
PY
