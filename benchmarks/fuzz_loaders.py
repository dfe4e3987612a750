"""A long fuzzing run of the loaders and the chunker (CI runs the same tests, 100 examples each).

    python benchmarks/fuzz_loaders.py                 # 5,000 examples per fuzz test
    python benchmarks/fuzz_loaders.py --examples 50000

Prints the pytest summary and the wall time as JSON; exits non-zero on any crash. A crash that
hypothesis finds is printed with its minimal input: add it to tests/test_fuzz.py as an @example.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--examples", type=int, default=5000, help="hypothesis examples per fuzz test"
    )
    args = parser.parse_args()
    env = {**os.environ, "SBERT_FUZZ_EXAMPLES": str(args.examples)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(result.stdout[-5000:])
    print(
        json.dumps(
            {
                "examples_per_test": args.examples,
                "summary": summary,
                "seconds": round(time.perf_counter() - started, 1),
                "exit_code": result.returncode,
            }
        )
    )
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
