#!/usr/bin/env python3
"""Seeds fuzz/corpus/sql (not committed) for the `sql` fuzz target.

Input layout of the target: SQL 0xFF PAYLOAD 0xFF TEMPLATE.

- every `sql` of tests/sql/cases/*.toml, with the case's payload and template;
- a few hand-written messages and templates;
- deeply nested inputs (100000 levels of `(`, `NOT `, `-`, `[`, `{'a':`, and long
  left-deep chains of binary operators and postfixes), which must be refused with an
  error, never overflow the stack. These are larger than `-max_len=4096`, so libFuzzer
  only sees their first 4096 bytes while fuzzing; run them whole with
  `cargo fuzz run sql fuzz/corpus/deep/*` (see README.md).

Run from the repository root: python3 fuzz/seed_corpus.py
"""

import base64
import glob
import hashlib
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "sql")
DEEP = os.path.join(ROOT, "fuzz", "corpus", "deep")

TELEMETRY = (
    b'{"device":"sensor-0042","temp":36.75,"humidity":48.2,'
    b'"location":{"lat":47.6097,"lon":-122.3331,"site":"plant-7"},'
    b'"readings":[36.5,36.75,36.9],"ts":"2024-05-14T09:21:37.512Z","battery":87}'
)


def write(directory, data, name=None):
    os.makedirs(directory, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def seed(sql, payload=b"{}", template=""):
    if isinstance(sql, str):
        sql = sql.encode()
    if isinstance(template, str):
        template = template.encode()
    return sql + b"\xff" + payload + b"\xff" + template


def cases():
    n = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "sql", "cases", "*.toml"))):
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        for case in doc.get("case", []):
            if "sql" not in case:
                continue
            if "payload_base64" in case:
                payload = base64.b64decode(case["payload_base64"])
            else:
                payload = case.get("payload", "{}").encode()
            write(CORPUS, seed(case["sql"], payload, case.get("template", "")))
            n += 1
    return n


HAND = [
    seed("SELECT device, temp * 1.8 + 32 AS f FROM 'sensors/+/telemetry' WHERE temp > 30",
         TELEMETRY, "archive/${topic(2)}/${timestamp()}.json"),
    seed("SELECT * FROM 'sensors/#'", TELEMETRY, "$$aws/things/${clientid()}/shadow/update"),
    seed("SET @t = temp SELECT VALUE @t FROM '#'", TELEMETRY, "${@t}/${ {'k': '}'}.k }"),
    seed("SELECT (SELECT VALUE r FROM readings WHERE r > 36.6) AS hot FROM '#'", TELEMETRY),
    seed("SELECT encode(*, 'base64') AS b FROM '#'", b"\x00\x01\x02binary", "${encode(*, 'base64')}"),
    seed("SELECT CASE device WHEN 'a' THEN 1 ELSE cast(temp AS Int) END AS c FROM '#'", TELEMETRY),
    seed("SELECT location.lat, readings[1], get(readings, 0) AS g FROM '$aws/rules/fuzz/#'", TELEMETRY),
]

N = 100_000
DEEP_SEEDS = {
    "paren": "SELECT " + "(" * N + "1" + ")" * N + " FROM 'a'",
    "paren-open": "SELECT " + "(" * N,
    "not": "SELECT a FROM 'a' WHERE " + "NOT " * N + "true",
    "neg": "SELECT " + "-" * N + "a FROM 'a'",
    "neg-space": "SELECT " + "- " * N + "1 FROM 'a'",
    "array": "SELECT " + "[" * N + "1" + "]" * N + " FROM 'a'",
    "array-open": "SELECT " + "[" * N,
    "object": "SELECT " + "{'a':" * N + "1" + "}" * N + " FROM 'a'",
    "object-open": "SELECT " + "{'a':" * N,
    "call": "SELECT " + "abs(" * N + "1" + ")" * N + " FROM 'a'",
    "subquery": "SELECT " + "(SELECT VALUE " * N + "1" + " FROM a)" * N + " FROM 'a'",
    "case": "SELECT " + "CASE " * N + "1",
    "cast": "SELECT " + "cast(" * N + "1",
    "index": "SELECT a" + "[a" * N + "]" * N + " FROM 'a'",
    # Left-deep chains: no nesting in the text, but a deep tree.
    "add-chain": "SELECT 1" + "+1" * N + " FROM 'a'",
    "mul-chain": "SELECT 1" + "*1" * N + " FROM 'a'",
    "and-chain": "SELECT a FROM 'a' WHERE true" + " AND true" * N,
    "or-chain": "SELECT a FROM 'a' WHERE false" + " OR false" * N,
    "eq-chain": "SELECT 1" + "=1" * N + " FROM 'a'",
    "in-chain": "SELECT a" + " IN a" * N + " FROM 'a'",
    "field-chain": "SELECT a" + ".b" * N + " FROM 'a'",
    "index-chain": "SELECT a" + "[0]" * N + " FROM 'a'",
    "concat-chain": "SELECT 'x'" + " + 'x'" * N + " FROM 'a'",
}


def deep():
    for name, sql in DEEP_SEEDS.items():
        write(DEEP, seed(sql, TELEMETRY), name)
        # The same as a template expression.
        expr = sql[len("SELECT "):]
        if expr.endswith(" FROM 'a'"):
            expr = expr[: -len(" FROM 'a'")]
        write(DEEP, seed("SELECT * FROM 'a'", TELEMETRY, "${" + expr + "}"), name + "-template")
    # Deep JSON payloads (serde_json refuses more than 128 levels).
    write(DEEP, seed("SELECT * FROM '#'", b"[" * N + b"]" * N), "payload-array")
    write(DEEP, seed("SELECT * FROM '#'", b'{"a":' * N + b"1" + b"}" * N), "payload-object")


if __name__ == "__main__":
    n = cases()
    for data in HAND:
        write(CORPUS, data)
    deep()
    print(f"{n} cases and {len(HAND)} hand seeds in {CORPUS}; {2 * len(DEEP_SEEDS) + 2} deep seeds in {DEEP}")
