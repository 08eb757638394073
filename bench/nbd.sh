#!/usr/bin/env bash
# Compares quorum's NBD export with QEMU's own quorum driver exported over
# NBD, and with a single-file export as the ceiling, all driven by fio's
# nbd engine (libnbd, one connection):
#
#   quorum       quorum-server (release), 3 file children, vote_threshold 2
#   QEMU quorum  qemu-storage-daemon: driver=quorum, vote-threshold=2, over
#                three raw/file children (aio=io_uring, cache.direct=off),
#                --export type=nbd
#   single       qemu-storage-daemon exporting one raw file (aio=io_uring,
#                cache.direct=off): one copy, no vote
#
# on files of SIZE bytes in the page cache (in DIR, /var/tmp by default: a
# disk file system, where QEMU's io_uring and quorum's reads both read
# cached data without a thread hand-off; on tmpfs neither can), for
# 4 KiB random reads at QD32, 4 KiB random writes at QD32 and 1 MiB
# sequential reads at QD8. Each workload runs ROUNDS rounds of RUNTIME
# seconds per peer, the peers' order rotating from round to round; it
# prints the medians of IOPS and MiB/s, the medians of the per-round ratios
# quorum/QEMU-quorum and quorum/single (IOPS), and each server's CPU time
# (user + system, all threads, from /proc/PID/stat) per request.
#
#   bench/nbd.sh                          # SIZE=1G ROUNDS=3 RUNTIME=10
#   SIZE=256M ROUNDS=1 RUNTIME=3 bench/nbd.sh
#   AIO=threads DIR=/dev/shm bench/nbd.sh   # QEMU's thread pool; files in tmpfs
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size=${SIZE:-1G}
rounds=${ROUNDS:-3}
runtime=${RUNTIME:-10}
need fio "Debian's fio"
need qemu-storage-daemon "Debian's qemu-utils"
need qemu-io "Debian's qemu-utils"
need nbdinfo "Debian's libnbd-bin"
need python3 "Debian's python3"

