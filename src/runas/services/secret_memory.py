"""Decrypted secret versions shared by the configuration deliveries of one epoch.

After a credential change every agent fetches a configuration, and with *less secure*
distribution every bundle holds the same secret version: decrypting it once per agent (the
row read, the KEK unwrapping the DEK, AES-GCM) is the same work thousands of times.
:class:`PlaintextMemory` keeps each version's plaintext fields for the deliveries of one
resolution epoch, within strict bounds (docs/security-model.md, "Secrets in memory"):

* only in this process's memory, never written anywhere, never logged (the values are held
  in a mapping that no ``repr`` prints);
* at most :data:`MAX_VERSIONS` versions, for at most :data:`TTL_S` seconds after the first
  decryption (a timer clears them even if no delivery comes), and not past the epoch: the
  first delivery at a newer epoch drops everything;
* it saves the decryption only. Every delivery still audits each secret it seals
  (``account:secret-use`` naming the agent) before the configuration leaves the server, and
  every bundle is still sealed to its own agent's key.

A secret version is immutable (a change makes a new version), so a plaintext kept for
(account id, version) cannot go stale; the epoch bound is there so that nothing outlives the
state of the management group that needed it (an account removed, a version superseded).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: seconds a decrypted version is kept after its first decryption
TTL_S = 30.0
#: versions kept at most (more than that are decrypted for each delivery, as before)
MAX_VERSIONS = 256

Fields = dict[str, str]


class _Held:
    """A plaintext; never shown by ``repr`` (a debugger, a log of locals)."""

    __slots__ = ("fields",)

    def __init__(self, fields: Fields) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return "<secret fields>"


class PlaintextMemory:
    """Thread-safe. :meth:`fields` returns a version's plaintext fields, decrypting it with
    the caller's function only if this epoch has not decrypted it yet."""

    def __init__(
        self,
        *,
        ttl_s: float = TTL_S,
        max_versions: int = MAX_VERSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_versions < 1:
            raise ValueError("ttl_s must be > 0 and max_versions at least 1")
        self._ttl = ttl_s
        self._max = max_versions
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch = -1
        self._held: dict[tuple[int, int], tuple[float, _Held]] = {}
        self._timer: threading.Timer | None = None
        #: decryptions made and saved (for tests and metrics)
        self.decrypted = 0
        self.reused = 0

    def fields(
        self, epoch: int, account_id: int, version: int, decrypt: Callable[[], Fields]
    ) -> Fields:
        """The fields of (``account_id``, ``version``) for a delivery at ``epoch``. A delivery
        at an older epoch than the newest seen decrypts for itself and keeps nothing."""
        key = (account_id, version)
        now = self._clock()
        with self._lock:
            if epoch > self._epoch:
                self._epoch = epoch
                self._held.clear()
            if epoch == self._epoch:
                found = self._held.get(key)
                if found is not None and now - found[0] < self._ttl:
                    self.reused += 1
                    return dict(found[1].fields)
        fields = decrypt()
        with self._lock:
            self.decrypted += 1
            if epoch == self._epoch:
                if len(self._held) >= self._max:
                    self._held.clear()
                self._held[key] = (now, _Held(dict(fields)))
                self._arm()
        return fields

    def clear(self) -> None:
        """Forget every plaintext now."""
        with self._lock:
            self._held.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def __len__(self) -> int:
        return len(self._held)

    def _arm(self) -> None:
        # Under the lock. One timer at a time, for the oldest entry's expiry: nothing stays
        # in memory past its bound because no delivery came to notice it.
        if self._timer is not None:
            return
        oldest = min(at for at, _ in self._held.values())
        delay = max(0.0, oldest + self._ttl - self._clock())
        timer = threading.Timer(delay, self._expire)
        timer.daemon = True
        timer.name = "runas-plaintext-expiry"
        self._timer = timer
        timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            now = self._clock()
            for key in [k for k, (at, _) in self._held.items() if now - at >= self._ttl]:
                del self._held[key]
            if self._held:
                self._arm()


__all__ = ["MAX_VERSIONS", "TTL_S", "PlaintextMemory"]
