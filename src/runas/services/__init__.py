"""runas.services."""
