"""IO: atomic writes, ownership records, locks (standard library only)."""
