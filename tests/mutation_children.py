"""Run the worker's surviving mutants against the tests that reach it only in `evq` children.

mutmut maps tests to functions by the calls it sees in the test's own process, so a mutant of
the worker that only an `evq worker` subprocess runs (the log lines, shutdown, renewal, the
consumer) shows as *survived* or *no tests*: mutmut never ran the tests that would kill it.
Those tests do run the mutant when started from `mutants/`: their children import `evq` from
there (`evq_env` puts the tests' root first on PYTHONPATH) and inherit `MUTANT_UNDER_TEST`,
which switches the mutant on. This script does that for each such mutant of a mutmut run,
against the test files `TESTS_FOR` names for its function, and records the verdicts in
`mutants/children.json` (resumable: a mutant with a verdict from the same tests is not run again).

    .venv/bin/mutmut run "evq.worker*"                 # first, in the test's process
    .venv/bin/python tests/mutation_children.py "evq.worker*"
    .venv/bin/python tests/mutation_children.py --report "evq.worker*"

With `--tests FILE` (repeated for more), any module's unkilled mutants run against the files
given instead: tests outside mutmut's selection (`[tool.mutmut]`, which cannot change without
resetting every result).

See tests/MUTATION.md. Not part of the test suite (pytest collects only `test_*.py`).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
RESULTS = MUTANTS / "children.json"

# Per function of evq/worker.py (a prefix of "Class.method" or of a function's name), the test
# files whose `evq` children run it, quickest first (pytest stops at the first failure).
_LOOP = ["tests/test_delivery.py", "tests/test_retries.py", "tests/test_concurrency.py"]
_STOPPING = ["tests/test_shutdown.py", "tests/test_crash.py"]
TESTS_FOR: dict[str, list[str]] = {
    "_log_outcome": ["tests/test_worker_logs.py", "tests/test_retries.py"],
    "delivery_fields": ["tests/test_worker_logs.py", "tests/test_tracing.py"],
    "Housekeeper": ["tests/test_replay_prune.py", "tests/test_status.py"],
    "LeasedStorage.release": _STOPPING,
    "LeasedStorage._renew_leases": ["tests/test_retries.py", "tests/test_faults.py"],
    "LeasedStorage._record_quietly": ["tests/test_faults.py", *_STOPPING],
    "LeasedStorage": [*_LOOP, "tests/test_poison.py", "tests/test_faults.py", *_STOPPING],
    "DeliveryWorker": [*_LOOP, *_STOPPING],
    "DeliveryConsumer": [*_STOPPING, *_LOOP],
    "_ProcessEnvironment": _STOPPING,
    "_stop_when_orphaned": _STOPPING,
    "create_consumer": [*_LOOP, *_STOPPING],
    "EvqHuey": [*_LOOP, "tests/test_poison.py", "tests/test_receiver_selection.py"],
    "Receivers": [*_LOOP, "tests/test_receiver_selection.py"],
    "_check_json_values": ["tests/test_poison.py"],
    "lease_of": _LOOP,
    "_TransactionSizes": _LOOP,
    "WorkerOptions": _LOOP,
}
_MUTANT = re.compile(r"^(?P<module>.+)\.x(?:ǁ(?P<cls>[^ǁ]+)ǁ|_)(?P<function>.+)__mutmut_\d+$")


def function_of(mutant: str) -> str:
    """`evq.worker.xǁLeasedStorageǁ_lease__mutmut_3` -> `LeasedStorage._lease`."""
    match = _MUTANT.match(mutant)
    if not match:
        raise ValueError(f"not a mutmut mutant name: {mutant}")
    cls, function = match["cls"], match["function"]
    return f"{cls}.{function}" if cls else function


def tests_for(mutant: str) -> list[str]:
    function = function_of(mutant)
    for prefix, files in TESTS_FOR.items():
        if function.startswith(prefix):
            return files
    return _LOOP


def unkilled(patterns: list[str]) -> list[str]:
    """The mutants matching `patterns` that mutmut's run left survived or without tests."""
    from mutmut.stats import status_by_exit_code

    names = []
    for meta in sorted((MUTANTS / "evq").rglob("*.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if status_by_exit_code[code] in ("survived", "no tests") and any(
                fnmatch.fnmatch(name, pattern) for pattern in patterns
            ):
                names.append(name)
    return names


def run_one(mutant: str, timeout: float, tests: list[str], select: str) -> dict[str, object]:
    env = dict(os.environ, MUTANT_UNDER_TEST=mutant, PY_COLORS="0")
    files = tests or tests_for(mutant)
    if select:
        files = [*files, "-k", select]
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*command, *files],
            cwd=MUTANTS,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"verdict": "timeout", "tests": files, "seconds": round(time.monotonic() - started)}
    failed = [line[7:] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    verdict = {0: "survived", 1: "killed"}.get(done.returncode, f"exit {done.returncode}")
    seconds = round(time.monotonic() - started)
    return {"verdict": verdict, "by": failed[:1], "tests": files, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant names or globs, as for mutmut run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument("--report", action="store_true", help="print the verdicts, run nothing")
    parser.add_argument(
        "--tests", action="append", default=[], help="a test file to run instead of TESTS_FOR's"
    )
    parser.add_argument("-k", dest="select", default="", help="only the tests pytest -k selects")
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = (
        json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    )
    names = unkilled(args.patterns)
    if args.report:
        for name in names:
            result = results.get(name, {"verdict": "not run"})
            print(f"{result['verdict']:9} {name} {' '.join(result.get('by', []))}")  # type: ignore[arg-type]
        return 0
    # A verdict stands for the tests it was run against: other tests run it again.
    todo = [
        name
        for name in names
        if results.get(name, {}).get("tests")
        != [*(args.tests or tests_for(name)), *(["-k", args.select] if args.select else [])]
    ]
    print(f"{len(names)} mutants not killed in the test's process, {len(todo)} to run")
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, result in zip(
            todo,
            pool.map(lambda n: run_one(n, args.timeout, args.tests, args.select), todo),
            strict=True,
        ):
            results[name] = result
            RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))
            print(f"{result['verdict']:9} {name} ({result['seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
