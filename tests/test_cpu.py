"""tfaural.cpu: which of TensorFlow's CPU kernels tfaural's command lines run, and ``python -m tfaural``.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when its runtime starts; unset, its Linux build turns
oneDNN on only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX. tfaural's command lines set it
to 1 on the other x86 CPUs with AVX2 and FMA but no AVX-512 (measured faster there: ``benchmarks/onednn.py``); a value
the user set wins. Checked against TensorFlow itself: its log line "oneDNN custom operations are on",
and its own ``IsMklEnabled`` in a command line's process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tfaural import cpu

REPO = Path(__file__).resolve().parent.parent
ONEDNN_LOG = "oneDNN custom operations are on"
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.mark.parametrize(("flags", "system", "machine", "expected"), [
    (AVX2, "Linux", "x86_64", True),  # e.g. AMD EPYC Zen 2/3: TensorFlow leaves oneDNN off
    (AVX2 | {"avx512f"}, "Linux", "x86_64", False),  # AVX-512 without VNNI (Skylake-SP): not measured
    (AVX2 | {"avx512f", "avx512_vnni"}, "Linux", "x86_64", False),  # TensorFlow's default is on already
    (AVX2 | {"avx512_bf16"}, "Linux", "x86_64", False),
    (AVX2 | {"amx_tile"}, "Linux", "x86_64", False),
    (frozenset({"sse4_2", "avx"}), "Linux", "x86_64", False),  # no AVX2: not measured, TensorFlow's default
    (AVX2, "Darwin", "x86_64", False),
    (AVX2, "Linux", "aarch64", False),
    (None, "Linux", "x86_64", False),  # flags unknown
])
def test_onednn_preferred(flags: frozenset[str] | None, system: str, machine: str, expected: bool) -> None:
    assert cpu.onednn_preferred(flags, system=system, machine=machine) is expected


def test_cpu_flags_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n"
                    "flags\t\t: fpu avx2 fma\n")
    assert cpu.cpu_flags(str(info)) == {"fpu", "avx2", "fma"}
    assert cpu.cpu_model(str(info)) == "Some CPU"
    assert cpu.notable_flags(frozenset({"fpu", "fma", "avx2", "amx_tile", "avx512_vnni"})) == [
        "amx_tile", "avx2", "avx512_vnni", "fma"]
    assert cpu.onednn_default_on(frozenset({"avx2", "avx512_bf16"})) and not cpu.onednn_default_on(AVX2)
    info.write_text("processor\t: 0\n")
    assert cpu.cpu_flags(str(info)) is None
    assert cpu.cpu_model(str(info)) == (platform.processor() or "unknown")
    assert cpu.cpu_flags(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("setting", ["0", "1", "false"])
def test_prefer_onednn_leaves_a_users_setting(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv(cpu.ONEDNN_VARIABLE, setting)
    assert cpu.prefer_onednn() is False
    assert os.environ[cpu.ONEDNN_VARIABLE] == setting


def test_prefer_onednn_sets_it_where_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu.ONEDNN_VARIABLE, raising=False)
    monkeypatch.delenv(cpu.CHOSEN_VARIABLE, raising=False)
    preferred = cpu.onednn_preferred(cpu.cpu_flags(), system=platform.system(), machine=platform.machine())
    assert cpu.prefer_onednn() is preferred
    assert os.environ.get(cpu.ONEDNN_VARIABLE) == ("1" if preferred else None)
    assert cpu.prefer_onednn() is False  # set now: left alone


@pytest.mark.parametrize("preferred", [True, False])
def test_tfaurals_choice_is_told_from_the_users(monkeypatch: pytest.MonkeyPatch, preferred: bool) -> None:
    """Another tool (musicnn in benchmarks/peer_musicnn.py) started by a process that inherited tfaural's choice,
    from its own ``prefer_onednn`` or a parent's, gets TensorFlow's default kernels; a user's setting is kept."""
    monkeypatch.setattr(cpu, "onednn_preferred", lambda *args, **kwargs: preferred)  # any CPU: both branches
    monkeypatch.delenv(cpu.ONEDNN_VARIABLE, raising=False)
    monkeypatch.setenv(cpu.CHOSEN_VARIABLE, "1")  # stale, without the setting it marked: dropped
    assert cpu.prefer_onednn() is preferred
    assert cpu.onednn_chosen_by_tfaural() is preferred
    assert os.environ.get(cpu.CHOSEN_VARIABLE) == ("1" if preferred else None)
    peer = cpu.peer_environment()
    assert cpu.ONEDNN_VARIABLE not in peer and cpu.CHOSEN_VARIABLE not in peer
    assert os.environ.get(cpu.ONEDNN_VARIABLE) == ("1" if preferred else None)  # this process keeps it
    if preferred:
        assert cpu.onednn_state() == f"on ({cpu.ONEDNN_VARIABLE}=1, tfaural's choice on this CPU)"
        child = dict(os.environ)  # a process started from here: inherits the choice, and tells it apart
        assert cpu.onednn_chosen_by_tfaural(child) and cpu.ONEDNN_VARIABLE not in cpu.peer_environment(child)
        assert "TensorFlow's default" in cpu.onednn_state(cpu.peer_environment(child))
    for setting in ("0", "1"):  # the user's own setting: kept for the peer too
        monkeypatch.setenv(cpu.ONEDNN_VARIABLE, setting)
        monkeypatch.delenv(cpu.CHOSEN_VARIABLE, raising=False)
        assert cpu.prefer_onednn() is False and not cpu.onednn_chosen_by_tfaural()
        assert cpu.peer_environment()[cpu.ONEDNN_VARIABLE] == setting
        assert cpu.onednn_state() == f"{'on' if setting == '1' else 'off'} ({cpu.ONEDNN_VARIABLE}={setting})"


