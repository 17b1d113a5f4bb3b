#!/usr/bin/env bash
# Fetches the Kafka jars the real-Kafka proof runs (tests/tests/kafka_cluster.rs)
# from Maven Central, as pom.xml here declares them, into a cache outside the
# work tree keyed by this script and the pom, so a warm run fetches nothing.
# Prints the directory of jars (the classpath) on its last line; `current`
# in the cache points at it too. An argument names another pom (a version):
# its link is `current-<pom name>` (`pom-zookeeper.xml`: Kafka 3.9, the last
# line with ZooKeeper mode, for the cp-helm-charts proof).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${STRADDLE_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/straddle/kafka}
pom=${1:-$here/pom.xml}

key=$(cat "$here/fetch.sh" "$pom" | sha256sum | cut -c1-16)
out="$cache/$key"
if [ ! -f "$out/.complete" ]; then
    rm -rf "$out.partial"
    mkdir -p "$out.partial"
    mvn -q -B -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$out.partial" >&2
    touch "$out.partial/.complete"
    rm -rf "$out"
    mv "$out.partial" "$out"
fi
# The test harness looks here when STRADDLE_KAFKA_JARS is unset.
link=current
[ "$pom" = "$here/pom.xml" ] || link="current-$(basename "$pom" .xml)"
ln -sfn "$key" "$cache/$link"
echo "$out"
