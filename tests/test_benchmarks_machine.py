"""The machine description of ``python -m benchmarks``: whether TensorFlow's oneDNN ops are on.

TensorFlow's Linux build turns them on by default only on CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX, and the figures (speed, and the memory of the largest auralise calls) differ
with them, so the report must say which it measured. Checked against TensorFlow itself: it logs
"oneDNN custom operations are on" exactly when they are.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.__main__ import onednn_state

ONEDNN_LOG = "oneDNN custom operations are on"


def _tensorflow_says_onednn_is_on(env: dict[str, str]) -> bool:
    done = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return ONEDNN_LOG in done.stderr


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_onednn_state_is_what_tensorflow_does(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's INFO lines, the oneDNN one among them
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", setting)
    state = onednn_state()
    assert state.split()[0] in ("on", "off"), state
    assert (state.split()[0] == "on") == _tensorflow_says_onednn_is_on(env), state
    if setting is not None:
        assert f"TF_ENABLE_ONEDNN_OPTS={setting}" in state
