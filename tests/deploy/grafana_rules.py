#!/usr/bin/env python3
"""Turn a Grafana dashboard's PromQL into a Prometheus rules file, so that
`promtool check rules` parses every panel query.

    grafana_rules.py DASHBOARD_JSON > rules.json

Each target's `expr` becomes a recording rule `grafana:panel<ID>:<REFID>`,
with Grafana's variables replaced by values PromQL accepts ($__rate_interval,
$__interval and $__range by durations, any other $var by `.*`, as with the
"All" value of a regex variable). Template-variable queries such as
label_values(...) are Grafana's, not PromQL, and are left out. JSON is YAML,
so promtool reads the output as it is. Standard library only.
"""

import json
import re
import sys

DURATIONS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
             "__rate_interval_ms": "60000", "__interval_ms": "15000", "__range_s": "3600", "__range_ms": "3600000"}
VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_]+)\]\]")


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return DURATIONS.get(name, ".*")
    return VAR.sub(repl, expr)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        dash = json.load(f)
    rules = []

    def walk(panels):
        for panel in panels or []:
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if isinstance(expr, str) and expr.strip():
                    ref = re.sub(r"[^A-Za-z0-9_]", "_", str(target.get("refId", "A")))
                    rules.append({"record": f"grafana:panel{panel.get('id', 0)}:{ref}", "expr": substitute(expr)})
            walk(panel.get("panels"))

    walk(dash.get("panels"))
    if not rules:
        print(f"{sys.argv[1]}: no PromQL expression found", file=sys.stderr)
        return 1
    json.dump({"groups": [{"name": "grafana-" + str(dash.get("uid", "dashboard")), "rules": rules}]}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
