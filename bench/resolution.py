"""Resolution at scale: load a generated management group, resolve it, change it, explain it.

    .venv/bin/python bench/generate.py --scale 1.0
    .venv/bin/python bench/resolution.py --scale 1.0

Prints one line per figure with its target and OK/MISSED, and the outcome mix. Run it alone on
the machine: it measures wall-clock time and peak memory (Linux: /proc for the current RSS).

The association change is measured twice: *cold* (no state cached: the change, then every
affected state built from scratch) and with *every computer state current* (all 100,000
materialised first: the change patches each affected state; a sample is then checked against
states built from scratch, untimed).
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from generate import FLEET_PROFILE, LARGE_GROUP, OUT
from runas.domain.bulk import ResolutionIndex
from runas.domain.model import Association, TargetKind
from runas.domain.resolution import Outcome
from runas.services.snapshot import Snapshot, load_snapshot
from runas.storage.database import Database

T = TypeVar("T")
GIB = 1024**3


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    clock = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - clock


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def line(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
    tail = "" if ok is None else f"  target {target:>9}  {verdict(ok)}"
    print(f"{label:<48} {value:>12}{tail}")


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def explain_pairs(snapshot: Snapshot, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """Random (workflow with a profile, object it runs for) pairs."""
    t = snapshot.objects
    h = snapshot.hierarchy
    by_class: dict[int, list[int]] = {}
    for pos, cls in enumerate(t.class_ix):
        by_class.setdefault(cls, []).append(pos)
    runs_for: dict[str, list[int]] = {}
    workflows = [w for w in snapshot.workflows if w.profile is not None]
    pairs: list[tuple[str, int]] = []
    while len(pairs) < count:
        w = rng.choice(workflows)
        if w.target not in runs_for:
            runs_for[w.target] = [
                cls for cls, name in enumerate(t.class_names) if h.is_a(name, w.target)
            ]
        classes = runs_for[w.target]
        if classes:
            pos = rng.choice(by_class[rng.choice(classes)])
            pairs.append((w.id, t.ids[pos]))
    return pairs


def fleet_association(snapshot: Snapshot) -> Association:
    account = next(a for a in snapshot.accounts if a.type.value == "windows")
    return Association(
        id=10**9,
        profile=FLEET_PROFILE,
        account_id=account.id,
        account_name=account.name,
        target_kind=TargetKind.GROUP,
        target=LARGE_GROUP,
    )


def bench_change_cold(index: ResolutionIndex, snapshot: Snapshot) -> None:
    """No state cached: the change, then every affected state built from scratch."""
    assoc = fleet_association(snapshot)
    members = index.group_members(LARGE_GROUP)
    line(f"association change, cold: group of {len(members):,} objects", "")
    for label, change in (
        ("add", lambda: index.add_association(assoc)),
        ("remove", lambda: index.remove_association(assoc.id)),
    ):
        index.drop_states()
        changed, t_change = timed(change)
        _, t_states = timed(lambda: [index.computer_state(c) for c in changed])  # noqa: B023
        total = t_change + t_states
        line(f"  {label}: change ({len(changed):,} computers)", f"{t_change * 1000:.0f} ms")
        line(f"  {label}: + build each affected state", f"{total * 1000:.0f} ms")
    index.drop_states()


def materialise_all(index: ResolutionIndex) -> None:
    rss_before = current_rss_bytes()
    computers = index.computers()
    _, took = timed(lambda: [index.computer_state(c) for c in computers])
    line(f"materialise every computer state ({len(computers):,})", f"{took:.1f} s")
    line("  memory they hold (RSS growth)", f"{(current_rss_bytes() - rss_before) / GIB:.2f} GiB")
    counts = dict.fromkeys(Outcome, 0)
    for c in computers:
        for outcome, n in index.computer_state(c).outcome_counts().items():
            counts[outcome] += n
    total = sum(counts.values())
    line("outcome mix of every (profile, object) pair of the states", f"{total:,}")
    for outcome in Outcome:
        line(f"  {outcome.value}", f"{counts[outcome] * 100 / total:.1f} %")
    runs = counts[Outcome.ACCOUNT] + counts[Outcome.ACTION_ACCOUNT]
    line("  runs (account or action account)", f"{runs * 100 / total:.1f} %")


def bench_change(index: ResolutionIndex, snapshot: Snapshot, checks: int) -> None:
    """Every state materialised: the change patches each affected state."""
    assoc = fleet_association(snapshot)
    rng = random.Random(5)
    members = index.group_members(LARGE_GROUP)
    line(f"association change, every state current: group of {len(members):,}", "")
    for label, change in (
        ("add", lambda: index.add_association(assoc)),
        ("remove", lambda: index.remove_association(assoc.id)),
    ):
        epochs = {c: index.epoch(c) for c in index.computers()}
        changed, took = timed(change)
        line(f"  {label}: computers whose state changed", f"{len(changed):,}")
        line(
            f"  {label}: change -> every affected state patched",
            f"{took * 1000:.0f} ms",
            "200 ms",
            took <= 0.2,
        )
        # Not timed: the patched states are the states a rebuild gives, digests included,
        # and exactly the changed computers moved.
        sample = rng.sample(sorted(changed), min(checks, len(changed)))
        equal = sum(index.computer_state(c) == index.fresh_state(c) for c in sample)
        same_digest = sum(
            index.computer_state(c).digest == index.fresh_state(c).digest for c in sample
        )
        moved = {c for c in index.computers() if index.epoch(c) != epochs[c]}
        line(f"  {label}: patched == rebuilt (sample)", f"{equal}/{len(sample)}")
        line(f"  {label}: same digest (sample)", f"{same_digest}/{len(sample)}")
        line(f"  {label}: epochs bumped == changed", str(moved == changed))


def bench_explain(index: ResolutionIndex, snapshot: Snapshot, count: int) -> None:
    pairs = explain_pairs(snapshot, count, random.Random(7))
    for w, o in pairs[:50]:  # warm the per-class memos of the hierarchy
        index.explain(w, o)
    samples = []
    for w, o in pairs:
        _, took = timed(lambda w=w, o=o: index.explain(w, o))  # type: ignore[misc]
        samples.append(took)
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[int(len(samples) * 0.99) - 1]
    line(f"explain p50 ({count:,} random workflow/object)", f"{p50 * 1000:.2f} ms")
    line("explain p99", f"{p99 * 1000:.2f} ms", "2 ms", p99 <= 0.002)


def bench_states(index: ResolutionIndex, count: int) -> None:
    rng = random.Random(11)
    computers = rng.sample(index.computers(), min(count, len(index.computers())))
    samples = []
    for c in computers:
        _, took = timed(lambda c=c: index.fresh_state(c))  # type: ignore[misc]
        samples.append(took)
    states = [index.computer_state(c) for c in computers]
    line(
        f"computer state from scratch, mean of {len(computers):,}",
        f"{statistics.mean(samples) * 1000:.2f} ms",
    )
    line("  entries per computer (mean)", f"{statistics.mean(len(s) for s in states):.0f}")
    line(
        "  listed entries per computer (mean)", f"{statistics.mean(s.listed() for s in states):.0f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="resolution at scale")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database-url", help="default: the SQLite file of generate.py")
    parser.add_argument("--explain", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=500, help="patched states checked")
    args = parser.parse_args(argv)
    url = args.database_url
    if url is None:
        path = OUT / f"mg-{args.scale:g}.db"
        if not path.exists():
            print(
                f"{path} not found: run bench/generate.py --scale {args.scale:g}", file=sys.stderr
            )
            return 1
        url = f"sqlite:///{path}"

    db = Database(url)
    # The index is long-lived and built once: the cyclic GC would rescan its millions of
    # containers on every generation-2 pass, for nothing. Frozen objects are skipped.
    gc.disable()
    try:
        snapshot, t_load = timed(lambda: load_snapshot(db))
    finally:
        db.dispose()
    timings: dict[str, float] = {}
    index, t_build = timed(lambda: snapshot.index(timings))
    gc.freeze()
    gc.enable()

    print(f"database: {db.display_url}  python {sys.version.split()[0]}")
    print(
        f"objects {len(snapshot.objects):,}  computers {len(index.computers()):,}  "
        f"groups {len(snapshot.groups):,}  profiles {len(snapshot.profiles):,}  "
        f"workflows {len(snapshot.workflows):,}  accounts {len(snapshot.accounts):,}  "
        f"associations {len(snapshot.associations):,}"
    )
    pairs = sum(sum(1 for _ in index.targeted_objects(p)) for p in index.resolved_profiles())
    line("(profile, object) pairs resolved", f"{pairs:,}")
    for part, seconds in snapshot.timings.items():
        line(f"  load: {part}", f"{seconds:.2f} s")
    line("load from the database", f"{t_load:.2f} s")
    line("  index objects", f"{timings['index']:.2f} s")
    line("  evaluate groups", f"{timings['groups']:.2f} s")
    line("  resolve", f"{timings['resolve']:.2f} s")
    total = t_load + t_build
    line("full resolution (load + groups + resolve)", f"{total:.2f} s", "30 s", total <= 30)
    bench_change_cold(index, snapshot)
    materialise_all(index)
    bench_change(index, snapshot, args.checks)
    bench_explain(index, snapshot, args.explain)
    bench_states(index, 2000)
    peak = peak_rss_bytes()
    line("peak memory (ru_maxrss)", f"{peak / GIB:.2f} GiB", "4 GiB", peak <= 4 * GIB)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
