"""runas.cli."""
