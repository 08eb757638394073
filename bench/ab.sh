#!/usr/bin/env bash
# Compares two builds of quorum-server (before and after a change) in one
# run: each serves three identical files of SIZE in the page cache (DIR,
# /dev/shm by default), and they take turns, the order alternating from
# round to round, under fio's nbd engine (4 KiB random reads and writes at
# QD32) and wrk (4 KiB Range reads at concurrency 16). Prints each load's
# median rate with its range and the median CPU time per request (user +
# system of all the server's threads, from /proc/PID/stat), and the ratio
# of the medians after/before.
#
#   bench/ab.sh BEFORE/quorum-server AFTER/quorum-server
#   ROUNDS=5 RUNTIME=8 SIZE=256M LOADS="randread randwrite http4k" bench/ab.sh A B
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -eq 2 ] || { echo "usage: $0 BEFORE-SERVER AFTER-SERVER" >&2; exit 2; }
declare -A bin=([before]=$1 [after]=$2)
rounds=${ROUNDS:-5}
runtime=${RUNTIME:-8}
size=${SIZE:-256M}
loads=${LOADS:-randread randwrite http4k}
need fio "Debian's fio"
need wrk "apt-get install wrk"
need python3 "Debian's python3"
dir=$(mktemp -d "${DIR:-/dev/shm}/quorum-ab.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

declare -A pid nbd http
for v in before after; do
    mkdir "$dir/$v"
    raw_children "$dir/$v" "$size" a b c
    quorum_config "$dir/$v"
    "${bin[$v]}" --config "$dir/$v/quorum.toml" --listen 127.0.0.1:0 > "$dir/$v/out" 2> "$dir/$v/err" &
    pid[$v]=$!; pids+=("$!")
    wait_for_line "$dir/$v/out" '^nbd listening on nbd://'
    nbd[$v]="$(sed -nE 's/^nbd listening on (nbd:\/\/.*)/\1/p' "$dir/$v/out")/vm"
    http[$v]=$(sed -nE 's/listening on http:\/\/(.*)/\1/p' "$dir/$v/out")
done
bytes=$(stat -c %s "$dir/before/a.img")
tick=$(getconf CLK_TCK)
cat > "$dir/read.lua" <<LUA
local size, len = $bytes, 4096
math.randomseed(os.time())
request = function()
  local off = math.random(0, math.floor((size - len) / len)) * len
  return wrk.format("GET", wrk.path, { ["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) })
end
LUA

measure() { # version load -> "RATE CPU-µs-per-request"
    local v=$1 load=$2 before after rate
    before=$(cpu_ticks "${pid[$v]}")
    case $load in
        http4k)
            rate=$(wrk -t 2 -c 16 -d "${runtime}s" -s "$dir/read.lua" "http://${http[$v]}/v1/volumes/vm/data" \
                | awk '/Requests\/sec/ {print $2}');;
        *)
            fio --name=ab --ioengine=nbd --uri="${nbd[$v]}" --rw="$load" --bs=4k --iodepth=32 \
                --size="$bytes" --time_based --runtime="$runtime" --norandommap --randrepeat=0 \
                --output-format=json --output="$dir/fio.json" > "$dir/fio.out" 2>&1 \
                || { echo "error: fio failed:" >&2; cat "$dir/fio.out" >&2; exit 1; }
            rate=$(python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(round((j["read"] if j["read"]["total_ios"] else j["write"])["iops"]))' "$dir/fio.json");;
    esac
    after=$(cpu_ticks "${pid[$v]}")
    [ -n "$rate" ] || { echo "error: $load against $v gave no rate" >&2; exit 1; }
    echo "$rate $(awk -v t=$((after - before)) -v k="$tick" -v r="$rate" -v d="$runtime" 'BEGIN {printf "%.1f", t / k * 1e6 / (r * d)}')"
}

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); files of $size in $dir; $rounds rounds of ${runtime} s"
declare -A rates cpus
for load in $loads; do
    for r in $(seq "$rounds"); do
        order="before after"
        [ $((r % 2)) -eq 0 ] && order="after before"
        for v in $order; do
            read -r rate cpu < <(measure "$v" "$load")
            rates[$load|$v]+="$rate "; cpus[$load|$v]+="$cpu "
            echo "   $load round $r, $v: $rate req/s, $cpu µs CPU/request (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        done
    done
done
med() { tr ' ' '\n' <<< "$1" | grep . | median; }
range() { tr ' ' '\n' <<< "$1" | grep . | sort -g | sed -n '1p;$p' | paste -sd-; }
printf '\n%-10s %34s %34s %7s\n' "load" "before: req/s [range], µs CPU/req" "after: req/s [range], µs CPU/req" "ratio"
for load in $loads; do
    cells=()
    for v in before after; do
        cells+=("$(printf '%8.0f [%s] %6s' "$(med "${rates[$load|$v]}")" "$(range "${rates[$load|$v]}")" "$(med "${cpus[$load|$v]}")")")
    done
    printf '%-10s %34s %34s %6.2fx\n' "$load" "${cells[@]}" \
        "$(awk -v a="$(med "${rates[$load|after]}")" -v b="$(med "${rates[$load|before]}")" 'BEGIN {print a / b}')"
done
echo "(medians of $rounds alternating rounds; load at end $(cut -d' ' -f1-3 /proc/loadavg))"
