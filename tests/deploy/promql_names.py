#!/usr/bin/env python3
"""Check that every metric the dashboards and alerts query is exported.

    promql_names.py DASHBOARD_JSON ALERTS_YML METRICS_TXT

Extracts every PromQL expression from the Grafana dashboard JSON (the `expr`
of each target, and the queries of template variables) and from the
Prometheus rules file (each rule's `expr`), collects the metric names they
use (identifiers starting with `quorum_`), and checks each one against the
Prometheus text exposition in METRICS_TXT (a saved GET /metrics).

A name is exported when METRICS_TXT has a sample of that name, or declares it
with `# TYPE`: a histogram `h` makes `h_bucket`, `h_sum` and `h_count`
queryable (but not `h` itself), a summary `s` makes `s`, `s_sum` and
`s_count` queryable, any other type its own name.

Prints every expression's names and exits 1 listing the names that are not
exported (and where they are used), 2 on bad input. Standard library only;
PyYAML is used for the rules file when installed, otherwise a small reader
for `expr:` keys.
"""

import argparse
import json
import re
import sys

NAME = re.compile(r"(?<![A-Za-z0-9_:])quorum_[A-Za-z0-9_:]*")
# Grafana variables: $var, ${var}, ${var:fmt}, [[var]].
GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")
# PromQL string literals ("", '' with escapes; `` raw) and comments.
STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')


def names_in(expr):
    """The quorum_* metric names an expression uses, in order, once each."""
    text = STRING_OR_COMMENT.sub(" ", GRAFANA_VAR.sub(" ", expr))
    return list(dict.fromkeys(NAME.findall(text)))


def dashboard_exprs(path):
    """(where, expr) for every PromQL expression in a Grafana dashboard."""
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    out = []

    def walk_panels(panels):
        for panel in panels or []:
            title = panel.get("title", "?")
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if isinstance(expr, str) and expr.strip():
                    out.append((f"panel {title!r} target {target.get('refId', '?')}", expr))
            walk_panels(panel.get("panels"))  # panels inside collapsed rows

    walk_panels(dash.get("panels"))
    for var in (dash.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        for expr in dict.fromkeys((query, var.get("definition"))):
            if isinstance(expr, str) and expr.strip():
                out.append((f"variable ${var.get('name', '?')}", expr))
    return out


def rules_exprs(path):
    """(where, expr) for every rule in a Prometheus rules file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        import yaml  # PyYAML
    except ImportError:
        yaml = None
    if yaml is None:
        return rules_exprs_fallback(text)
    doc = yaml.safe_load(text) or {}
    out = []
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            kind = "alert" if "alert" in rule else "record"
            out.append((f"{kind} {name} (group {group.get('name', '?')})", str(rule.get("expr", ""))))
    return out


def rules_exprs_fallback(text):
    """Reads `alert:`/`record:` and `expr:` keys without a YAML library:
    plain or quoted one-line values and `|`/`>` block scalars."""
    out = []
    lines = text.splitlines()
    name = "?"
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)(?:-\s+)?(alert|record):\s*(.+?)\s*$", line)
        if m:
            name = m.group(2) + " " + m.group(3).strip("\"'")
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*?)\s*$", line)
        if m:
            value = m.group(2)
            if value[:1] in ("|", ">"):
                indent = None
                block = []
                i += 1
                while i < len(lines):
                    nxt = lines[i]
                    if nxt.strip() == "":
                        block.append("")
                        i += 1
                        continue
                    ind = len(nxt) - len(nxt.lstrip())
                    if indent is None:
                        indent = ind
                    if ind < indent or ind <= len(m.group(1)):
                        break
                    block.append(nxt[indent:])
                    i += 1
                out.append((name, "\n".join(block)))
                continue
            if value[:1] in ('"', "'"):
                value = value[1:-1]
            out.append((name, value))
        i += 1
    return out


def exported_names(path):
    """The metric names a PromQL query can use, from a text exposition."""
    names = set()
    histograms = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    metric, kind = parts[2], parts[3]
                    if kind in ("histogram", "gaugehistogram"):
                        histograms.add(metric)
                        names.update({metric + "_bucket", metric + "_sum", metric + "_count"})
                    elif kind == "summary":
                        names.update({metric, metric + "_sum", metric + "_count"})
                    else:
                        names.add(metric)
                continue
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if m:
                names.add(m.group(0))
    return names, histograms


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard", help="Grafana dashboard JSON")
    parser.add_argument("alerts", help="Prometheus rules file (YAML)")
    parser.add_argument("metrics", help="a saved /metrics (Prometheus text format)")
    args = parser.parse_args()

    try:
        exprs = [("dashboard", w, e) for w, e in dashboard_exprs(args.dashboard)]
        exprs += [("alerts", w, e) for w, e in rules_exprs(args.alerts)]
        exported, histograms = exported_names(args.metrics)
    except (OSError, ValueError) as e:
        print(f"promql_names: {e}", file=sys.stderr)
        return 2

    problems = []
    if not exported:
        problems.append(f"{args.metrics}: no metrics in it")
    for source in ("dashboard", "alerts"):
        if not any(s == source for s, _, _ in exprs):
            problems.append(f"{source}: no PromQL expression found")

    missing = {}
    for source, where, expr in exprs:
        used = names_in(expr)
        bad = [n for n in used if n not in exported]
        status = "ok" if not bad else "MISSING " + ", ".join(bad)
        print(f"{source}: {where}: {', '.join(used) or '(no quorum_ metric)'}: {status}")
        for n in bad:
            missing.setdefault(n, []).append(f"{source}: {where}")

    for name, places in sorted(missing.items()):
        hint = ""
        if name in histograms:
            hint = f" ({name} is a histogram: query {name}_bucket, {name}_sum or {name}_count)"
        problems.append(f"{name} is not exported{hint}; used by: " + "; ".join(places))

    if problems:
        print(f"\nFAIL: {len(problems)} problem(s) against {args.metrics}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    used = {n for _, _, e in exprs for n in names_in(e)}
    print(f"OK: {len(exprs)} expressions use {len(used)} metric names, all exported by {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
