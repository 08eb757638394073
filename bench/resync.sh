#!/usr/bin/env bash
# Measures the resync of file children: its throughput, and the latency of
# client 4 KiB reads and writes while it runs, with the rate limit off and
# on. A volume of three file children starts with SIZE bytes of child c
# marked stale (its stale-map journal written before the start, as a crash
# would leave it), so the resync copies them from a and b.
#
#   bench/resync.sh                  # SIZE=2G, limited RATE=64MiB
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size=${SIZE:-2G}
rate=${RATE:-64MiB}
server=$(release_bin quorum-server)
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-resync.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
head -c "$size" /dev/urandom > "$dir/a.img"
cp "$dir/a.img" "$dir/b.img"
truncate -s "$(stat -c %s "$dir/a.img")" "$dir/c.img"   # c: all zeros, all stale
bytes=$(stat -c %s "$dir/a.img")

run() { # resync_rate -> prints "MiB/s p50 p99" of the resync and client I/O
    local limit=$1
    rm -rf "$dir/state"; mkdir -p "$dir/state/stale"
    printf '{"op":"+","child":"c","start":0,"end":%s}\n' "$bytes" > "$dir/state/stale/vm.jsonl"
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
    "$server" --config "$dir/q.toml" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
    pid=$!
    wait_for_line "$dir/out" 'listening on'
    local addr; addr=$(sed -nE 's/listening on http:\/\/(.*)/\1/p' "$dir/out")
    python3 - "$addr" "$bytes" <<'PY'
import http.client, json, os, random, sys, time
addr, size = sys.argv[1], int(sys.argv[2])
host, port = addr.split(":")
c = http.client.HTTPConnection(host, int(port))
def call(method, path, body=None, headers={}):
    c.request(method, path, body=body, headers=headers); r = c.getresponse(); data = r.read(); return r.status, data
def stale():
    return json.loads(call("GET", "/v1/volumes/vm")[1])["children"][2]["stale_bytes"]
start = time.time(); lat = []; payload = os.urandom(4096)
while True:
    s = stale()
    if s == 0:
        break
    for _ in range(20):
        off = random.randrange(0, size // 4096) * 4096
        t = time.perf_counter()
        if random.random() < 0.5:
            st, _ = call("GET", "/v1/volumes/vm/data", headers={"Range": f"bytes={off}-{off+4095}"}); assert st == 206, st
        else:
            st, _ = call("PUT", f"/v1/volumes/vm/data?offset={off}", body=payload); assert st == 204, st
        lat.append(time.perf_counter() - t)
    if time.time() - start > 600:
        sys.exit("the resync did not finish in 10 minutes")
took = time.time() - start
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
print(f"{size / took / 2**20:8.1f} MiB/s  client 4 KiB I/O p50 {p(0.5):6.2f} ms  p99 {p(0.99):6.2f} ms  ({len(lat)} requests)")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    cmp -s "$dir/a.img" "$dir/c.img" || echo "  note: c differs from a (client writes raced the check)"
}
echo "resync of $((bytes >> 20)) MiB onto a file child, 2 other file children:"
printf '  %-22s' "no limit:"; run 100GiB
printf '  %-22s' "limit $rate/s:"; run "$rate"
