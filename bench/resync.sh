#!/usr/bin/env bash
# Measures the resync of file children: its throughput, and the latency of
# client 4 KiB reads and writes while it runs, with the rate limit off and
# at RATE, against the same client on the same volume with nothing stale.
# A volume of three file children starts with SIZE bytes of child c marked
# stale (its stale-map journal written before the start, as a crash would
# leave it), so the resync copies them from a and b. Each round runs the
# unlimited resync, then the idle volume for IDLE seconds, then the
# limited resync; the summary gives the median and the range over ROUNDS.
#
#   bench/resync.sh                  # SIZE=2G RATE=64MiB IDLE=10 ROUNDS=3
#   RUNS=none ROUNDS=1 bench/resync.sh   # the unlimited resync alone
#       (RUNS: some of "none idle limit"; none makes c a copy of a for the
#       others, and limit's p99 ratio needs idle)
#   SERVER=path/to/quorum-server bench/resync.sh   # another build
#
# The resync's time runs from the server's start (it starts resyncing at
# once) until the client sees nothing stale.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size=${SIZE:-2G}
rate=${RATE:-64MiB}
idle=${IDLE:-10}
rounds=${ROUNDS:-3}
runs=${RUNS:-none idle limit}
has() { case " $runs " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if ! has none || { has limit && ! has idle; }; then
    echo "error: RUNS='$runs': none is needed, and idle with limit" >&2
    exit 1
fi
server=${SERVER:-$(release_bin quorum-server)}
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-resync.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid"; rm -rf "$dir"; }
trap cleanup EXIT
head -c "$size" /dev/urandom > "$dir/a.img"
cp "$dir/a.img" "$dir/b.img"
truncate -s "$(stat -c %s "$dir/a.img")" "$dir/c.img"   # c: all zeros, all stale
bytes=$(stat -c %s "$dir/a.img")
# The copies are written out first, so that no run pays for their writeback.
sync "$dir"/*.img

run() { # resync_rate stale|idle -> "MiB/s p50 p99 requests p99-reads p99-writes" in $dir/last (MiB/s 0 when idle)
    local limit=$1 stale=$2
    rm -rf "$dir/state"; mkdir -p "$dir/state/stale"
    if [ "$stale" = stale ]; then
        printf '{"op":"+","child":"c","start":0,"end":%s}\n' "$bytes" > "$dir/state/stale/vm.jsonl"
    fi
    cat > "$dir/q.toml" <<TOML
data_dir = "state"
resync_rate = "$limit"
[[volume]]
name = "vm"
vote_threshold = 2
  [[volume.child]]
  name = "a"
  uri = "a.img"
  [[volume.child]]
  name = "b"
  uri = "b.img"
  [[volume.child]]
  name = "c"
  uri = "c.img"
TOML
    # No line of the last run's may be taken for this one's.
    rm -f "$dir/out"
    local started; started=$(date +%s.%N)
    "$server" --config "$dir/q.toml" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
    pid=$!
    wait_for_line "$dir/out" 'listening on'
    local addr; addr=$(sed -nE 's/listening on http:\/\/(.*)/\1/p' "$dir/out")
    python3 - "$addr" "$bytes" "$stale" "$idle" "$started" > "$dir/last" <<'PY'
import http.client, json, os, random, sys, time
addr, size, stale_run, idle, started = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "stale", float(sys.argv[4]), float(sys.argv[5])
host, port = addr.split(":")
c = http.client.HTTPConnection(host, int(port))
def call(method, path, body=None, headers={}):
    c.request(method, path, body=body, headers=headers); r = c.getresponse(); data = r.read(); return r.status, data
def stale():
    return json.loads(call("GET", "/v1/volumes/vm")[1])["children"][2]["stale_bytes"]
if not stale_run and stale() != 0:
    sys.exit("the idle volume has stale bytes")
start = time.time(); lat = []; by_kind = {"r": [], "w": []}; payload = os.urandom(4096)
while True:
    s = stale()
    if stale_run and s == 0:
        break
    if not stale_run and time.time() - start >= idle:
        break
    for _ in range(20):
        off = random.randrange(0, size // 4096) * 4096
        t = time.perf_counter()
        if random.random() < 0.5:
            kind = "r"; st, _ = call("GET", "/v1/volumes/vm/data", headers={"Range": f"bytes={off}-{off+4095}"}); assert st == 206, st
        else:
            kind = "w"; st, _ = call("PUT", f"/v1/volumes/vm/data?offset={off}", body=payload); assert st == 204, st
        lat.append(time.perf_counter() - t); by_kind[kind].append(lat[-1])
    if time.time() - start > 600:
        sys.exit("the resync did not finish in 10 minutes")
took = time.time() - (started if stale_run else start)
def p(q, l=lat):
    l.sort()
    return l[min(len(l) - 1, int(q * len(l)))] * 1000 if l else float("nan")
print(f"{size / took / 2**20 if stale_run else 0:.1f} {p(0.5):.3f} {p(0.99):.3f} {len(lat)} {p(0.99, by_kind['r']):.3f} {p(0.99, by_kind['w']):.3f}")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    if ! cmp -s "$dir/a.img" "$dir/c.img"; then
        echo "error: c differs from a after the run" >&2
        exit 1
    fi
}

# stats: "median (min-max)" of the numbers on stdin, one a line.
stats() { sort -g | awk '{a[NR]=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.2f (%.2f-%.2f)", m, a[1], a[NR]}'; }

echo "resync of $((bytes >> 20)) MiB onto a file child, 2 other file children, $rounds rounds:"
printf '  %-7s %-14s %8s %7s %7s %7s %7s %8s %8s\n' round run "MiB/s" "p50 ms" "p99 ms" "p99 rd" "p99 wr" requests "p99/idle"
: > "$dir/results"
for round in $(seq "$rounds"); do
    for what in "none 100GiB stale" "idle $rate idle" "limit $rate stale"; do
        set -- $what
        has "$1" || continue
        run "$2" "$3"
        read -r mibs p50 p99 n rp99 wp99 < "$dir/last"
        case $1 in
            none) label="no limit"; ratio=- ;;
            idle) label="idle"; ratio=-; idle_p99=$p99 ;;
            limit) label="$rate/s"; ratio=$(awk -v a="$p99" -v b="$idle_p99" 'BEGIN {printf "%.2f", a / b}') ;;
        esac
        printf '  %-7s %-14s %8s %7s %7s %7s %7s %8s %8s\n' "$round" "$label" "$mibs" "$p50" "$p99" "$rp99" "$wp99" "$n" "$ratio"
        echo "$1 $mibs $p50 $p99 $ratio" >> "$dir/results"
    done
done
col() { awk -v k="$1" -v c="$2" '$1 == k {print $c}' "$dir/results" | stats; }
echo "median (min-max) over $rounds rounds:"
echo "  no limit:  $(col none 2) MiB/s, client p99 $(col none 4) ms"
has idle && echo "  idle:      client p50 $(col idle 3) ms, p99 $(col idle 4) ms"
has limit && echo "  $rate/s: $(col limit 2) MiB/s, client p99 $(col limit 4) ms, p99 / idle p99 $(col limit 5)"
true
