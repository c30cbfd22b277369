#!/bin/sh
# A real application end to end (README, "A real application: a JVM heap"): capture the Java
# heap of a JVM building and querying a 300,000-entry HashMap, with its post-snapshot access
# trace, then run every strategy and a few checkpoint cycles on it. Needs root (capture),
# perf, zram and a JDK. Usage: examples/jvm_heap.sh [DIR]   (default /tmp/wpcompare-jvm-heap)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-/tmp/wpcompare-jvm-heap}
mkdir -p "$dir/traces"
cd "$dir"
step() { echo "== $*" >&2; start=$(date +%s); "$@"; echo "== took $(( $(date +%s) - start )) s" >&2; }

javac -d . "$here/MapWorkload.java"
# -Xms = -Xmx: the heap is one committed 256 MiB mapping from the start, the largest one.
jvm="java -XX:+UseSerialGC -Xms256m -Xmx256m -cp . MapWorkload 300000 30"
step wpcompare capture --mapping largest --image heap.img --window 5 --delay 4 -- $jvm
# Two more restores' worth of traces, for one trace per cycle (their images are not needed).
for k in 2 3; do
    step wpcompare capture --mapping largest --image "traces/heap-$k.img" \
        --trace "traces/cycle-$k.trace" --window 5 --delay 4 -- $jvm
    rm "traces/heap-$k.img"
done
cp heap.img.trace traces/cycle-1.trace

step wpcompare trace show heap.img.trace
# Every strategy on the heap, replaying its trace.
step wpcompare run --image heap.img --pattern trace:heap.img.trace --repeat 5 --warmup 1 \
    -q -o heap-run.json
# The same pattern kind on a synthetic image of the same size, for the ranking's comparison.
step wpcompare run --size 256M --image-kind mixed --pattern random --op both --repeat 5 \
    --warmup 1 -q -o synthetic-run.json
# Zero pages: copied, or mapped with UFFDIO_ZEROPAGE (58% of this heap is zero).
step wpcompare run --image heap.img --pattern trace:heap.img.trace --repeat 5 --warmup 1 -q \
    -s uffd -s uffd:zero=zeropage -s uffd-move -s uffd-move:zero=zeropage \
    -s uffd-sigbus -s uffd-sigbus:zero=zeropage -s uffd-hybrid -s uffd-hybrid:zero=zeropage \
    -o heap-zero.json
# The recorded-order prefetch: one run records the fault order, then it is prefetched.
step wpcompare run --image heap.img --pattern trace:heap.img.trace --repeat 1 --warmup 0 -q \
    --latency off --no-bounds -s uffd-hybrid:loader-threads=0,path=heap.order
step wpcompare run --image heap.img --pattern trace:heap.img.trace --repeat 5 --warmup 1 -q \
    -s uffd-hybrid -s uffd-hybrid:order=recorded,path=heap.order \
    -s uffd-hybrid:order=recorded,path=heap.order,zero=zeropage -o heap-recorded.json
# Checkpoint cycles on the heap: the same trace each cycle, then one trace per cycle.
step wpcompare cycle --image heap.img --pattern trace:heap.img.trace --cycles 3 -o heap-cycle.json
step wpcompare cycle --image heap.img --pattern trace:traces --cycles 3 -o heap-cycle-traces.json
