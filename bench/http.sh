#!/usr/bin/env bash
# Load-tests quorum-server's HTTP path (three file children) with wrk at
# concurrency 16: 4 KiB and 1 MiB Range reads at random offsets, and 4 KiB
# and 1 MiB PUT writes; runs nginx (Debian's) beside it, serving one of the
# same files with Range requests, as the ceiling for "HTTP reads of a file";
# and reports each load's rate, the ratio to nginx, and quorum-server's peak
# RSS, also after a whole-volume GET (which must stream in bounded memory).
# Each read load runs ROUNDS times against each server, the order
# alternating; it prints the medians of the rates, of wrk's p50 and p99
# latencies and of each server's CPU time per request (user + system, all
# processes and threads), and the median and range of the per-round
# ratios quorum/nginx.
#
#   bench/http.sh                    # SIZE=1G DURATION=10s ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size=${SIZE:-1G}
duration=${DURATION:-10s}
rounds=${ROUNDS:-3}
need wrk "apt-get install wrk"
need nginx "apt-get install nginx-light"
server=$(release_bin quorum-server)
dir=$(mktemp -d "${TMPDIR:-/tmp}/quorum-http.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

raw_children "$dir" "$size" a b c
bytes=$(stat -c %s "$dir/a.img")

quorum_config "$dir"
"$server" --config "$dir/quorum.toml" --listen 127.0.0.1:0 > "$dir/quorum.out" 2> "$dir/quorum.err" &
qpid=$!; pids+=("$qpid")
wait_for_line "$dir/quorum.out" '^listening on http://'
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

tick=$(getconf CLK_TCK)
# nginx's processes: its master and workers.
nginx_pids() { local m; m=$(cat "$dir/nginx/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
ticks_of() { local p t=0; for p in $1; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }

# run URL SCRIPT LEN PIDS: "req/s p50_ms p99_ms cpu_us_per_request" of one
# wrk run; any error answer fails the run.
run() {
    local out before after
    before=$(ticks_of "$4")
    out=$(LEN=$3 wrk -t 2 -c 16 -d "$duration" --latency -s "$2" "$1")
    after=$(ticks_of "$4")
    if grep -q 'Non-2xx\|Socket errors' <<< "$out"; then echo "error: $1 answered errors:" >&2; echo "$out" >&2; exit 1; fi
    awk -v cpu="$((after - before))" -v tick="$tick" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /Requests\/sec/ { rps = $2 }
        /requests in/ { n = $1 }
        END { printf "%s %.3f %.3f %.1f\n", rps, p50, p99, cpu * 1e6 / tick / n }' <<< "$out"
}
rss() { awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/$qpid/status"; }
med() { tr ' ' '\n' <<< "$1" | grep . | median; }
span() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'; }

npids=$(nginx_pids)
[ "$(wc -w <<< "$npids")" -ge 2 ] || { echo "error: no nginx workers found ($npids)" >&2; exit 1; }
echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of $duration per load and server, wrk -t 2 -c 16"
printf '\n%-14s %-8s %10s %9s %9s %11s\n' "load (c=16)" "server" "req/s" "p50 ms" "p99 ms" "CPU us/req"
for len in 4096 1048576; do
    declare -A rps=() p50=() p99=() cpu=()
    ratios=""
    for r in $(seq "$rounds"); do
        order="quorum nginx"; [ $((r % 2)) = 0 ] && order="nginx quorum"
        declare -A got=()
        for peer in $order; do
            if [ "$peer" = quorum ]; then
                read -r a b c d < <(run "http://$qaddr/v1/volumes/vm/data" "$dir/read.lua" "$len" "$qpid")
            else
                read -r a b c d < <(run "http://127.0.0.1:$nport/b.img" "$dir/read.lua" "$len" "$npids")
            fi
            got[$peer]=$a; rps[$peer]+="$a "; p50[$peer]+="$b "; p99[$peer]+="$c "; cpu[$peer]+="$d "
        done
        ratios+="$(awk -v q="${got[quorum]}" -v n="${got[nginx]}" 'BEGIN {printf "%.2f", q/n}') "
    done
    for peer in quorum nginx; do
        printf '%-14s %-8s %10.0f %9s %9s %11s\n' "read $((len / 1024)) KiB" "$peer" \
            "$(med "${rps[$peer]}")" "$(med "${p50[$peer]}")" "$(med "${p99[$peer]}")" "$(med "${cpu[$peer]}")"
    done
    printf '%-14s quorum/nginx %.2fx (rounds: %s)\n' "read $((len / 1024)) KiB" "$(med "$ratios")" "$(span "$ratios")"
done
for len in 4096 1048576; do
    read -r a b c d < <(run "http://$qaddr/v1/volumes/vm/data" "$dir/write.lua" "$len" "$qpid")
    printf '%-14s %-8s %10.0f %9s %9s %11s\n' "write $((len / 1024)) KiB" quorum "$a" "$b" "$c" "$d"
done
echo "quorum-server peak RSS after the loads: $(rss)"
curl -s -o /dev/null "http://$qaddr/v1/volumes/vm/data"
echo "quorum-server peak RSS after a whole-volume GET of $((bytes >> 20)) MiB: $(rss)"
