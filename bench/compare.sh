#!/usr/bin/env bash
# Compares the quorum engine (quorum-bench) with QEMU's quorum driver
# (qemu-img bench) on the same three raw files in the page cache, with the
# same request sizes, depths and counts, alternating the two over several
# rounds, and prints each workload's median ops/s and the median ratio.
#
#   bench/compare.sh                 # ROUNDS=5 SIZE=1G by default
#   ROUNDS=3 SIZE=256M bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${ROUNDS:-5}
size=${SIZE:-1G}
need qemu-img "Debian's qemu-utils"

bench=$(release_bin quorum-bench)
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "== three raw children of $size in $dir"
raw_children "$dir" "$size" a b c

qemu_json() {
    local pattern=$1 children="" f
    for f in a b c; do
        children+="${children:+,}{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"$dir/$f.img\"}}"
    done
    printf 'json:{"driver":"quorum","vote-threshold":2,"read-pattern":"%s","children":[%s]}' "$pattern" "$children"
}

# name | pattern | qemu-img bench args | quorum-bench args
workloads=(
    "4 KiB writes, QD16|quorum|-w -s 4k -d 16 -c 100000|-w -s 4KiB -d 16 -c 100000"
    "4 KiB quorum reads, QD16|quorum|-s 4k -d 16 -c 100000|-s 4KiB -d 16 -c 100000"
    "4 KiB fifo reads, QD16|fifo|-s 4k -d 16 -c 100000|--pattern fifo -s 4KiB -d 16 -c 100000"
    "1 MiB quorum reads, QD4|quorum|-s 1M -d 4 -c 2000|-s 1MiB -d 4 -c 2000"
)

printf '\n%-28s %14s %14s %8s\n' "workload" "QEMU ops/s" "quorum ops/s" "ratio"
for w in "${workloads[@]}"; do
    IFS='|' read -r name pattern qargs bargs <<< "$w"
    count=$(sed -E 's/.*-c ([0-9]+).*/\1/' <<< "$qargs")
    json=$(qemu_json "$pattern")
    q_ops=() b_ops=() ratios=()
    for _ in $(seq "$rounds"); do
        # shellcheck disable=SC2086
        qt=$(qemu-img bench $qargs "$json" 2>&1 | sed -nE 's/.*Run completed in ([0-9.]+) seconds.*/\1/p')
        # shellcheck disable=SC2086
        bt=$("$bench" $bargs "$dir/a.img" "$dir/b.img" "$dir/c.img" | sed -nE 's/.* in ([0-9.]+) s:.*/\1/p')
        [ -n "$qt" ] && [ -n "$bt" ] || { echo "error: a run printed no time ($name)" >&2; exit 1; }
        q=$(awk -v c="$count" -v t="$qt" 'BEGIN {printf "%.0f", c/t}')
        b=$(awk -v c="$count" -v t="$bt" 'BEGIN {printf "%.0f", c/t}')
        q_ops+=("$q") b_ops+=("$b")
        ratios+=("$(awk -v q="$q" -v b="$b" 'BEGIN {printf "%.2f", b/q}')")
    done
    printf '%-28s %14s %14s %7sx\n' "$name" \
        "$(printf '%s\n' "${q_ops[@]}" | median)" \
        "$(printf '%s\n' "${b_ops[@]}" | median)" \
        "$(printf '%s\n' "${ratios[@]}" | median)"
done
echo "(medians of $rounds alternating rounds; ratio = quorum / QEMU)"
