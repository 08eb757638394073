#!/usr/bin/env bash
# Static validation of deploy/ (there is no Docker engine on CI):
#   - docker-compose.yml against the Compose Specification (check-jsonschema's
#     bundled vendor.compose-spec schema: no network needed), the files it
#     mounts exist, every ${VAR} it needs is in .env.example;
#   - the Dockerfile has what deploy/README.md promises;
#   - quorum.toml is TOML with the volume docker-compose.yml expects;
#   - Prometheus: promtool check config / check rules / test rules;
#   - Grafana: the dashboard JSON parses, every panel query is PromQL that
#     promtool parses, the provisioning files have the expected shape;
#   - with METRICS_FILE=path (a saved GET /metrics): promtool check metrics,
#     and every metric the dashboard and alerts query is in it
#     (promql_names.py).
#
# Usage: tests/deploy/validate.sh [VENV_BIN_DIR]
#   VENV_BIN_DIR holds check-jsonschema (e.g. /tmp/venv/bin); without it,
#   check-jsonschema must be on PATH. promtool must be on PATH.
# Needs: bash, python3 (standard library), promtool (Debian: apt-get install
# prometheus), check-jsonschema (PyPI: pip install check-jsonschema).
# Prints each check, a closing "N passed, N failed" line, and exits 1 if any
# check failed (2 if a tool is missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/deploy"
deploy="$root/deploy"
cd "$root"

