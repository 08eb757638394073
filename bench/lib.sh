# Helpers of the bench scripts; sourced, not run. The caller has done
# `set -euo pipefail` and `cd` to the repository's root.

# need TOOL HINT: fails loudly when TOOL is missing.
need() {
    command -v "$1" >/dev/null || { echo "error: $1 is missing ($2)" >&2; exit 1; }
}

# release_bin NAME: builds the binary NAME in release and prints its path
# (under CARGO_TARGET_DIR when set).
release_bin() {
    cargo build --release --quiet --bin "$1"
    echo "${CARGO_TARGET_DIR:-target}/release/$1"
}

# raw_children DIR SIZE NAME...: DIR/NAME.img for each NAME, identical,
# SIZE bytes of random data, read into the page cache.
raw_children() {
    local dir=$1 size=$2 first=$3 name
    shift 3
    head -c "$size" /dev/urandom > "$dir/$first.img"
    for name in "$@"; do cp "$dir/$first.img" "$dir/$name.img"; done
    cat "$dir"/*.img > /dev/null
}

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# free_port: a TCP port of 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for_line FILE PATTERN: waits (10 s at most) until FILE has a line
# matching PATTERN.
wait_for_line() {
    local _
    for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "error: no line matching '$2' in $1 within 10 s:" >&2
    cat "$1" >&2
    exit 1
}

# cpu_ticks PID: user + system CPU time of the process PID so far (all its
# threads), in clock ticks (`getconf CLK_TCK` a second).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# quorum_config DIR: writes DIR/quorum.toml, the benchmarks' quorum-server
# config: volume vm of DIR/a.img, b.img and c.img, vote_threshold 2, HTTP
# and NBD on free ports of 127.0.0.1 (`--listen 127.0.0.1:0`).
quorum_config() {
    cat > "$1/quorum.toml" <<TOML
data_dir = "state"
[nbd]
listen = "127.0.0.1:0"
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
}
