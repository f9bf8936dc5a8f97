"""Write a synthetic management group into a database, for bench/resolution.py.

    .venv/bin/python bench/generate.py                      # full scale, bench/out/mg-1.db
    .venv/bin/python bench/generate.py --scale 0.01         # a quick one
    .venv/bin/python bench/generate.py --database-url postgresql://user@host/db

Full scale (``--scale 1.0``): 100,000 computers and 1,000,000 objects *including* the
computers (each computer hosts exactly 9 objects), of 20 classes three levels deep; 2,000
groups; 500 profiles (+ the Default Action Account) used by about 2,250 workflows, plus 500
workflows without a profile; 10,000 accounts; 50,000 associations (every target kind: a
few hundred broad class/all ones, then groups and objects); 500,000 distribution entries.
The outcome mix is that of a management group that mostly resolves (see ``accounts``,
``associations``, ``distribution``). Deterministic for a given ``--seed``. The schema comes from the
real migrations; rows go in with Core ``insert()`` executemany in large batches. No secret is
written: ``secret_versions`` stays empty (resolution never reads it).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert

from runas.domain.model import COMPUTER_CLASS, DEFAULT_ACTION_PROFILE, ENTITY_CLASS
from runas.storage import migrate
from runas.storage.database import Database
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    ClassRow,
    DistributionRow,
    GroupRow,
    ObjectRow,
    PackRow,
    ProfileRow,
    WorkflowRow,
)

OUT = Path(__file__).resolve().parent / "out"
BATCH = 50_000
PACK = "bench.synthetic"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# (id, base, abstract): 20 classes of the bench pack, three levels below their roots.
CLASSES: tuple[tuple[str, str, bool], ...] = (
    ("Bench.Windows.Computer", COMPUTER_CLASS, False),
    ("Bench.Windows.Server", "Bench.Windows.Computer", False),
    ("Bench.Linux.Computer", COMPUTER_CLASS, False),
    ("Bench.App", ENTITY_CLASS, True),
    ("Bench.Database", "Bench.App", True),
    ("Bench.Sql.Database", "Bench.Database", False),
    ("Bench.Postgres.Database", "Bench.Database", False),
    ("Bench.Oracle.Database", "Bench.Database", False),
    ("Bench.WebSite", "Bench.App", True),
    ("Bench.IIS.Site", "Bench.WebSite", False),
    ("Bench.Apache.Site", "Bench.WebSite", False),
    ("Bench.Service", "Bench.App", True),
    ("Bench.Windows.Service", "Bench.Service", False),
    ("Bench.Linux.Daemon", "Bench.Service", False),
    ("Bench.Sql.Instance", "Bench.App", False),
    ("Bench.Postgres.Cluster", "Bench.App", False),
    ("Bench.Disk", "Bench.App", True),
    ("Bench.Windows.Disk", "Bench.Disk", False),
    ("Bench.Linux.FileSystem", "Bench.Disk", False),
    ("Bench.Certificate", "Bench.App", False),
)
#: What a computer of each OS hosts (9 objects, drawn with these weights).
HOSTED = {
    "windows": (
        ("Bench.Windows.Service", 30),
        ("Bench.Windows.Disk", 20),
        ("Bench.IIS.Site", 10),
        ("Bench.Sql.Instance", 8),
        ("Bench.Sql.Database", 17),
        ("Bench.Certificate", 10),
        ("Bench.Oracle.Database", 5),
    ),
    "linux": (
        ("Bench.Linux.Daemon", 30),
        ("Bench.Linux.FileSystem", 20),
        ("Bench.Apache.Site", 12),
        ("Bench.Postgres.Cluster", 8),
        ("Bench.Postgres.Database", 15),
        ("Bench.Certificate", 10),
        ("Bench.Oracle.Database", 5),
    ),
}
HOSTED_PER_COMPUTER = 9
SITES = 50
#: ``rack`` spreads hosted objects over 180 values: "Bench.App where rack = r" holds ~5,000.
RACKS = 180
ENVS = ("prod", "prod", "prod", "test", "dev")
TIERS = ("gold", "silver", "bronze")
ACCOUNT_TYPES = (
    ("windows", 40),
    ("simple", 15),
    ("basic", 8),
    ("digest", 3),
    ("action", 5),
    ("binary", 4),
    ("community-string", 5),
    ("snmpv3", 5),
    ("unix-monitoring", 10),
    ("unix-maintenance", 5),
)
#: Baseline accounts that are more secure (approved on 30 of the 50 sites): the source of the
#: few per cent of "credentials not found".
BASELINE_MORE_SECURE = 5
#: The group bench/resolution.py associates to measure one change.
LARGE_GROUP = "Bench.Group.Rack7"
#: The profile it associates: its workflows target every hosted application.
FLEET_PROFILE = "Bench.Profile.Fleet"


def batches(rows: Iterator[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def insert_all(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    for batch in batches(rows):
        conn.execute(insert(table), batch)
        n += len(batch)
    return n


def weighted(rng: random.Random, choices: Sequence[tuple[str, int]], k: int) -> list[str]:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices], k=k)


class Generator:
    def __init__(self, scale: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n_computers = max(20, int(100_000 * scale))
        self.n_groups = max(20, int(2_000 * scale))
        self.n_profiles = max(10, int(500 * scale))
        self.n_accounts = max(20, int(10_000 * scale))
        self.n_assocs = max(50, int(50_000 * scale))
        self.n_distribution = max(100, int(500_000 * scale))
        self.computers: list[str] = []
        #: class of each computer (by computer index), for the action accounts' distribution
        self.computer_class: list[str] = []
        self.by_class: dict[str, list[int]] = {}
        self.full_names: list[str] = [""]  # object ids start at 1
        self.object_computer: list[int] = [0]

    # -- content ---------------------------------------------------------------------------

    def packs(self) -> Iterator[dict[str, Any]]:
        for pid in ("runas.system", PACK):
            yield {
                "id": pid,
                "version": "1.0.0",
                "display_name": pid,
                "description": "",
                "references": [],
                "source_text": "",
                "imported_at": NOW,
                "imported_by": "bench",
            }

    def classes(self) -> Iterator[dict[str, Any]]:
        base = {"description": "", "key_properties": [], "properties": []}
        yield {**base, "id": ENTITY_CLASS, "pack_id": "runas.system", "display_name": "Entity",
               "base_id": None, "abstract": True, "host_class_id": None}  # fmt: skip
        yield {**base, "id": COMPUTER_CLASS, "pack_id": "runas.system", "display_name": "Computer",
               "base_id": ENTITY_CLASS, "abstract": False, "host_class_id": None,
               "key_properties": ["name"]}  # fmt: skip
        for cid, parent, abstract in CLASSES:
            hosted = not cid.endswith("Computer") and not cid.endswith("Server")
            yield {
                **base,
                "id": cid,
                "pack_id": PACK,
                "display_name": cid,
                "base_id": parent,
                "abstract": abstract,
                "host_class_id": COMPUTER_CLASS if parent == ENTITY_CLASS and hosted else None,
                "key_properties": ["name"] if hosted and parent == ENTITY_CLASS else [],
            }

    # -- objects ---------------------------------------------------------------------------

    def objects(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        oid = 0
        for i in range(self.n_computers):
            windows = rng.random() < 0.6
            cls = (
                ("Bench.Windows.Server" if rng.random() < 0.5 else "Bench.Windows.Computer")
                if windows
                else "Bench.Linux.Computer"
            )
            name = f"host{i:06d}.corp{i % 5}.example"
            self.computers.append(name)
            self.computer_class.append(cls)
            site = f"site{i % SITES:02d}"
            env = rng.choice(ENVS)
            oid += 1
            host = oid
            self.record(oid, cls, f"{cls}:{name}", i)
            yield {
                "id": oid,
                "class_id": cls,
                "full_name": f"{cls}:{name}",
                "key_values": [name],
                "properties": {"site": site, "env": env, "os": "windows" if windows else "linux"},
                "host_id": None,
                "computer_name": name,
                "created_at": NOW,
                "updated_at": NOW,
            }
            kinds = weighted(rng, HOSTED["windows" if windows else "linux"], HOSTED_PER_COMPUTER)
            for j, hcls in enumerate(kinds):
                oid += 1
                key = f"{hcls.rsplit('.', 1)[-1].lower()}{j}"
                full = f"{hcls}:{name};{key}"
                self.record(oid, hcls, full, i)
                yield {
                    "id": oid,
                    "class_id": hcls,
                    "full_name": full,
                    "key_values": [name, key],
                    "properties": {
                        "site": site,
                        "env": env,
                        "rack": f"r{rng.randrange(RACKS)}",
                        "tier": rng.choice(TIERS),
                        "version": f"{rng.randrange(8, 17)}.{rng.randrange(4)}",
                    },
                    "host_id": host,
                    "computer_name": name,
                    "created_at": NOW,
                    "updated_at": NOW,
                }

    def record(self, oid: int, cls: str, full_name: str, computer: int) -> None:
        self.by_class.setdefault(cls, []).append(oid)
        self.full_names.append(full_name)
        self.object_computer.append(computer)

    # -- groups ----------------------------------------------------------------------------

    def groups(self) -> Iterator[dict[str, Any]]:
        """Half by rule (equality first, so the property index applies, as in real dynamic
        groups: "SQL databases of site 12"), half explicit lists; one in ten nests others."""
        rng = self.rng
        concrete = [c for c, _, abstract in CLASSES if not abstract]
        every = [c for c, _, _ in CLASSES]
        self.group_class: dict[str, str] = {}
        #: the site of a rule group's "site = S" condition (its associations use S's account)
        self.group_site: dict[str, int] = {}
        for g in range(self.n_groups):
            gid = LARGE_GROUP if g == 0 else f"Bench.Group.{g:04d}"
            rules: list[dict[str, Any]] = []
            members: list[str] = []
            if g == 0:
                rules = [{"class_id": "Bench.App", "conditions": [_eq("rack", "r7")]}]
                self.group_class[gid] = "Bench.App"
            elif g % 2 == 0:
                cls = rng.choice(every)
                site = rng.randrange(SITES)
                self.group_site[gid] = site
                conds = [_eq("site", f"site{site:02d}")]
                if rng.random() < 0.5:
                    conds.append(_eq("env", rng.choice(ENVS)))
                if rng.random() < 0.2:
                    conds.append(
                        {
                            "property": "version",
                            "op": "starts_with",
                            "value": f"1{rng.randrange(7)}",
                        }
                    )
                rules = [{"class_id": cls, "conditions": conds}]
                self.group_class[gid] = cls
            else:
                cls = rng.choice(concrete)
                pool = self.by_class[cls]
                size = min(len(pool), int(rng.lognormvariate(3.5, 1.2)) + 1)
                members = [self.full_names[o] for o in rng.sample(pool, size)]
                self.group_class[gid] = cls
            includes = []
            if g > 10 and rng.random() < 0.1:
                includes = [
                    f"Bench.Group.{rng.randrange(1, g):04d}" for _ in range(rng.randint(1, 3))
                ]
                includes = sorted(set(includes))
            yield {
                "id": gid,
                "pack_id": PACK,
                "display_name": gid,
                "description": "",
                "members": members,
                "rules": rules,
                "includes": includes,
            }

    # -- profiles and workflows ------------------------------------------------------------

    def profiles(self) -> Iterator[dict[str, Any]]:
        """Each profile targets one class (four in five a concrete one), like a management
        pack's "SQL monitoring account"; one in ten cannot fall back (the UNIX profiles)."""
        rng = self.rng
        concrete = [c for c, _, abstract in CLASSES if not abstract and "Computer" not in c]
        abstract = ["Bench.Database", "Bench.WebSite", "Bench.Service", "Bench.Disk"]
        self.profile_target: dict[str, str] = {}
        self.profile_fallback: dict[str, bool] = {}
        base = {
            **{"pack_id": PACK, "description": "", "accessibility": "public"},
            **{"allowed_types": [], "ordered": False, "max_accounts": None, "row_version": 1},
        }
        yield {**base, "id": DEFAULT_ACTION_PROFILE, "pack_id": "runas.system",
               "display_name": "Default Action Account", "context_class": COMPUTER_CLASS,
               "fallback": True, "allowed_types": ["action"]}  # fmt: skip
        yield {**base, "id": FLEET_PROFILE, "display_name": "Fleet", "context_class": "Bench.App",
               "fallback": True}  # fmt: skip
        self.profile_target[FLEET_PROFILE] = "Bench.App"
        for p in range(self.n_profiles - 1):
            pid = f"Bench.Profile.{p:03d}"
            target = rng.choice(abstract if rng.random() < 0.2 else concrete)
            self.profile_target[pid] = target
            self.profile_fallback[pid] = rng.random() >= 0.1
            yield {
                **base,
                "id": pid,
                "display_name": pid,
                "context_class": target,
                "fallback": self.profile_fallback[pid],
            }

    def workflows(self) -> Iterator[dict[str, Any]]:
        """About 4.5 per profile: a discovery, two or three monitors or rules and a task use
        a profile in a typical pack; plus 500 that run as the action account."""
        rng = self.rng
        n = 0
        for pid, target in self.profile_target.items():
            for _ in range(rng.randint(2, 7)):
                n += 1
                yield _workflow(n, rng, target, pid)
        for _ in range(max(10, int(500 * self.n_profiles / 500))):
            n += 1
            yield _workflow(n, rng, rng.choice(CLASSES)[0], None)

    # -- accounts, distribution, associations ----------------------------------------------

    def accounts(self) -> Iterator[dict[str, Any]]:
        """Accounts by role, as a management group that mostly resolves has them.

        The counts of the issue (500,000 distribution entries for 100,000 computers: five per
        computer) leave no room to approve every broad account on every computer it serves, so
        the broad accounts are less secure, as many real management groups do it:

        * *baseline* accounts (150): the one account a profile's class/all association names;
          less secure, except ``BASELINE_MORE_SECURE`` approved on 30 of the 50 sites;
        * *site* accounts (one per site): named by the site groups' associations, approved on
          97 % of their site's computers (new computers not yet approved);
        * *action* accounts of the Default Action Account: the class ones approved on every
          computer of their class, the group ones less secure;
        * every other account is *specific* (object associations), one in ten less secure.
        """
        rng = self.rng
        types = weighted(rng, ACCOUNT_TYPES, self.n_accounts)
        self.account_type = types
        action = [i for i, t in enumerate(types, 1) if t == "action"]
        other = [i for i, t in enumerate(types, 1) if t != "action"]
        rng.shuffle(other)
        n_baseline = min(150, len(other) // 4)
        self.baseline = other[:n_baseline]
        self.site_account = other[n_baseline : n_baseline + SITES]
        self.specific = other[n_baseline + SITES :]
        self.daa_class_account = {
            "Bench.Windows.Server": rng.choice(action),
            "Bench.Linux.Computer": rng.choice(action),
        }
        self.daa_group_accounts = rng.sample(action, min(5, len(action)))
        self.baseline_approved_sites = {
            a: set(rng.sample(range(SITES), 30))
            for a in self.baseline[: min(BASELINE_MORE_SECURE, n_baseline)]
        }
        self.less_secure = set(self.daa_group_accounts)
        self.less_secure |= {a for a in self.baseline if a not in self.baseline_approved_sites}
        self.less_secure |= {a for a in self.specific if rng.random() < 0.1}
        for i, t in enumerate(types, 1):
            less = i in self.less_secure
            yield {
                "id": i,
                "name": f"bench-{t}-{i:05d}",
                "type": t,
                "description": "",
                "public_fields": _public_fields(t, i),
                "current_version": rng.randint(1, 3),
                "expires_at": None,
                "distribution_mode": "less-secure" if less else "more-secure",
                "created_at": NOW,
                "created_by": "bench",
                "modified_at": NOW,
                "modified_by": "bench",
                "row_version": 1,
            }

    def associations(self) -> Iterator[dict[str, Any]]:
        """Every target kind, one in twenty enforced, shaped like a management group that
        mostly resolves: three profiles in four have one broad association (their class, or
        all targeted objects) with a baseline account, one in ten narrows a derived class to
        another baseline account, one in twenty-five is misconfigured with a second account at the
        same rank (a conflict on all its objects). The many narrow associations follow: group
        targets (40 %) with the site account of the group's site (a list group: the profile's
        baseline account), object targets (60 %) with one of the profile's own accounts.
        """
        rng = self.rng
        profiles = [p for p in self.profile_target if p != FLEET_PROFILE]
        groups_by_class: dict[str, list[str]] = {}
        for gid, cls in self.group_class.items():
            groups_by_class.setdefault(cls, []).append(gid)
        all_groups = list(self.group_class)
        descendants = _descendants()
        seen: set[tuple[str, int, str, str]] = set()
        self.object_assoc_targets: list[tuple[int, int]] = []
        n = 0

        def emit(pid: str, account: int, kind: str, target: str) -> dict[str, Any] | None:
            nonlocal n
            key = (pid, account, kind, target)
            if key in seen:
                return None
            seen.add(key)
            n += 1
            return {
                "id": n,
                "profile_id": pid,
                "account_id": account,
                "target_kind": kind,
                "target": target,
                "enforced": rng.random() < 0.05,
                "position": None,
                "created_at": NOW,
                "created_by": "bench",
            }

        def rows() -> Iterator[dict[str, Any] | None]:
            # The Default Action Account: action accounts for server classes and some groups.
            for cls, account in self.daa_class_account.items():
                yield emit(DEFAULT_ACTION_PROFILE, account, "class", cls)
            server_groups = groups_by_class.get("Bench.Windows.Computer") or all_groups
            for g in rng.sample(server_groups, min(5, len(server_groups))):
                yield emit(DEFAULT_ACTION_PROFILE, rng.choice(self.daa_group_accounts), "group", g)

            primary = {p: rng.choice(self.baseline) for p in profiles}
            for pid in profiles:
                target_cls = self.profile_target[pid]
                # A profile that cannot fall back is always associated (or nothing would run).
                if not self.profile_fallback[pid] or rng.random() < 0.75:
                    kind, target = ("all", "") if rng.random() < 0.2 else ("class", target_cls)
                    yield emit(pid, primary[pid], kind, target)
                    if rng.random() < 0.04:
                        yield emit(pid, rng.choice(self.baseline), kind, target)
                derived = sorted(descendants[target_cls] - {target_cls})
                if derived and rng.random() < 0.1:
                    yield emit(pid, rng.choice(self.baseline), "class", rng.choice(derived))

            pools = {p: rng.sample(self.specific, rng.randint(3, 12)) for p in profiles}
            while n < self.n_assocs:
                pid = rng.choice(profiles)
                classes = sorted(descendants[self.profile_target[pid]])
                if rng.random() < 0.4:
                    near = [g for c in classes for g in groups_by_class.get(c, ())]
                    g = rng.choice(near if near and rng.random() < 0.8 else all_groups)
                    site = self.group_site.get(g)
                    account = primary[pid] if site is None else self.site_account[site]
                    yield emit(pid, account, "group", g)
                else:
                    pool = self.by_class.get(rng.choice(classes))
                    if not pool:
                        continue
                    oid = rng.choice(pool)
                    account = rng.choice(pools[pid])
                    row = emit(pid, account, "object", self.full_names[oid])
                    if row:
                        self.object_assoc_targets.append((account, self.object_computer[oid]))
                    yield row

        for row in rows():
            if row:
                yield row

    def distribution(self) -> Iterator[dict[str, Any]]:
        """Approvals follow use (what "suggested computers" proposes), with some left out:

        * the action accounts of server/Linux computers on every computer of their class;
        * each site account on 95 % of its site's computers;
        * the more-secure baseline accounts on every computer of their 30 sites;
        * nine in ten object associations' accounts on the object's computer;
        * the rest of the entries approve specific accounts on runs of neighbouring computers
          (a site, a cluster), up to the issue's count.
        """
        rng = self.rng
        seen: set[tuple[int, int]] = set()
        for c, cls in enumerate(self.computer_class):
            account = self.daa_class_account.get(cls)
            if account is not None:
                seen.add((account, c))
            site = c % SITES
            if rng.random() < 0.95:
                seen.add((self.site_account[site], c))
            for account, sites in self.baseline_approved_sites.items():
                if site in sites:
                    seen.add((account, c))
        for account, comp in self.object_assoc_targets:
            if account not in self.less_secure and rng.random() < 0.9:
                seen.add((account, comp))
        more_secure = [a for a in self.specific if a not in self.less_secure]
        while len(seen) < self.n_distribution:
            account = rng.choice(more_secure)
            start = rng.randrange(self.n_computers)
            for c in range(start, min(self.n_computers, start + rng.randint(1, 120))):
                seen.add((account, c))
        for account, comp in sorted(seen):
            yield {"account_id": account, "computer_name": self.computers[comp]}


def _eq(prop: str, value: str) -> dict[str, Any]:
    return {"property": prop, "op": "equals", "value": value}


def _workflow(n: int, rng: random.Random, target: str, profile: str | None) -> dict[str, Any]:
    kind = rng.choice(("discovery", "rule", "monitor", "monitor", "task"))
    return {
        "id": f"Bench.Workflow.{n:05d}",
        "pack_id": PACK,
        "kind": kind,
        "display_name": f"workflow {n}",
        "description": "",
        "target_class": target,
        "profile_id": profile,
        "schedule": None if kind == "task" else {"interval_seconds": 300, "spread_seconds": 60},
        "probe_type": "command",
        "probe_config": {},
        "enabled": True,
    }


def _public_fields(account_type: str, i: int) -> dict[str, str]:
    if account_type == "windows":
        return {"domain": "corp.example", "user": f"svc{i}"}
    if account_type in ("binary", "community-string"):
        return {}
    if account_type == "unix-monitoring":
        return {"user": f"mon{i}", "elevation": "sudo"}
    if account_type == "unix-maintenance":
        return {"user": f"maint{i}", "elevation": "sudo"}
    return {"user": f"user{i}"}


def _descendants() -> dict[str, set[str]]:
    children: dict[str, list[str]] = {}
    for cid, parent, _ in CLASSES:
        children.setdefault(parent, []).append(cid)
    out: dict[str, set[str]] = {}
    for cid, _, _ in CLASSES:
        seen = {cid}
        stack = [cid]
        while stack:
            for child in children.get(stack.pop(), ()):
                seen.add(child)
                stack.append(child)
        out[cid] = seen
    return out


def generate(url: str, scale: float, seed: int) -> dict[str, int]:
    db = Database(url)
    try:
        migrate.upgrade(db)
        gen = Generator(scale, seed)
        counts: dict[str, int] = {}
        with db.engine.connect() as conn:
            if db.backend == "sqlite":
                # Generation only: a crash means generating again, so durability is not needed.
                # Outside any transaction (SQLite refuses it inside one): on the raw connection.
                raw: Any = conn.connection.dbapi_connection
                raw.execute("PRAGMA synchronous = OFF")
                raw.execute("PRAGMA cache_size = -262144")
            steps = (
                ("packs", PackRow, gen.packs),
                ("classes", ClassRow, gen.classes),
                ("objects", ObjectRow, gen.objects),
                ("groups", GroupRow, gen.groups),
                ("profiles", ProfileRow, gen.profiles),
                ("workflows", WorkflowRow, gen.workflows),
                ("accounts", AccountRow, gen.accounts),
                ("associations", AssociationRow, gen.associations),
                ("distribution", DistributionRow, gen.distribution),
            )
            for name, model, rows in steps:
                clock = time.perf_counter()
                counts[name] = insert_all(conn, model.__table__, rows())  # type: ignore[arg-type]
                conn.commit()
                print(f"{name:13} {counts[name]:>9,} rows  {time.perf_counter() - clock:6.1f} s")
        return counts
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--database-url", help="default: a SQLite file under bench/out/")
    parser.add_argument("--force", action="store_true", help="replace an existing SQLite file")
    args = parser.parse_args(argv)
    url = args.database_url
    if url is None:
        OUT.mkdir(exist_ok=True)
        # Generated databases are hundreds of MB: keep them out of version control.
        (OUT / ".gitignore").write_text("*\n")
        path = OUT / f"mg-{args.scale:g}.db"
        if path.exists():
            if not args.force:
                print(f"{path} exists (use --force to replace it)", file=sys.stderr)
                return 1
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    clock = time.perf_counter()
    generate(url, args.scale, args.seed)
    print(f"generated in {time.perf_counter() - clock:.1f} s: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
