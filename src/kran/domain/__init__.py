"""Pure domain: no I/O, no clock reads. Standard library only."""
