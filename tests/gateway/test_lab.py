"""The lab's own rules, checked anywhere (no root needed): when it skips, and why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway import lab


def test_not_root_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lab.lab_unavailable_reason() == "UPnP gateway tests need root (network namespaces)"


def test_missing_tools_are_skip_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nft" else "/bin/true")
    reason = lab.lab_unavailable_reason()
    assert reason is not None
    assert "nftables" in reason
    monkeypatch.setattr(shutil, "which", lambda tool: "/bin/true")
    monkeypatch.setattr(lab, "MINIUPNPD", "/nonexistent/miniupnpd")
    reason = lab.lab_unavailable_reason()
    assert reason is not None
    assert "miniupnpd-nftables" in reason


def test_names_are_unique_and_fit_interface_names(tmp_path: Path) -> None:
    first, second = lab.GatewayLab(tmp_path), lab.GatewayLab(tmp_path)
    assert first.prefix != second.prefix
    assert str(os.getpid() % 100000) in first.prefix
    assert len(f"{first.prefix}g") <= 15  # IFNAMSIZ - 1
