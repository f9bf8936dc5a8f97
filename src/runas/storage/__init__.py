"""runas.storage."""
