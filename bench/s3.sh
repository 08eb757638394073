#!/usr/bin/env bash
# Compares a quorum volume of three S3 children with the ceiling of the
# object_store client they use, on three real SeaweedFS servers (`weed
# mini`, started with the e2e tests' flags, on 127.0.0.1, each with its own
# data directory in a mktemp directory under DIR, /dev/shm by default):
#
#   quorum   quorum-bench --config: the engine over three s3 children, one
#            per server, vote_threshold 2, the children's default options
#            (256 KiB chunks, or CHUNK), opened as the server opens its
#            config's children
#   direct   quorum-bench --direct: the first child's own object_store
#            client (the same AmazonS3, built from the same options, on a
#            runtime of the same size) storing and fetching whole objects
#            of the request size on the first server: no chunks,
#            conditions, checks or engine
#
# both with the s3 child's max_in_flight (16) requests in flight,
# quorum-bench's default depth, for COUNT 1 MiB sequential writes, READS
# 1 MiB sequential reads of what they wrote, and SMALL 4 KiB random writes
# (quorum: a read-modify-write of a 256 KiB chunk on each child; direct: a
# 4 KiB object). Each of ROUNDS rounds starts three fresh servers, runs
# each workload on both sides (their order alternating from round to
# round), then stops the servers and removes their data (SeaweedFS only
# appends). It prints the medians of ops/s and MiB/s, the per-round ratios
# quorum/direct with their median and min-max, and the CPU time per
# request of quorum-bench (user + system, from /usr/bin/time) and of the
# three servers together (from /proc/PID/stat). A run in which a child
# fails a request or loses a vote stops the script: its figures would be
# of a sick volume.
#
#   bench/s3.sh                             # ROUNDS=3 COUNT=256 READS=1024 SMALL=1000
#   ROUNDS=5 COUNT=512 bench/s3.sh
#   QUORUM_WEED=/path/to/weed DIR=/var/tmp bench/s3.sh
#   CHUNK=1MiB bench/s3.sh                  # the children's chunk_size option
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${ROUNDS:-3}
count=${COUNT:-256}
reads=${READS:-$((4 * count))}
small=${SMALL:-1000}
chunk=${CHUNK:-}
weed=${QUORUM_WEED:-target/test-tools/venv/bin/weed}
[ -x "$weed" ] || { echo "error: $weed is missing (scripts/install-test-deps installs SeaweedFS)" >&2; exit 1; }
need /usr/bin/time "Debian's time"
need python3 "Debian's python3"

bench=$(release_bin quorum-bench)
dir=$(mktemp -d "${DIR:-/dev/shm}/quorum-s3.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
tick=$(getconf CLK_TCK)

# weed_ports N: N lines of five distinct ports whose gRPC twins (+10000)
# are free too, below the ephemeral range, as the e2e tests pick them.
weed_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
taken = set()
for _ in range(int(sys.argv[1])):
    for _ in range(200):
        base = random.randrange(10000, 19995)
        ports = range(base, base + 5)
        if all(p not in taken and free(p) and free(p + 10000) for p in ports):
            taken.update(ports)
            print(*ports)
            break
    else:
        sys.exit("no free ports for a SeaweedFS instance")
PY
}

access=quorum-bench-access
secret=quorum-bench-s3cr3t
bucket=blocks
declare -a weed_pid endpoint

# child NAME ENDPOINT PREFIX [CHUNK]: an s3 child table of the config.
child() {
    printf '  [[volume.child]]\n  name = "%s"\n  uri = "s3://%s/%s"\n' "$1" "$bucket" "$3"
    printf '  options = { aws_endpoint = "%s", aws_allow_http = "true", aws_region = "us-east-1", aws_access_key_id = "%s", aws_secret_access_key = "%s"%s }\n' \
        "$2" "$access" "$secret" "${4:+, chunk_size = \"$4\"}"
}

