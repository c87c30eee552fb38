"""Benchmark: meal_plans PDFs on an S3 API (moto's server) — archive + delete + redact.

    python benchmarks/bench_meal_plans_pdfs.py [--objects 10000]

Kept for its command line: the case itself (engine against GET + PUT + DELETE one object at a
time, target ≥ 5×) is benchmarks/cases/pdfs.py, which benchmarks/run_all.py runs with the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cases import pdfs  # noqa: E402
from benchmarks.harness import table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=pdfs.OBJECTS["full"])
    results = pdfs.measure(parser.parse_args().objects)
    print(table(results))
    for result in results:
        print(result.details)


if __name__ == "__main__":
    main()
