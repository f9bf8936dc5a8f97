"""Prometheus text exposition, hand-written: a few counters and one histogram do not justify a
dependency. Request metrics live in this process; the management-group gauges (resolution
epoch, audit writes, agents) are read from the database at scrape time, so every server of a
group reports the same values.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate

#: seconds; covers a cached read (ms) to a pack import or key rotation (s)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _Histogram:
    #: observations per bucket, not cumulative (one increment per observation); the last
    #: slot counts those above every bound
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Request counts and latencies of one server process. ``observe`` runs on the event loop,
    ``render`` in a worker thread: a lock keeps the two consistent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._latency: dict[tuple[str, str], _Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            h = self._latency.setdefault((route, method), _Histogram())
            h.counts[bisect_left(BUCKETS, seconds)] += 1
            h.total += seconds
            h.n += 1

    def render(self, gauges: dict[str, tuple[str, str, float]]) -> str:
        """The exposition; ``gauges`` maps a metric name to (type, help, value)."""
        out: list[str] = [
            "# HELP runas_http_requests_total HTTP requests by route template, method and status.",
            "# TYPE runas_http_requests_total counter",
        ]
        with self._lock:
            requests = sorted(self._requests.items())
            latency = [
                (key, _Histogram(list(h.counts), h.total, h.n))
                for key, h in sorted(self._latency.items())
            ]
        for (route, method, status), n in requests:
            labels = _labels(route=route, method=method, status=str(status))
            out.append(f"runas_http_requests_total{labels} {n}")
        out += [
            "# HELP runas_http_request_duration_seconds Time to answer a request.",
            "# TYPE runas_http_request_duration_seconds histogram",
        ]
        for (route, method), h in latency:
            for bound, count in zip(BUCKETS, accumulate(h.counts), strict=False):
                labels = _labels(route=route, method=method, le=repr(bound))
                out.append(f"runas_http_request_duration_seconds_bucket{labels} {count}")
            labels = _labels(route=route, method=method, le="+Inf")
            out.append(f"runas_http_request_duration_seconds_bucket{labels} {h.n}")
            base = _labels(route=route, method=method)
            out.append(f"runas_http_request_duration_seconds_sum{base} {h.total:.6f}")
            out.append(f"runas_http_request_duration_seconds_count{base} {h.n}")
        for name, (kind, help_text, value) in sorted(gauges.items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(out) + "\n"
