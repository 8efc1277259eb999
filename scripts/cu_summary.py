#!/usr/bin/env python3
"""Summarise a verbose `iscsi-test-cu -v` log per test, by CUnit's own verdict.

usage: cu_summary.py LOG [--json] [--list failed|skipped|clean|logged]

Verdicts:
  clean    CUnit said "passed" and the test printed no [SKIPPED] note
  skipped  CUnit said "passed" but the test skipped (part of) itself
  failed   CUnit said "FAILED" (an assertion failed), or no verdict at all

Why not count every "FAILED" in the text: libiscsi's helpers log
"[FAILED] WRITE10 command failed ..." whenever a command does not return the
status the helper was called with, and negative tests (for example
iSCSI.iSCSIdatasn.iSCSIDataSnInvalid, which sends bad DataSNs and asserts that
the WRITE fails) call them expecting exactly that. Such tests end with CUnit's
"passed"; they are counted clean here and listed under "logged" so that a
reader can check them. A real failure always carries CUnit's own bracketless
"FAILED" verdict and numbered assertion lines ("1. test_x.c:69 - ...").
"""
import json
import re
import sys

TEST = re.compile(r"^\s+Test: (\S+) \.\.\.(.*)$")
SUITE = re.compile(r"^Suite: (\S+)")
ASSERTION = re.compile(r"^\s+\d+\. \S+\.c:\d+")
CUNIT_FAILED = re.compile(r"(^|\.\.\.|\s)FAILED\s*$")


def classify(lines):
    body = "\n".join(lines)
    failed = any(ASSERTION.match(l) for l in lines) or any(
        CUNIT_FAILED.search(l) and "[FAILED]" not in l for l in lines
    )
    if failed:
        return "failed"
    # CUnit prints "passed" right after "Test: X ..." or on a line of its
    # own; libiscsi's next suite setup may log on the same line after it.
    if not any(re.search(r"(^|\.\.\.)passed\b", l.strip()) for l in lines):
        return "failed"  # crashed or no verdict
    if "[SKIPPED]" in body:
        return "skipped"
    return "clean"


def parse(text):
    results, logged = {}, set()
    suite, cur, buf = None, None, []

    def close():
        if cur is not None:
            results[cur] = classify(buf)
            if results[cur] != "failed" and any("[FAILED]" in l for l in buf):
                logged.add(cur)

    for line in text.splitlines():
        m = SUITE.match(line)
        if m:
            close()
            cur, buf, suite = None, [], m.group(1)
            continue
        m = TEST.match(line)
        if m:
            close()
            cur, buf = f"{suite}.{m.group(1)}", [m.group(2)]
            continue
        if line.startswith("Run Summary"):
            close()
            cur, buf = None, []
            continue
        if cur is not None:
            buf.append(line)
    close()
    return results, logged


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    text = open(sys.argv[1], errors="replace").read()
    res, logged = parse(text)
    counts = {k: sum(1 for v in res.values() if v == k) for k in ("clean", "skipped", "failed")}
    if "--json" in sys.argv:
        print(json.dumps({"counts": counts, "results": res,
                          "passed_with_logged_failures": sorted(logged)},
                         indent=1, sort_keys=True))
        return
    if "--list" in sys.argv:
        want = sys.argv[sys.argv.index("--list") + 1]
        names = sorted(logged) if want == "logged" else sorted(k for k, v in res.items() if v == want)
        for name in names:
            print(name)
        return
    print(f"tests {len(res)} clean {counts['clean']} skipped {counts['skipped']} failed {counts['failed']}")


if __name__ == "__main__":
    main()
