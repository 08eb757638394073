#!/usr/bin/env python3
"""Checks real answers of a quorum-server against its OpenAPI description.

Each answer's status must be described for its operation, its content type
among the described ones, and its JSON body valid against the described
schema (JSON Schema 2020-12, as OpenAPI 3.1 has it; the schemas' own `$ref`s
resolve inside the document).

Usage: check_answers.py DOCUMENT ANSWERS

ANSWERS is a JSON list of
  {"path": "/v1/volumes/{vol}", "method": "get", "status": 200,
   "content_type": "application/json", "body": ...}
with "body" left out for an answer without a JSON body. Prints one line per
problem and a summary; exits 1 when there is a problem.
"""

import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:quorum:openapi"


def pointer(*parts):
    """A JSON pointer fragment to `parts` of the document."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "#/" + "/".join(escaped)


def check(doc, registry, answer):
    """The problems of one answer, as lines."""
    path, method, status = answer["path"], answer["method"], str(answer["status"])
    what = f"{method.upper()} {path} -> {status}"
    operation = doc["paths"].get(path, {}).get(method)
    if operation is None:
        return [f"{what}: no such operation in the description"]
    response = operation["responses"].get(status)
    if response is None:
        described = ", ".join(sorted(operation["responses"]))
        return [f"{what}: status not described (described: {described})"]
    if "body" not in answer:
        return []
    content_type = answer["content_type"]
    if content_type not in response.get("content", {}):
        return [f"{what}: content type {content_type} not described"]
    ref = BASE + pointer(
        "paths", path, method, "responses", status, "content", content_type, "schema"
    )
    validator = Draft202012Validator({"$ref": ref}, registry=registry)
    return [
        f"{what}: {error.message} at {list(error.absolute_path)}"
        for error in validator.iter_errors(answer["body"])
    ]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        answers = json.load(f)
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource(BASE, resource)
    problems = [line for answer in answers for line in check(doc, registry, answer)]
    for line in problems:
        print(line)
    print(f"{len(answers)} answers checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
