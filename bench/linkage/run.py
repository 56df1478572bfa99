"""Linkage matching engine bench: accuracy (FEBRL4, Japanese synthetic), batch speed and memory
(`kiban link` on 100k × 100k CSV files, in a child process), streaming rate into a large index.

    uv run python bench/linkage/run.py            # full sizes (several minutes)
    uv run python bench/linkage/run.py --quick    # smaller sizes, same code paths

Every figure is printed next to its target. All data are synthetic (fixed seeds) or FEBRL4.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import febrl
import japanese

from kiban_linkage.domain.matching import (
    Identity,
    MatchIndex,
    MatchModel,
    Normalized,
    link,
    normalize,
)


def _row(name: str, value: str, target: str, ok: bool | None) -> None:
    mark = "" if ok is None else ("  OK" if ok else "  MISSED")
    print(f"  {name:<46} {value:>18}   target {target}{mark}")


def bench_febrl() -> None:
    print("FEBRL4 (5,000 x 5,000; model fitted by EM on the two files, no labels)")
    r = febrl.run()
    _row("F1 at the default threshold", f"{r.f1:.5f}", ">= 0.9996", r.f1 >= 0.9996)
    _row("precision / recall", f"{r.precision:.4f} / {r.recall:.4f}", "-", None)
    _row("false links / missed", f"{r.false_links} / {r.missed}", "-", None)
    _row("possible band (true pairs in it)", f"{r.band} ({r.band_true})", "-", None)
    _row("candidate pairs", f"{r.candidates:,}", "-", None)
    _row("link time (fit + block + score)", f"{r.seconds:.2f} s", "-", None)


def bench_japanese(people: int) -> None:
    print(f"Japanese synthetic ({people:,} people; seed fixed; model fitted by EM, no labels)")
    started = time.perf_counter()
    left, right, left_pid, right_pid, left_kind, _ = japanese.generate(people)
    generated = time.perf_counter() - started
    nl = [normalize(x) for x in left]
    nr = [normalize(x) for x in right]
    started = time.perf_counter()
    result = link(nl, nr)
    seconds = time.perf_counter() - started
    model = result.model
    lp, rp = np.asarray(left_pid), np.asarray(right_pid)
    true = lp[result.left] == rp[result.right]
    p = result.probability
    links = p >= model.link_threshold
    band = (p >= model.possible_threshold) & ~links
    total = len(right)  # every B record has exactly one true partner in A
    precision = (links & true).sum() / max(links.sum(), 1)
    recall_links = (links & true).sum() / total
    recall_all = ((links | band) & true).sum() / total
    kinds = np.asarray(left_kind)[result.left]
    print(f"  A {len(left):,} records, B {len(right):,} records (generated in {generated:.0f} s)")
    _row("precision of automatic links", f"{precision:.4f}", ">= 0.995", precision >= 0.995)
    _row(
        "recall, automatic links + possible band",
        f"{recall_all:.4f}",
        ">= 0.99",
        recall_all >= 0.99,
    )
    _row("recall, automatic links only", f"{recall_links:.4f}", "-", None)
    _row(
        "possible band: pairs (true ones)",
        f"{band.sum():,} ({(band & true).sum():,})",
        "reported",
        None,
    )
    for kind in ("homonym", "twin"):
        wrong = (links & ~true & (kinds == kind)).sum()
        _row(f"false automatic links involving a {kind}", f"{wrong}", "-", None)
    _row("link time (fit + block + score)", f"{seconds:.1f} s", "-", None)


def _write_csv(path: Path, identities: list[Identity]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["id", "sei", "mei", "sei_kana", "mei_kana", "dob", "sex", "zip", "address", "hoken"]
        )
        for i, x in enumerate(identities):
            writer.writerow(
                [
                    i,
                    x.family_name or "",
                    x.given_name or "",
                    x.family_name_kana or "",
                    x.given_name_kana or "",
                    x.birth_date or "",
                    x.sex or "",
                    x.postal_code or "",
                    x.address or "",
                    "|".join(x.insurance_numbers),
                ]
            )


def bench_speed(size: int) -> None:
    print(f"Batch speed: `kiban link` on {size:,} x {size:,} CSV records (child process)")
    left, right, *_ = japanese.generate(size, seed=7, second_share=1.0)
    right = right[:size]
    with tempfile.TemporaryDirectory() as tmp:
        a, b, out = Path(tmp) / "a.csv", Path(tmp) / "b.csv", Path(tmp) / "pairs.csv"
        _write_csv(a, left)
        _write_csv(b, right)
        mapping = (
            "sei=family_name,mei=given_name,sei_kana=family_name_kana,"
            "mei_kana=given_name_kana,dob=birth_date,sex=sex,zip=postal_code,"
            "address=address,hoken=insurance_number"
        )
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        summary = subprocess.run(
            [
                sys.executable,
                "-m",
                "kiban_cli.main",
                "link",
                "--left",
                str(a),
                "--right",
                str(b),
                "--id",
                "id",
                "--map",
                mapping,
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stderr.strip()
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime - cpu_before
        with out.open(encoding="utf-8") as handle:
            written = sum(1 for _ in handle) - 1
    peak = max(peak_kib, before) / 1024 / 1024
    full = size >= 100_000
    _row(
        "wall time (read, normalize, fit, link, write)",
        f"{seconds:.1f} s",
        "<= 20 s",
        seconds <= 20 if full else None,
    )
    _row("CPU time of the process (user + system)", f"{cpu:.1f} s", "-", None)
    _row("peak RSS of the process", f"{peak:.2f} GB", "<= 1.5 GB", peak <= 1.5 if full else None)
    _row("links written", f"{written:,}", "-", None)
    print(f"  {summary}")


class _GcTimer:
    """Time spent in the garbage collector (and full collections) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _stream_once(
    model: MatchModel,
    index_records: list[Normalized],
    stream_records: list[Normalized],
    run: int,
    freeze: bool,
) -> dict[str, float]:
    index = MatchIndex(model)
    started = time.perf_counter()
    index.add_many(index_records)
    built = time.perf_counter() - started
    # As the service does after loading its index (kiban_linkage.context.Linkage.freeze):
    # the index's millions of long-lived objects leave the collector's generations, so no full
    # collection walks them in the measured window.
    if freeze:
        gc.collect()
        gc.freeze()
    # the scalar path (one `probability` per candidate) on the first records, then the batch
    # path (`match_and_add`, a consumer batch of 500 scored at once) on the rest: same results
    scalar_n = min(len(stream_records) // 4, 2_000)
    load = os.getloadavg()[0]
    linked = 0
    with _GcTimer() as scalar_gc:
        started, cpu = time.perf_counter(), time.process_time()
        for record in stream_records[:scalar_n]:
            matches = index.match(record)
            linked += bool(matches and matches[0][1] >= model.link_threshold)
            index.add(record)
        scalar_seconds = time.perf_counter() - started
        scalar_cpu = time.process_time() - cpu
    rest = stream_records[scalar_n:]
    with _GcTimer() as batch_gc:
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(rest), 500):
            for matches in index.match_and_add(rest[start : start + 500]):
                linked += bool(matches and matches[0][1] >= model.link_threshold)
        seconds = time.perf_counter() - started
        batch_cpu = time.process_time() - cpu
    result = {
        "scalar": scalar_n / scalar_seconds,
        "scalar_cpu": scalar_n / scalar_cpu,
        "batch": len(rest) / seconds,
        "batch_cpu": len(rest) / batch_cpu,
        "gc": scalar_gc.seconds + batch_gc.seconds,
        "gc_full": scalar_gc.full + batch_gc.full,
        "linked": linked,
        "load": load,
    }
    print(
        f"  run {run}: index built in {built:.0f} s; load {load:.1f}; scalar "
        f"{result['scalar']:,.0f}/s ({result['scalar_cpu']:,.0f} per CPU s); batches of 500 "
        f"{result['batch']:,.0f}/s ({result['batch_cpu']:,.0f} per CPU s); GC "
        f"{result['gc']:.2f} s ({result['gc_full']:.0f} full); linked {linked:,}",
        flush=True,
    )
    del index
    gc.unfreeze()  # the next run builds its own index; this one's objects may go now
    gc.collect()
    return result


