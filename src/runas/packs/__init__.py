"""runas.packs."""