server=$(release_bin quorum-server)
dir=$(mktemp -d "${DIR:-/var/tmp}/quorum-nbd.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

raw_children "$dir" "$size" a b c single
bytes=$(stat -c %s "$dir/a.img")
tick=$(getconf CLK_TCK)

# QEMU's file driver: io_uring (AIO=threads to compare) if this kernel and
# build allow it.
aio=${AIO:-io_uring}
if ! qemu-io --image-opts -c 'read 0 4k' \
        "driver=raw,file.driver=file,file.filename=$dir/single.img,file.aio=$aio" >/dev/null 2>&1; then
    echo "!!!!!!!! NOTE: aio=$aio does not work here; QEMU's peers run with aio=threads !!!!!!!!" >&2
    aio=threads
fi

# --- quorum ----------------------------------------------------------------
quorum_config "$dir"
"$server" --config "$dir/quorum.toml" --listen 127.0.0.1:0 > "$dir/quorum.out" 2> "$dir/quorum.err" &
quorum_pid=$!; pids+=("$quorum_pid")
wait_for_line "$dir/quorum.out" '^nbd listening on nbd://'
quorum_uri="$(sed -nE 's/^nbd listening on (nbd:\/\/.*)/\1/p' "$dir/quorum.out")/vm"

# --- qemu-storage-daemon ---------------------------------------------------
file_node() { # node-name file
    echo "driver=file,node-name=$1,filename=$2,aio=$aio,cache.direct=off"
}
start_qsd() { # name port blockdev-args... ; the export's node is "top"
    local name=$1 port=$2 _
    shift 2
    qemu-storage-daemon "$@" \
        --nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$port" \
        --export "type=nbd,id=export0,node-name=top,name=vm,writable=on" \
        > "$dir/$name.log" 2>&1 &
    pids+=("$!")
    eval "${name}_pid=$!"
    for _ in $(seq 100); do
        nbdinfo --size "nbd://127.0.0.1:$port/vm" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: qemu-storage-daemon ($name) did not serve nbd://127.0.0.1:$port/vm:" >&2
    cat "$dir/$name.log" >&2
    exit 1
}
qport=$(free_port)
start_qsd qemu "$qport" \
    --blockdev "$(file_node fa "$dir/a.img")" --blockdev driver=raw,node-name=ra,file=fa \
    --blockdev "$(file_node fb "$dir/b.img")" --blockdev driver=raw,node-name=rb,file=fb \
    --blockdev "$(file_node fc "$dir/c.img")" --blockdev driver=raw,node-name=rc,file=fc \
    --blockdev driver=quorum,node-name=top,vote-threshold=2,children.0=ra,children.1=rb,children.2=rc
qemu_uri="nbd://127.0.0.1:$qport/vm"
sport=$(free_port)
start_qsd single "$sport" \
    --blockdev "$(file_node fs "$dir/single.img")" --blockdev driver=raw,node-name=top,file=fs
single_uri="nbd://127.0.0.1:$sport/vm"

# --- the runs --------------------------------------------------------------
peers=(quorum qemu single)
declare -A label=([quorum]="quorum" [qemu]="QEMU quorum" [single]="single file")
# name | fio rw | block size | queue depth
workloads=(
    "4 KiB random reads, QD32|randread|4k|32"
    "4 KiB random writes, QD32|randwrite|4k|32"
    "1 MiB sequential reads, QD8|read|1M|8"
)

measure() { # peer rw bs qd -> "IOPS MiB/s CPU-µs-per-request"
    local peer=$1 rw=$2 bs=$3 qd=$4 uri pid before after
    uri="${peer}_uri"; pid="${peer}_pid"
    before=$(cpu_ticks "${!pid}")
    fio --name=bench --ioengine=nbd --uri="${!uri}" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="$bytes" --time_based --runtime="$runtime" --norandommap --randrepeat=0 \
        --output-format=json --output="$dir/fio.json" > "$dir/fio.out" 2>&1 \
        || { echo "error: fio against ${label[$peer]} failed:" >&2; cat "$dir/fio.out" >&2; exit 1; }
    after=$(cpu_ticks "${!pid}")
    python3 - "$dir/fio.json" "$((after - before))" "$tick" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
if job["error"]:
    sys.exit(f"fio reported error {job['error']}")
side = job["read"] if job["read"]["total_ios"] else job["write"]
ios = side["total_ios"]
if not ios:
    sys.exit("fio did no I/O")
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) / ios * 1e6
print(f"{side['iops']:.0f} {side['bw_bytes'] / 2**20:.1f} {cpu_us:.1f}")
PY
}

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(qemu-storage-daemon --version | head -1); $(fio --version)"
echo "== children of $size in $dir (page cache); QEMU's peers: aio=$aio, cache.direct=off"
echo "== $rounds rounds of ${runtime} s per workload and peer, the peers' order rotating"
declare -A iops mibs cpu ratio_q ratio_s
for w in "${workloads[@]}"; do
    IFS='|' read -r name rw bs qd <<< "$w"
    for r in $(seq 0 $((rounds - 1))); do
        declare -A got=()
        for k in 0 1 2; do
            peer=${peers[$(((r + k) % 3))]}
            measure "$peer" "$rw" "$bs" "$qd" > "$dir/measure.txt"
            read -r i m c < "$dir/measure.txt"
            got[$peer]=$i
            iops[$name|$peer]+="$i "; mibs[$name|$peer]+="$m "; cpu[$name|$peer]+="$c "
            echo "   round $((r + 1)) $name, ${label[$peer]}: $i IOPS, $m MiB/s, $c µs CPU/request" >&2
        done
        ratio_q[$name]+="$(awk -v a="${got[quorum]}" -v b="${got[qemu]}" 'BEGIN {printf "%.3f", a/b}') "
        ratio_s[$name]+="$(awk -v a="${got[quorum]}" -v b="${got[single]}" 'BEGIN {printf "%.3f", a/b}') "
    done
done

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
printf '\n%-28s %26s %26s %26s %12s %14s\n' "workload (medians)" "quorum" "QEMU quorum" "single file" "quorum/QEMU" "quorum/single"
for w in "${workloads[@]}"; do
    IFS='|' read -r name _ <<< "$w"
    cells=()
    for peer in "${peers[@]}"; do
        cells+=("$(printf '%.0f IOPS %8.1f MiB/s' "$(med "${iops[$name|$peer]}")" "$(med "${mibs[$name|$peer]}")")")
    done
    printf '%-28s %26s %26s %26s %11.2fx %13.2fx\n' "$name" "${cells[@]}" \
        "$(med "${ratio_q[$name]}")" "$(med "${ratio_s[$name]}")"
done
printf '\n%-28s %12s %12s %12s\n' "CPU µs per request" "quorum" "QEMU quorum" "single file"
for w in "${workloads[@]}"; do
    IFS='|' read -r name _ <<< "$w"
    printf '%-28s %12.1f %12.1f %12.1f\n' "$name" \
        "$(med "${cpu[$name|quorum]}")" "$(med "${cpu[$name|qemu]}")" "$(med "${cpu[$name|single]}")"
done
echo "(medians of $rounds rounds of ${runtime} s; ratios are medians of the per-round IOPS ratios)"