# start_stores: three fresh SeaweedFS servers, and $dir/s3.toml: the volume
# "vm" of three s3 children, one on each, and "readyK" on server K alone,
# which tells when it serves S3 (its bucket exists and takes a signed PUT).
start_stores() {
    local k=0 d master volume filer s3 admin
    while read -r master volume filer s3 admin; do
        d="$dir/weed$k"
        mkdir -p "$d/data"
        printf '{"identities":[{"name":"quorum","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
            "$access" "$secret" > "$d/s3.json"
        "$weed" -logdir="$d" mini -dir="$d/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
            -master.port="$master" -volume.port="$volume" -filer.port="$filer" -s3.port="$s3" -admin.port="$admin" \
            -s3.port.iceberg=0 -s3.port.lance=0 -admin.ui=false -webdav=false \
            -s3.config="$d/s3.json" -bucket="$bucket" > "$d/weed.log" 2>&1 &
        pids+=("$!")
        weed_pid[k]=$!
        endpoint[k]="http://127.0.0.1:$s3"
        k=$((k + 1))
    done < <(weed_ports 3)
    {
        printf 'data_dir = "state"\n[[volume]]\nname = "vm"\nsize = "%sMiB"\nvote_threshold = 2\n' "$count"
        for k in 0 1 2; do child "s$k" "${endpoint[k]}" vm "$chunk"; done
        for k in 0 1 2; do
            printf '[[volume]]\nname = "ready%s"\nsize = "1MiB"\nvote_threshold = 1\n' "$k"
            child "r$k" "${endpoint[k]}" ready
        done
    } > "$dir/s3.toml"
    for k in 0 1 2; do
        for _ in $(seq 300); do
            "$bench" --config "$dir/s3.toml" --volume "ready$k" --direct -w -c 1 -s 4KiB > "$dir/ready.out" 2>&1 && continue 2
            kill -0 "${weed_pid[k]}" 2>/dev/null || { echo "error: weed $k exited:" >&2; cat "$dir/weed$k/weed.log" >&2; exit 1; }
            sleep 0.1
        done
        echo "error: SeaweedFS $k did not serve S3 within 30 s:" >&2
        cat "$dir/ready.out" "$dir/weed$k/weed.log" >&2
        exit 1
    done
}

# stop_stores: stops the servers and removes their data.
stop_stores() {
    local k
    for k in 0 1 2; do kill "${weed_pid[k]}" 2>/dev/null || true; done
    for k in 0 1 2; do wait "${weed_pid[k]}" 2>/dev/null || true; done
    pids=()
    rm -rf "$dir"/weed?
}

store_ticks() { local t=0 k; for k in 0 1 2; do t=$((t + $(cpu_ticks "${weed_pid[k]}"))); done; echo "$t"; }

