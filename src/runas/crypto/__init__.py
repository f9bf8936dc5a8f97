"""runas.crypto."""
