"""cometp2p: the CometBFT peer-to-peer stack in Python.

Byte-compatible with CometBFT v0.38 and v1.0 nodes. See ``docs/architecture.md`` for the
layers and ``docs/specs-map.md`` for which module implements which spec section.
"""

__version__ = "0.1.0"
