"""Build hook for the optional native Keccak-f[1600] permutation (cometp2p.crypto._keccak).

Everything else lives in pyproject.toml. ``optional=True``: a machine without a C compiler
still installs cometp2p, and cometp2p.crypto.merlin uses its pure-Python permutation.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cometp2p.crypto._keccak",
            sources=["src/cometp2p/crypto/_keccak.c"],
            optional=True,
        )
    ]
)
