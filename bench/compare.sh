#!/usr/bin/env bash
# Compares the quorum engine (quorum-bench) with QEMU's quorum driver
# (qemu-img bench) on the same three raw files in the page cache, with the
# same request sizes, depths and counts, QEMU's file nodes at aio=threads
# (its default) and at aio=io_uring, alternating the three over several
# rounds. Prints each workload's median ops/s and CPU time per request
# (user + system, from /usr/bin/time) of each, and the medians of the
# per-round ratios quorum/QEMU.
#
# quorum-bench runs with --started: one thread keeps the requests in flight
# without blocking and is woken by their completions, as the server's NBD
# and HTTP front ends drive the engine, and as qemu-img bench runs one
# event loop (QUORUM_BENCH_ARGS= for the blocking calls of `depth` threads).
#
#   bench/compare.sh                 # ROUNDS=5 SIZE=1G by default
#   ROUNDS=3 SIZE=256M bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${ROUNDS:-5}
size=${SIZE:-1G}
quorum_args=${QUORUM_BENCH_ARGS---started}
need qemu-img "Debian's qemu-utils"
need /usr/bin/time "Debian's time"

bench=$(release_bin quorum-bench)
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); three raw children of $size in $dir"
raw_children "$dir" "$size" a b c

qemu_json() { # read-pattern aio
    local pattern=$1 aio=$2 children="" f
    for f in a b c; do
        children+="${children:+,}{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"aio\":\"$aio\",\"filename\":\"$dir/$f.img\"}}"
    done
    printf 'json:{"driver":"quorum","vote-threshold":2,"read-pattern":"%s","children":[%s]}' "$pattern" "$children"
}
# Checks that QEMU can open a file with aio=io_uring here.
qemu-img bench -c 1 "$(qemu_json quorum io_uring)" > /dev/null 2>&1 \
    || { echo "error: qemu-img cannot use aio=io_uring on this machine" >&2; exit 1; }

# timed COMMAND...: "SECONDS CPU-SECONDS" of a run, SECONDS as the tool says.
timed() {
    local out
    out=$({ /usr/bin/time -f "cpu %U %S" "$@"; } 2>&1)
    printf '%s %s\n' \
        "$(sed -nE 's/.*Run completed in ([0-9.]+) seconds.*/\1/p; s/.* in ([0-9.]+) s:.*/\1/p' <<< "$out" | head -1)" \
        "$(awk '/^cpu / {print $2 + $3}' <<< "$out")"
}

# name | pattern | qemu-img bench args | quorum-bench args
workloads=(
    "4 KiB writes, QD16|quorum|-w -s 4k -d 16 -c 300000|-w -s 4KiB -d 16 -c 300000"
    "4 KiB quorum reads, QD16|quorum|-s 4k -d 16 -c 400000|-s 4KiB -d 16 -c 400000"
    "4 KiB fifo reads, QD16|fifo|-s 4k -d 16 -c 1000000|--pattern fifo -s 4KiB -d 16 -c 1000000"
    "1 MiB quorum reads, QD4|quorum|-s 1M -d 4 -c 2000|-s 1MiB -d 4 -c 2000"
)
peers=(threads io_uring quorum)

printf '\n%-26s %20s %20s %20s %9s %21s\n' "workload (ops/s, CPU us)" \
    "QEMU aio=threads" "QEMU aio=io_uring" "quorum" "/threads" "/io_uring (range)"
for w in "${workloads[@]}"; do
    IFS='|' read -r name pattern qargs bargs <<< "$w"
    count=$(sed -E 's/.*-c ([0-9]+).*/\1/' <<< "$qargs")
    declare -A ops=() cpu=() got=()
    ratio_t="" ratio_u=""
    for _ in $(seq "$rounds"); do
        for peer in "${peers[@]}"; do
            if [ "$peer" = quorum ]; then
                # shellcheck disable=SC2086
                read -r t c < <(timed "$bench" $quorum_args $bargs "$dir/a.img" "$dir/b.img" "$dir/c.img")
            else
                # shellcheck disable=SC2086
                read -r t c < <(timed qemu-img bench $qargs "$(qemu_json "$pattern" "$peer")")
            fi
            [ -n "$t" ] && [ -n "$c" ] || { echo "error: a run printed no time ($name, $peer)" >&2; exit 1; }
            got[$peer]=$(awk -v n="$count" -v t="$t" 'BEGIN {printf "%.0f", n/t}')
            ops[$peer]+="${got[$peer]} "
            cpu[$peer]+="$(awk -v n="$count" -v c="$c" 'BEGIN {printf "%.1f", c*1e6/n}') "
        done
        ratio_t+="$(awk -v q="${got[quorum]}" -v b="${got[threads]}" 'BEGIN {printf "%.2f", q/b}') "
        ratio_u+="$(awk -v q="${got[quorum]}" -v b="${got[io_uring]}" 'BEGIN {printf "%.2f", q/b}') "
    done
    med() { tr ' ' '\n' <<< "$1" | grep . | median; }
    cells=()
    for peer in "${peers[@]}"; do
        cells+=("$(printf '%9s %6s us' "$(med "${ops[$peer]}")" "$(med "${cpu[$peer]}")")")
    done
    range=$(tr ' ' '\n' <<< "$ratio_u" | grep . | sort -n | sed -n '1p;$p' | paste -sd-)
    printf '%-26s %20s %20s %20s %8sx %8sx (%s)\n' "$name" "${cells[@]}" "$(med "$ratio_t")" "$(med "$ratio_u")" "$range"
done
echo "(medians of $rounds alternating rounds; ratios are medians of the per-round ops/s ratios, with their range; load at end $(cut -d' ' -f1-3 /proc/loadavg))"
