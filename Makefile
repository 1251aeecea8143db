# The README's commands are targets here. `make check` is exactly what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard src/cometp2p/wire/proto/tendermint/*/*.proto)

.PHONY: localnet check test lint typecheck proto bench clean

$(STAMP): pyproject.toml setup.py src/cometp2p/crypto/_keccak.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

## The main job: a whole local network on this machine.
localnet: $(STAMP)
	$(BIN)/cometp2p localnet

## Everything CI checks: lint, types, the whole test suite (interop included).
check: lint typecheck test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/pytest

## Regenerate the committed protobuf modules from the .proto files.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src $(PROTOS)

bench: $(STAMP)
	$(BIN)/python bench/secret_connection.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
