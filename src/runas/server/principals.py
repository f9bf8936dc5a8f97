"""Who a bearer token stands for, remembered for half a second.

Looking a token up is a database transaction (token, user, role assignments); a client that
sends many requests would pay it on each. A principal is kept for :data:`PRINCIPAL_TTL_S`, so
every server of the management group refuses a token revoked, a user disabled or a role
removed, through any server or the local CLI, within that time (the promise is one second).
The server that made such a change forgets everything it remembered as soon as the change
commits (:meth:`PrincipalCache.invalidate`), so its own next request already sees it.

Keys are token hashes, never tokens. A lookup that started before an invalidation does not
store its (possibly outdated) answer: the generation it started in is over.

A busy client should never wait for its principal to be looked up again: once an entry is
older than :data:`PRINCIPAL_REFRESH_S` the server refreshes it in the background while still
answering from it (:meth:`PrincipalCache.entry` says when), so under steady traffic entries
are replaced before they expire and the lifetime promise is unchanged.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from runas.services.users import Principal

#: how long a principal is remembered: below the one second within which every server of the
#: management group must see a change
PRINCIPAL_TTL_S = 0.5
#: age after which a remembered principal is refreshed in the background, still being used
PRINCIPAL_REFRESH_S = 0.3
#: tokens remembered at once; the oldest is forgotten first
PRINCIPAL_CACHE_SIZE = 4096


class PrincipalCache:
    def __init__(
        self,
        *,
        ttl: float = PRINCIPAL_TTL_S,
        refresh: float = PRINCIPAL_REFRESH_S,
        size: int = PRINCIPAL_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._refresh = refresh
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before a lookup; pass to :meth:`put` with its answer."""
        return self._generation

    def get(self, token_hash: str) -> Principal | None:
        found = self.entry(token_hash)
        return None if found is None else found[0]

    def entry(self, token_hash: str) -> tuple[Principal, bool] | None:
        """The principal remembered for ``token_hash`` and whether it is due for a refresh."""
        with self._lock:
            found = self._entries.get(token_hash)
            if found is None:
                return None
            until, principal = found
            now = self._clock()
            if now >= until:
                del self._entries[token_hash]
                return None
            return principal, now >= until - self._ttl + self._refresh

    def forget(self, token_hash: str) -> None:
        with self._lock:
            self._entries.pop(token_hash, None)

    def put(self, token_hash: str, principal: Principal, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._entries[token_hash] = (self._clock() + self._ttl, principal)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
