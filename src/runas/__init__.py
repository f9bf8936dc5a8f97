"""runas: Run As accounts and profiles for a management group.

The package is layered: ``runas.domain`` is the pure core (object model, account types,
group membership and resolution, no I/O); ``runas.crypto``, ``runas.storage``, ``runas.packs``
and ``runas.services`` surround it; ``runas.cli`` is the command line.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