# --- tools ------------------------------------------------------------------
if [[ $# -ge 1 && -n "$1" ]]; then
    cjs="$1/check-jsonschema"
    [[ -x "$cjs" ]] || { echo "validate: no check-jsonschema in $1" >&2; exit 2; }
elif command -v check-jsonschema >/dev/null 2>&1; then
    cjs=$(command -v check-jsonschema)
else
    echo "validate: check-jsonschema not found: pass the bin dir of a venv that has it" \
        "(python3 -m venv /tmp/venv && /tmp/venv/bin/pip install check-jsonschema)" >&2
    exit 2
fi
if ! command -v promtool >/dev/null 2>&1; then
    echo "validate: promtool not found (apt-get install prometheus)" >&2
    exit 2
fi
command -v python3 >/dev/null 2>&1 || { echo "validate: python3 not found" >&2; exit 2; }
echo "tools: $cjs ($("$cjs" --version 2>&1 | head -n1)), $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
failures=()
# check NAME COMMAND...: runs COMMAND, prints its output indented, counts it.
check() {
    local name=$1
    shift
    echo "== $name"
    local status=0
    "$@" >"$tmp/out" 2>&1 || status=$?
    sed 's/^/   /' "$tmp/out"
    if [[ $status -eq 0 ]]; then
        echo "   PASS"
        passed=$((passed + 1))
    else
        echo "   FAIL (exit $status)"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

# --- docker compose ---------------------------------------------------------
check "compose: docker-compose.yml against the Compose Specification" \
    "$cjs" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

compose_mounts() {
    # Bind mounts ("- ./X:/Y") and the build's Dockerfile must exist.
    local status=0 src found=0
    while read -r src; do
        found=$((found + 1))
        if [[ -e "$deploy/$src" ]]; then
            echo "mount source deploy/$src exists"
        else
            echo "mount source deploy/$src is missing"
            status=1
        fi
    done < <(grep -oE '^[[:space:]]*-[[:space:]]+"?\./[^:"]+' deploy/docker-compose.yml | sed -E 's/^[[:space:]]*-[[:space:]]+"?\.\///')
    if [[ $found -eq 0 ]]; then
        echo "no bind mount (- ./X:/Y) found in deploy/docker-compose.yml: nothing was checked"
        status=1
    fi
    local dockerfile
    dockerfile=$(sed -nE 's/^[[:space:]]*dockerfile:[[:space:]]*"?([^"#[:space:]]+).*/\1/p' deploy/docker-compose.yml | head -n1)
    if [[ -n "$dockerfile" && -f "$root/$dockerfile" ]]; then
        echo "build dockerfile $dockerfile exists (context: the repo root)"
    else
        echo "build dockerfile '${dockerfile}' not found under the repo root"
        status=1
    fi
    return $status
}
check "compose: bind-mounted files and the Dockerfile exist" compose_mounts

compose_env() {
    # Every ${VAR} without a default (${VAR:-x}) is set in .env.example.
    local status=0 var
    [[ -f deploy/.env.example ]] || { echo "deploy/.env.example is missing"; return 1; }
    while read -r var; do
        if grep -qE "^${var}=" deploy/.env.example; then
            echo "\${$var} is in .env.example"
        else
            echo "\${$var} is used without a default and is not in .env.example"
            status=1
        fi
    done < <(grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*(:?[?][^}]*)?\}' deploy/docker-compose.yml \
        | sed -E 's/^\$\{([A-Za-z0-9_]+).*/\1/' | sort -u)
    # Secrets-from-environment need the variable too.
    while read -r var; do
        grep -qE "^${var}=" deploy/.env.example || { echo "secret source $var is not in .env.example"; status=1; }
    done < <(sed -nE 's/^[[:space:]]+environment:[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*$/\1/p' deploy/docker-compose.yml)
    if [[ -e deploy/.env ]] && git ls-files --error-unmatch deploy/.env >/dev/null 2>&1; then
        echo "deploy/.env is tracked by git: it holds secrets"
        status=1
    fi
    return $status
}
check "compose: every variable without a default is in .env.example" compose_env

# --- Dockerfile ---------------------------------------------------------------
dockerfile_shape() {
    local status=0 f=deploy/Dockerfile pattern
    for pattern in \
        '^FROM rust:[^ ]+ AS builder' \
        'cargo build --release --locked --bin quorum-server' \
        '^FROM debian:bookworm-slim' \
        '^USER [a-z]' \
        '^EXPOSE 8700' \
        '^HEALTHCHECK .*' \
        '/healthz' \
        '^ENTRYPOINT \["quorum-server", "--config", "/etc/quorum/quorum.toml"\]'; do
        if grep -qE "$pattern" "$f"; then
            echo "has: $pattern"
        else
            echo "missing: $pattern"
            status=1
        fi
    done
    if grep -qE '^USER (root|0)\b' "$f"; then
        echo "runs as root"
        status=1
    fi
    return $status
}
check "Dockerfile: multi-stage build, non-root user, port, health check, entrypoint" dockerfile_shape

# --- quorum.toml --------------------------------------------------------------
quorum_toml() {
    python3 - "$deploy/quorum.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    c = tomllib.load(f)
problems = []
def want(cond, what):
    print(("ok: " if cond else "WRONG: ") + what)
    if not cond:
        problems.append(what)
want(c.get("listen") == "0.0.0.0:8700", "listen = 0.0.0.0:8700")
want("token" not in c.get("auth", {}), "no token in the file (it comes from QUORUM_TOKEN)")
vols = c.get("volume", [])
want(len(vols) == 1, "one volume")
for v in vols:
    children = v.get("child", [])
    want(v.get("vote_threshold") == 2, f"volume {v.get('name')}: vote_threshold = 2")
    want(len(children) == 3, f"volume {v.get('name')}: three children")
    for i, ch in enumerate(children, 1):
        opts = ch.get("options", {})
        want(ch.get("uri", "").startswith("s3://"), f"child {ch.get('name')}: an s3:// uri")
        want(opts.get("aws_endpoint") == f"http://minio{i}:9000", f"child {ch.get('name')}: endpoint minio{i}")
        want(not any(k in opts for k in ("aws_access_key_id", "aws_secret_access_key")),
             f"child {ch.get('name')}: no credentials in the file")
sys.exit(1 if problems else 0)
PY
}
check "quorum.toml: parses; one volume on minio1..3, threshold 2, no secrets" quorum_toml

# --- Prometheus -----------------------------------------------------------------
# prometheus.yml names alerts.yml and quorum_token relative to itself (compose
# puts them beside it in the container); check a byte-identical copy beside a
# copy of alerts.yml and a stand-in token file.
prom_config() {
    mkdir -p "$tmp/prom"
    cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$tmp/prom/"
    printf 'stand-in-token' >"$tmp/prom/quorum_token"
    promtool check config "$tmp/prom/prometheus.yml"
}
check "prometheus: promtool check config prometheus.yml" prom_config
check "prometheus: promtool check rules alerts.yml" \
    promtool check rules deploy/prometheus/alerts.yml
check "prometheus: promtool test rules alerts.test.yml" \
    promtool test rules deploy/prometheus/alerts.test.yml

alerts_tested() {
    # Every alert in alerts.yml has a unit test.
    local status=0 alert found=0
    while read -r alert; do
        found=$((found + 1))
        if grep -qE "alertname:[[:space:]]*${alert}[[:space:]]*\$" deploy/prometheus/alerts.test.yml; then
            echo "$alert is tested"
        else
            echo "$alert has no test in alerts.test.yml"
            status=1
        fi
    done < <(sed -nE 's/^[[:space:]]*-?[[:space:]]*alert:[[:space:]]*([A-Za-z0-9_]+).*/\1/p' deploy/prometheus/alerts.yml)
    if [[ $found -eq 0 ]]; then
        echo "no alert found in deploy/prometheus/alerts.yml: nothing was checked"
        status=1
    fi
    return $status
}
check "prometheus: every alert has a unit test" alerts_tested

# --- Grafana --------------------------------------------------------------------
dashboard_json() {
    local status=0 f
    for f in deploy/grafana/dashboards/*.json; do
        if python3 -m json.tool "$f" >/dev/null; then echo "$f parses"; else status=1; fi
    done
    python3 - deploy/grafana/dashboards/quorum.json <<'PY' || status=1
import json, sys
d = json.load(open(sys.argv[1]))
ids, problems = [], []
def walk(panels):
    for p in panels or []:
        ids.append(p.get("id"))
        walk(p.get("panels"))
walk(d.get("panels"))
if not d.get("uid"): problems.append("no uid")
if len(ids) != len(set(ids)): problems.append(f"duplicate panel ids: {ids}")
print(f"uid {d.get('uid')!r}, {len(ids)} panels, panel ids unique: {len(ids) == len(set(ids))}")
for p in problems: print("WRONG:", p)
sys.exit(1 if problems else 0)
PY
    return $status
}
check "grafana: dashboard JSON parses (uid, unique panel ids)" dashboard_json

dashboard_promql() {
    python3 "$here/grafana_rules.py" deploy/grafana/dashboards/quorum.json >"$tmp/grafana-rules.json"
    promtool check rules "$tmp/grafana-rules.json"
}
check "grafana: every panel query is PromQL (promtool check rules on them)" dashboard_promql

grafana_provisioning() {
    cat >"$tmp/datasources.schema.json" <<'JSON'
{"type": "object", "required": ["apiVersion", "datasources"],
 "properties": {"apiVersion": {"const": 1},
   "datasources": {"type": "array", "minItems": 1, "items": {"type": "object",
     "required": ["name", "type", "url", "uid"],
     "properties": {"type": {"const": "prometheus"}, "url": {"const": "http://prometheus:9090"}}}}}}
JSON
    cat >"$tmp/dashboards.schema.json" <<'JSON'
{"type": "object", "required": ["apiVersion", "providers"],
 "properties": {"apiVersion": {"const": 1},
   "providers": {"type": "array", "minItems": 1, "items": {"type": "object",
     "required": ["name", "type", "options"],
     "properties": {"type": {"const": "file"},
       "options": {"type": "object", "required": ["path"],
         "properties": {"path": {"const": "/etc/grafana/dashboards"}}}}}}}}
JSON
    "$cjs" --schemafile "$tmp/datasources.schema.json" deploy/grafana/provisioning/datasources/prometheus.yml &&
        "$cjs" --schemafile "$tmp/dashboards.schema.json" deploy/grafana/provisioning/dashboards/quorum.yml &&
        grep -q '\./grafana/dashboards:/etc/grafana/dashboards' deploy/docker-compose.yml &&
        echo "docker-compose.yml mounts deploy/grafana/dashboards at the provider's path"
}
check "grafana: provisioning files (datasource, dashboard provider)" grafana_provisioning

# --- against a saved /metrics (optional) ------------------------------------------
if [[ -n "${METRICS_FILE:-}" ]]; then
    check_metrics() { promtool check metrics <"$METRICS_FILE"; }
    check "metrics: promtool check metrics $METRICS_FILE" check_metrics
    check "metrics: every metric the dashboard and alerts query is exported" \
        python3 "$here/promql_names.py" deploy/grafana/dashboards/quorum.json deploy/prometheus/alerts.yml "$METRICS_FILE"
else
    echo "== (METRICS_FILE not set: the checks against a saved /metrics are skipped)"
fi

echo
if [[ $failed -gt 0 ]]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