measure() { # side requests args... -> "ops/s MiB/s depth client-CPU-µs store-CPU-µs"
    local side=$1 n=$2 before after out figures cpu extra=()
    shift 2
    [ "$side" = direct ] && extra=(--direct)
    before=$(store_ticks)
    out=$({ /usr/bin/time -f "cpu %U %S" "$bench" --config "$dir/s3.toml" "${extra[@]}" "$@"; } 2>&1) \
        || { echo "error: quorum-bench ($side $*) failed:" >&2; echo "$out" >&2; exit 1; }
    after=$(store_ticks)
    # "N ... requests of SIZE in SECONDS s: OPS ops/s, MIB MiB/s (depth D, ...)"
    figures=$(sed -nE 's/.* in ([0-9.]+) s: [0-9]+ ops\/s, ([0-9.]+) MiB\/s \(depth ([0-9]+).*/\1 \2 \3/p' <<< "$out")
    cpu=$(awk '/^cpu / {print $2 + $3}' <<< "$out")
    [ -n "$figures" ] && [ -n "$cpu" ] || { echo "error: no figures in quorum-bench's output:" >&2; echo "$out" >&2; exit 1; }
    awk -v n="$n" -v c="$cpu" -v st="$((after - before))" -v tick="$tick" -v f="$figures" \
        'BEGIN {split(f, x, " "); printf "%.1f %s %s %.0f %.0f\n", n / x[1], x[2], x[3], c * 1e6 / n, st / tick * 1e6 / n}'
}

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $("$weed" version 2>/dev/null | head -1)"
echo "== three fresh SeaweedFS servers a round, in $dir; a volume of ${count} MiB, chunks of ${chunk:-the default size}; $rounds rounds, the sides' order alternating"
sides=(quorum direct)
# name | requests | quorum-bench args
workloads=(
    "1 MiB sequential writes|$count|-w -s 1MiB -c $count"
    "1 MiB sequential reads|$reads|-s 1MiB -c $reads"
    "4 KiB random writes|$small|-w --random -s 4KiB -c $small"
)
declare -A ops mibs ccpu scpu ratios depths
for r in $(seq 0 $((rounds - 1))); do
    start_stores
    for w in "${workloads[@]}"; do
        IFS='|' read -r name n args <<< "$w"
        declare -A got=()
        for j in 0 1; do
            side=${sides[$(((r + j) % 2))]}
            # shellcheck disable=SC2086
            measure "$side" "$n" $args > "$dir/measure.txt"
            read -r o m d c s < "$dir/measure.txt"
            got[$side]=$o
            ops[$name|$side]+="$o "; mibs[$name|$side]+="$m "
            ccpu[$name|$side]+="$c "; scpu[$name|$side]+="$s "
            depths[$name|$side]=$d
            echo "   round $((r + 1)) $name, $side: $o ops/s, $m MiB/s, depth $d, CPU/request: quorum-bench $c µs, stores $s µs" >&2
        done
        [ "${depths[$name|quorum]}" = "${depths[$name|direct]}" ] \
            || { echo "error: the sides ran at depths ${depths[$name|quorum]} and ${depths[$name|direct]}" >&2; exit 1; }
        ratios[$name]+="$(awk -v a="${got[quorum]}" -v b="${got[direct]}" 'BEGIN {printf "%.2f", a/b}') "
    done
    echo "   round $((r + 1)): the servers hold $(du -sh "$dir" | cut -f1); stopped and removed" >&2
    stop_stores
done

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
lo() { tr ' ' '\n' <<< "$1" | grep . | sort -g | head -1; }
hi() { tr ' ' '\n' <<< "$1" | grep . | sort -g | tail -1; }
printf '\n%-26s %5s %26s %26s %22s %s\n' "workload (medians)" depth "quorum" "direct" "quorum/direct" "(per round)"
for w in "${workloads[@]}"; do
    IFS='|' read -r name _ <<< "$w"
    cells=()
    for side in "${sides[@]}"; do
        cells+=("$(printf '%7.1f op/s %7.1f MiB/s' "$(med "${ops[$name|$side]}")" "$(med "${mibs[$name|$side]}")")")
    done
    printf '%-26s %5s %26s %26s %8.2fx [%.2f-%.2f] (%s)\n' "$name" "${depths[$name|quorum]}" "${cells[@]}" \
        "$(med "${ratios[$name]}")" "$(lo "${ratios[$name]}")" "$(hi "${ratios[$name]}")" "${ratios[$name]% }"
done
# The last column is the ratio quorum/direct would have if the CPU alone
# bounded both (all of it busy): the inverse ratio of their CPU per request.
printf '\n%-26s %15s %15s %15s %15s %15s\n' "CPU µs per request" "quorum: bench" "quorum: stores" "direct: bench" "direct: stores" "direct/quorum"
for w in "${workloads[@]}"; do
    IFS='|' read -r name _ <<< "$w"
    qb=$(med "${ccpu[$name|quorum]}"); qs=$(med "${scpu[$name|quorum]}")
    db=$(med "${ccpu[$name|direct]}"); ds=$(med "${scpu[$name|direct]}")
    printf '%-26s %15.0f %15.0f %15.0f %15.0f %14.2fx\n' "$name" "$qb" "$qs" "$db" "$ds" \
        "$(awk -v a="$((${db%.*} + ${ds%.*}))" -v b="$((${qb%.*} + ${qs%.*}))" 'BEGIN {print a / b}')"
done
echo "(medians of $rounds rounds; ratios are quorum/direct ops/s per round; stores: the three servers together; load at end $(cut -d' ' -f1-3 /proc/loadavg))"