def bench_streaming(index_size: int, stream: int, repeat: int, freeze: bool = True) -> None:
    print(
        f"Streaming: records matched then added into a {index_size:,}-record index "
        f"(median of {repeat} runs, each on a freshly built index"
        f"{'' if freeze else '; garbage collector NOT frozen after the build'})"
    )
    started = time.perf_counter()
    people, *_ = japanese.generate(index_size, seed=11, second_share=0.0)
    # the stream: half new people, half people of the index seen again at another institution
    fresh, *_ = japanese.generate(stream // 2, seed=13, second_share=0.0)
    _, again, *_ = japanese.generate(stream, seed=11, second_share=0.5)
    index_records = [normalize(x) for x in people]
    stream_records = [normalize(x) for x in (fresh + again)[:stream]]
    del people, fresh, again
    prepared = time.perf_counter() - started
    # The service refits on its vault, which holds people seen at several institutions: fit on
    # such a sample (an index of distinct people only has no matches for EM to learn from).
    sample_a, sample_b, *_ = japanese.generate(20_000, seed=12)
    model = link([normalize(x) for x in sample_a], [normalize(x) for x in sample_b]).model
    print(f"  (data generated and normalized in {prepared:.0f} s)", flush=True)
    runs = [
        _stream_once(model, index_records, stream_records, i + 1, freeze) for i in range(repeat)
    ]

    def median(name: str) -> float:
        return float(statistics.median(r[name] for r in runs))

    _row("records/s, scalar path (match + add)", f"{median('scalar'):,.0f}", "-", None)
    _row("  per CPU second", f"{median('scalar_cpu'):,.0f}", "-", None)
    rate = median("batch")
    _row(
        "records/s, batches of 500 (match_and_add)",
        f"{rate:,.0f}",
        ">= 5,000",
        rate >= 5000 if index_size >= 1_000_000 else None,
    )
    _row("  per CPU second", f"{median('batch_cpu'):,.0f}", "-", None)
    _row("GC time in the measured window", f"{median('gc'):.2f} s", "-", None)
    _row(
        "records linked to an existing person",
        f"{median('linked'):,.0f}",
        f"~{stream // 2:,}",
        None,
    )
    _row("load average at the start of the runs", f"{median('load'):.1f}", "-", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", choices=["febrl", "japanese", "speed", "streaming"])
    parser.add_argument(
        "--repeat", type=int, default=3, help="streaming runs (the median is reported)"
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="streaming: leave the index in the collector's generations (the old behaviour)",
    )
    args = parser.parse_args()
    people = 20_000 if args.quick else 200_000
    size = 20_000 if args.quick else 100_000
    index_size = 100_000 if args.quick else 1_000_000
    runs = {
        "febrl": bench_febrl,
        "japanese": lambda: bench_japanese(people),
        "speed": lambda: bench_speed(size),
        "streaming": lambda: bench_streaming(
            index_size, 20_000, max(1, args.repeat), freeze=not args.no_gc_freeze
        ),
    }
    for name, run in runs.items():
        if args.only in (None, name):
            run()
            print()


if __name__ == "__main__":
    main()
