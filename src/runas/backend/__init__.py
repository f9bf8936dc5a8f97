"""The operations the CLI (and later the web console) performs, behind one interface.

:class:`~runas.backend.base.Backend` lists every operation with typed requests and views;
:class:`~runas.backend.local.LocalBackend` runs them in-process against the database. The
management-server issue adds an HTTP implementation of the same protocol, so the CLI's
commands are written once and work against either.
"""

from runas.backend.base import Backend
from runas.backend.local import LocalBackend

__all__ = ["Backend", "LocalBackend"]
