#!/bin/sh
# Instructions per review, per case of tests/benches/latency.rs, with the
# object sent compact: in a warm instance (the call only, as the webhook runs
# most reviews) and in a fresh one (instantiate + call + drop), and the whole
# AdmissionReview read once by the module in a warm instance (the webhook's
# path since review-admission). callgrind counts a run with N+1 reviews and
# a run with one; the difference over N is one review. Only instructions
# inside `Policy::review_within` or `Policy::review_admission_within` count
# (on the calling thread, JIT code included), so the epoch thread's ticks do not:
# repeated runs agree to within 0.2 %. Stable on a shared VM where wall
# time is not.
#
#   tests/tools/review-instructions.sh [N]      (needs valgrind)
set -eu
n=${1:-500}
cd "$(dirname "$0")/../.."
bench=$(cargo bench -p straddle-tests --bench latency --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*latency[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bench" ] || { echo "latency bench not built" >&2; exit 1; }
cases=$(sed -n 's/^        name: "\(.*\)",$/\1/p' tests/benches/latency.rs)
count() {
    STRADDLE_WARM_INSTANCES=$3 STRADDLE_LATENCY_CASE=$1 STRADDLE_LATENCY_PROFILE_ROUNDS=$2 \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            --toggle-collect='straddle_policy_host::Policy::review_within' \
            --toggle-collect='straddle_policy_host::Policy::review_admission_within' \
            "$bench" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_review() {
    base=$(count "$1" 1 "$2")
    with=$(count "$1" $((n + 1)) "$2")
    echo $(((with - base) / n))
}
i=0
echo "$cases" | while IFS= read -r name; do
    warm=$(per_review "$i" 1)
    fresh=$(per_review "$i" 0)
    body=$(STRADDLE_LATENCY_BODY=1 per_review "$i" 1)
    echo "$name: $warm instructions per review in a warm instance, $fresh in a fresh one; the whole AdmissionReview read once, warm: $body"
    i=$((i + 1))
done
