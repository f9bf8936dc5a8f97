"""explain as the CLI runs it locally: straight from the database, one transaction per call.

    .venv/bin/python bench/generate.py --scale 1.0
    .venv/bin/python bench/explain_db.py --scale 1.0

The CLI in local mode has no resolution index in memory: each ``runas explain`` loads just the
slice of the management group the question needs (services/catalog.py). This prints its
latency over random (workflow, object) pairs of the generated management group, next to the
in-memory index's figure that bench/resolution.py prints.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sqlalchemy import select

from generate import OUT
from runas.services import explain
from runas.storage.database import Database
from runas.storage.tables import ObjectRow, WorkflowRow


def pairs(db: Database, count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    with db.session() as s:
        workflows = list(
            s.execute(
                select(WorkflowRow.id, WorkflowRow.target_class).where(
                    WorkflowRow.profile_id.is_not(None)
                )
            )
        )
        max_id = s.scalar(select(ObjectRow.id).order_by(ObjectRow.id.desc()).limit(1)) or 0
        out: list[tuple[str, str]] = []
        while len(out) < count:
            wid, target = rng.choice(workflows)
            oid = s.scalar(
                select(ObjectRow.id)
                .where(ObjectRow.class_id == target, ObjectRow.id >= rng.randint(1, max_id))
                .order_by(ObjectRow.id)
                .limit(1)
            )
            if oid is not None:
                out.append((wid, str(oid)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="explain from the database")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database-url", help="default: the SQLite file of generate.py")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{OUT / f'mg-{args.scale:g}.db'}"
    db = Database(url)
    try:
        sample = pairs(db, args.count, seed=20261121)
        times: list[float] = []
        for workflow, obj in sample:
            with db.session() as s:
                start = time.perf_counter()
                explain.explain(s, obj_ref=obj, workflow=workflow)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        db.dispose()
    times.sort()
    p99 = times[min(len(times) - 1, round(len(times) * 0.99))]
    print(f"explain from the database, {len(times)} random workflow/object pairs")
    print(f"  p50 {statistics.median(times):8.1f} ms")
    print(f"  p99 {p99:8.1f} ms")
    print(f"  max {times[-1]:8.1f} ms")


if __name__ == "__main__":
    main()
