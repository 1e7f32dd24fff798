"""Benchmark: Entra mapping expressions over a generated directory, column-wise vs row by row (issue 14).

    .venv/bin/python scripts/bench_expressions.py --rows 1000000 [--scalar-rows 100000] [--seed 14]

Generates a staged directory of `--rows` users with realistic cardinalities (~100k distinct given names
and surnames, ~60 countries, ~200 departments, ~500 offices with 20% missing, ~1,000 cities with 10%
missing, a unique mail per user, diacritics in some names and mails), then for each of five typical
mapping expressions reports:

- column-wise: `expression_columns.evaluate_columns` over all rows (wall seconds, best of `--repeat`);
- peak memory of that evaluation: tracemalloc's peak (Python objects and numpy buffers allocated during
  the call, the frame itself excluded), measured in a separate traced run since tracing slows the call;
- row by row: `expression_values.evaluate` on the first `--scalar-rows` rows (building each row's
  attribute dict included), extrapolated linearly to `--rows` for the "before" figure; those rows'
  values are checked equal (types included) to the column-wise ones.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from frankli_sync.config import FieldMapping
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expression_columns import _evaluate, evaluate_columns, scalar_evaluator
from frankli_sync.expressions import attributes_of, parse
from frankli_sync.mapped_fields import mapped_field

EXPRESSIONS = [
    'Join(" ", [givenName], [surname])',
    'Switch([country], "Other", "IE", "Ireland", "DE", "Germany", "US", "United States")',
    'Coalesce([officeLocation], [city], "Remote")',
    "ToLower(NormalizeDiacritics([mail]))",
    'IIF([country]="US", Left([surname], 3), Mid([givenName], 2, 3))',
]

_SYLLABLES = "ka lo mi ne ru sa ta vi yo ze an el is or ul ber dan fin gor hal jen kor lin mar nor per".split()  # noqa: SIM905
_ACCENTED = ["é", "ø", "ü", "å", "ñ", "ç", "ž", "ł", "æ", "ő"]


def _names(rng: np.random.Generator, count: int, accented_share: float) -> np.ndarray:
    """`count` distinct capitalised names, some with a letter with a diacritic."""
    names: set[str] = set()
    while len(names) < count:
        parts = rng.integers(0, len(_SYLLABLES), size=(count, 4))
        lengths = rng.integers(2, 5, size=count)
        accents = rng.random(count) < accented_share
        for row, length, accent in zip(parts, lengths, accents, strict=True):
            name = "".join(_SYLLABLES[p] for p in row[:length])
            if accent:
                name = name[:2] + _ACCENTED[int(row[0]) % len(_ACCENTED)] + name[2:]
            names.add(name.capitalize())
            if len(names) == count:
                break
    return np.array(sorted(names), dtype=object)


def directory(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    given_pool = _names(rng, 100_000, 0.05)
    surname_pool = _names(rng, 100_000, 0.08)
    given = given_pool[rng.integers(0, len(given_pool), rows)]
    surname = surname_pool[rng.integers(0, len(surname_pool), rows)]
    countries = np.array(["US", "IE", "DE", *[f"C{i:02}" for i in range(57)]], dtype=object)
    country = countries[np.minimum(rng.zipf(1.6, rows) - 1, len(countries) - 1)]  # a few countries hold most
    departments = np.array([f"Department {i}" for i in range(200)], dtype=object)
    department = departments[rng.integers(0, 200, rows)]
    offices = np.array([f"Office {i}" for i in range(500)], dtype=object)
    office = offices[rng.integers(0, 500, rows)]
    office[rng.random(rows) < 0.2] = None
    cities = np.array([f"City {i}" for i in range(1000)], dtype=object)
    city = cities[rng.integers(0, 1000, rows)]
    city[rng.random(rows) < 0.1] = None
    mail = np.array(
        [f"{g}.{s}{i}@Contoso.com" for i, (g, s) in enumerate(zip(given, surname, strict=True))], dtype=object
    )
    frame = pd.DataFrame(
        {
            "object_id": [f"id-{i}" for i in range(rows)],
            "given_name": given,
            "surname": surname,
            "country": country,
            "department": department,
            "office_location": office,
            "city": city,
            "mail": mail,
        }
    )
    return frame


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scalar-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="column-wise runs per expression (best is reported)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()

    started = time.perf_counter()
    frame = directory(args.rows, args.seed)
    built = time.perf_counter() - started
    print(f"generated {len(frame):,} rows in {built:.1f} s; distinct per column:")
    print(", ".join(f"{c} {frame[c].nunique(dropna=False):,}" for c in frame.columns if c != "object_id"))
    print()

    scalar_rows = min(args.scalar_rows, args.rows)
    head = frame.iloc[:scalar_rows]
    rows_out = []
    totals = [0.0, 0.0, 0.0, 0.0]
    for text in EXPRESSIONS:
        tree = parse(text)
        gc.collect()
        seconds = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = evaluate_columns(tree, frame)
            seconds = min(seconds, time.perf_counter() - start)
        _, fallbacks = _evaluate(tree, frame.iloc[:1000], ENTRA_ATTRIBUTES, None)
        # What the sync pays per field: the same evaluation, then the values as Frankli stores them
        # (trimmed, blank cleared, measured against a 255-character column; `mapped_fields.mapped_field`).
        as_field = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            mapped_field("field", FieldMapping(None, "always", text), frame, max_length=255)
            as_field = min(as_field, time.perf_counter() - start)

        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        evaluate_columns(tree, frame)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

        names = sorted(attributes_of(tree))
        arrays = [head[ENTRA_ATTRIBUTES[n]].to_numpy(dtype=object, na_value=None) for n in names]
        evaluate = scalar_evaluator()
        gc.collect()
        start = time.perf_counter()
        expected = [evaluate(tree, dict(zip(names, values, strict=True))) for values in zip(*arrays, strict=True)]
        scalar_seconds = time.perf_counter() - start
        extrapolated = scalar_seconds * args.rows / scalar_rows
        equal = all(_same(a, b) for a, b in zip(expected, result.iloc[:scalar_rows], strict=True))

        totals[0] += seconds
        totals[1] += extrapolated
        totals[2] = max(totals[2], peak)
        totals[3] += as_field
        rows_out.append(
            f"| `{text}` | {seconds:.2f} | {as_field:.2f} | {peak / 2**20:.0f} | {rss_growth / 1024:.0f} | "
            f"{scalar_seconds:.2f} | {extrapolated:.1f} | {extrapolated / seconds:.0f}x | "
            f"{'yes' if equal else 'NO'}{' (fallback: ' + '; '.join(fallbacks) + ')' if fallbacks else ''} |"
        )
        print(f"done: {text} ({seconds:.2f} s)", file=sys.stderr)

    print(
        f"| expression ({args.rows:,} rows) | column-wise s | as Frankli values s | tracemalloc peak MiB | "
        "ru_maxrss growth MiB | "
        f"row-by-row s ({scalar_rows:,} rows) | row-by-row s extrapolated to {args.rows:,} | speed-up | "
        f"equal on the {scalar_rows:,} rows |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows_out))
    print(
        f"| **total (five expressions)** | **{totals[0]:.2f}** | **{totals[3]:.2f}** | "
        f"max {totals[2] / 2**20:.0f} | | | "
        f"**{totals[1]:.1f}** | **{totals[1] / totals[0]:.0f}x** | |"
    )
    print()
    print(
        f"frame generation {built:.1f} s; process ru_maxrss at the end "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (Linux reports KiB). tracemalloc peak: "
        "Python objects and numpy buffers allocated during one evaluate_columns call, the input frame excluded; "
        "ru_maxrss growth: the process high-water mark's rise during that (traced) call, 0 when it stayed below "
        "an earlier peak."
    )


if __name__ == "__main__":
    main()
