#!/usr/bin/env bash
# Load-tests quorum-server's HTTP path (three file children) with wrk at
# concurrency 16: 4 KiB and 1 MiB Range reads at random offsets, and 4 KiB
# and 1 MiB PUT writes; runs nginx (Debian's) beside it, serving one of the
# same files with Range requests, as the ceiling for "HTTP reads of a file";
# and reports each load's rate, the ratio to nginx, and quorum-server's peak
# RSS, also after a whole-volume GET (which must stream in bounded memory).
#
#   bench/http.sh                    # SIZE=1G DURATION=10s by default
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size=${SIZE:-1G}
duration=${DURATION:-10s}
need wrk "apt-get install wrk"
need nginx "apt-get install nginx-light"
server=$(release_bin quorum-server)
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-http.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

raw_children "$dir" "$size" a b c
bytes=$(stat -c %s "$dir/a.img")

cat > "$dir/quorum.toml" <<TOML
data_dir = "state"
[[volume]]
name = "vm"
vote_threshold = 2
  [[volume.child]]
  uri = "a.img"
  [[volume.child]]
  uri = "b.img"
  [[volume.child]]
  uri = "c.img"
TOML
"$server" --config "$dir/quorum.toml" --listen 127.0.0.1:0 > "$dir/quorum.out" 2> "$dir/quorum.err" &
qpid=$!; pids+=("$qpid")
wait_for_line "$dir/quorum.out" 'listening on'
qaddr=$(sed -nE 's/listening on http:\/\/(.*)/\1/p' "$dir/quorum.out")

mkdir -p "$dir/www" "$dir/nginx"
ln "$dir/b.img" "$dir/www/b.img"
nport=$(free_port)
cat > "$dir/nginx/nginx.conf" <<NGINX
worker_processes 2;
user root;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi;
    scgi_temp_path $dir/nginx/scgi;
    server { listen 127.0.0.1:$nport; root $dir/www; }
}
NGINX
nginx -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
pids+=("$!")
sleep 0.5

# wrk scripts: random aligned Range reads, or PUTs at random offsets.
cat > "$dir/read.lua" <<LUA
local size, len = $bytes, tonumber(os.getenv("LEN"))
math.randomseed(os.time())
request = function()
  local off = math.random(0, math.floor((size - len) / len)) * len
  return wrk.format("GET", wrk.path, { ["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) })
end
LUA
cat > "$dir/write.lua" <<LUA
local size, len = $bytes, tonumber(os.getenv("LEN"))
local body = string.rep("q", len)
math.randomseed(os.time())
request = function()
  local off = math.random(0, math.floor((size - len) / len)) * len
  return wrk.format("PUT", wrk.path .. "?offset=" .. off, nil, body)
end
LUA

rate() { # url script len -> requests/s; any error answer fails the run
    local out
    out=$(LEN=$3 wrk -t 2 -c 16 -d "$duration" -s "$2" "$1")
    if grep -q 'Non-2xx' <<< "$out"; then echo "error: $1 answered errors:" >&2; echo "$out" >&2; exit 1; fi
    awk '/Requests\/sec/ {print $2}' <<< "$out"
}
rss() { awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/$qpid/status"; }

printf '%-22s %12s %12s %8s\n' "load (c=16)" "quorum req/s" "nginx req/s" "ratio"
for len in 4096 1048576; do
    q=$(rate "http://$qaddr/v1/volumes/vm/data" "$dir/read.lua" "$len")
    n=$(rate "http://127.0.0.1:$nport/b.img" "$dir/read.lua" "$len")
    printf '%-22s %12s %12s %7.2fx\n' "read $((len / 1024)) KiB" "$q" "$n" "$(awk -v q="$q" -v n="$n" 'BEGIN {print q/n}')"
done
for len in 4096 1048576; do
    q=$(rate "http://$qaddr/v1/volumes/vm/data" "$dir/write.lua" "$len")
    printf '%-22s %12s %12s %8s\n' "write $((len / 1024)) KiB" "$q" "-" "-"
done
echo "quorum-server peak RSS after the loads: $(rss)"
curl -s -o /dev/null "http://$qaddr/v1/volumes/vm/data"
echo "quorum-server peak RSS after a whole-volume GET of $((bytes >> 20)) MiB: $(rss)"
