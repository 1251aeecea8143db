"""Interop tests against real CometBFT and the Go harness (wire.md §12)."""
