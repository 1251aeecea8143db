"""Per-peer trust metric (behaviour.md §6): the pure metric, its SQLite store, and the
wiring that lets trust decide which peers are dialed, gossiped and dropped."""