def _environment_without_a_kernel_choice() -> dict[str, str]:
    """This process's environment without ``TF_ENABLE_ONEDNN_OPTS`` and tfaural's marker (conftest sets both)."""
    return {key: value for key, value in os.environ.items() if key not in (cpu.ONEDNN_VARIABLE, cpu.CHOSEN_VARIABLE)}


def _tensorflow_says_onednn_is_on(env: dict[str, str]) -> bool:
    done = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return ONEDNN_LOG in done.stderr


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_onednn_state_is_what_tensorflow_does(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    """The benchmark reports' ``onednn`` (a program that imports TensorFlow itself: TensorFlow's default)."""
    env = _environment_without_a_kernel_choice()
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's INFO lines, the oneDNN one among them
    monkeypatch.delenv(cpu.ONEDNN_VARIABLE, raising=False)
    monkeypatch.delenv(cpu.CHOSEN_VARIABLE, raising=False)
    if setting is not None:
        env[cpu.ONEDNN_VARIABLE] = setting
        monkeypatch.setenv(cpu.ONEDNN_VARIABLE, setting)
    state = cpu.onednn_state()
    assert state.split()[0] in ("on", "off"), state
    assert (state.split()[0] == "on") == _tensorflow_says_onednn_is_on(env), state
    if setting is not None:
        assert f"{cpu.ONEDNN_VARIABLE}={setting}" in state


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_a_command_line_runs_the_kernels_tfaural_chooses(setting: str | None) -> None:
    """``python -m tfaural`` (a command line like every ``python -m tfaural/export/beam_jobs...``) reports what
    TensorFlow's runtime in its own process runs: oneDNN on an x86 CPU with AVX2 (TensorFlow's default or
    tfaural's choice), unless the user said otherwise."""
    env = _environment_without_a_kernel_choice()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if setting is not None:
        env[cpu.ONEDNN_VARIABLE] = setting
    done = subprocess.run([sys.executable, "-m", "tfaural"], env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ONEDNN_LOG not in done.stderr  # a quiet command line
    report = json.loads(done.stdout)
    expected = (report["onednn_tensorflow_default"] == "on" or report["onednn_turned_on_by_tfaural_command_lines"]
                if setting is None else setting == "1")
    assert report["onednn_in_this_process"] is expected, report
    if setting is None and report["onednn_turned_on_by_tfaural_command_lines"]:
        assert report["onednn"] == f"on ({cpu.ONEDNN_VARIABLE}=1, tfaural's choice on this CPU)"
    elif setting is not None:
        assert report["onednn"] == f"{'on' if setting == '1' else 'off'} ({cpu.ONEDNN_VARIABLE}={setting})"
    assert report["tensorflow"] and report["cores"] == os.cpu_count() and isinstance(report["gpus"], list)
