"""Bulk resolution: the answer of :func:`~runas.domain.resolution.resolve_for_profile` for every
(profile, targeted object) pair of a management group, indexed, and kept current under change.

Pure: no I/O. The per-object functions of :mod:`runas.domain.resolution` stay the contract;
this package must give exactly their answers (``tests/domain/test_bulk.py`` checks it on random
management groups), only faster.

* :mod:`~runas.domain.bulk.object_table`: the objects, as columns;
* :mod:`~runas.domain.bulk.profile_index`: one profile's associations and resolved codes;
* :mod:`~runas.domain.bulk.computer_state`: what one agent must hold, compact and patchable;
* :mod:`~runas.domain.bulk.catalog_views`: the index seen as a ``Catalog`` (for explain);
* :mod:`~runas.domain.bulk.index`: :class:`ResolutionIndex`, which builds and changes them.
"""

from runas.domain.bulk.computer_state import ComputerState
from runas.domain.bulk.index import ResolutionIndex
from runas.domain.bulk.object_table import ObjectTable
from runas.domain.bulk.profile_index import CONFLICT, NO_CANDIDATE, PairOutcome

__all__ = [
    "CONFLICT",
    "NO_CANDIDATE",
    "ComputerState",
    "ObjectTable",
    "PairOutcome",
    "ResolutionIndex",
]
