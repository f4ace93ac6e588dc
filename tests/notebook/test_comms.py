"""Comm messages (what ipywidgets send: a ``Text`` widget's value is comm state) are masked like
every other message the kernel sends; the process masker's value, the frontend sees ``***``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from tests.canary import encodings

from .conftest import run

pytestmark = pytest.mark.timeout(180)

CODE = """\
%load_ext leaseline
import os, leaseline
from comm import create_comm
key = leaseline.resolve("env://NB_COMM_KEY")
c = create_comm(target_name="jupyter.widget", data={"state": {"value": key, "description": "API key"}})
c.send({"method": "update", "state": {"value": "new " + key}})
"""


def test_comm_open_and_update_are_masked(
    canary: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = canary.new("comm-key")
    monkeypatch.setenv("NB_COMM_KEY", value)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    messages: list[dict[str, Any]] = []
    try:
        run(kc, CODE, messages)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    comms = [m for m in messages if m["msg_type"] in {"comm_open", "comm_msg"}]
    assert [m["msg_type"] for m in comms] == ["comm_open", "comm_msg"]
    text = json.dumps([m["content"] for m in messages])
    for needle, form in encodings(value):
        assert needle.decode() not in text, f"the value reached the frontend ({form})"
    assert comms[0]["content"]["data"]["state"] == {"value": "***", "description": "API key"}
    assert comms[1]["content"]["data"]["state"] == {"value": "new ***"}
