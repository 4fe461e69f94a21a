"""The command lines of every Beam job: stray arguments (an unquoted glob) and unusable output folders.

Each case must end with exit status 2 and one line on stderr that says what to do, before the job
does any work (nothing is written).
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import auralise, correlation, extract_features, make_tfrecords, tag
from beam_jobs import options as job_options
from beam_jobs.options import parse_job_args, stray_arguments, unknown_flags
from tfaural.errors import ParameterError

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS: dict[str, Callable[[list[str]], int]] = {
    "auralise": auralise.main, "tag": tag.main, "extract_features": extract_features.main,
    "make_tfrecords": make_tfrecords.main, "correlation": correlation.main,
}


def _catalogue(root: pathlib.Path) -> list[pathlib.Path]:
    """Three short WAV files and a manifest listing them (what a shell expands ``music/*.wav`` to)."""
    folder = root / "music"
    folder.mkdir()
    paths = []
    for index in range(3):
        path = folder / f"{index}.wav"
        sf.write(path, np.full(4000, 0.1 * (index + 1), np.float32), 2000)
        paths.append(path)
    (root / "manifest.csv").write_text("path,labels\n" + "".join(f"{p},x\n" for p in paths))
    return paths


def _argv(job: str, model: str, output: pathlib.Path, root: pathlib.Path, files: list[pathlib.Path]) -> list[str]:
    """The job's command line with ``files`` where a shell puts the expansion of an unquoted glob."""
    expanded = [str(p) for p in files]
    if job == "make_tfrecords":  # no --input: the stray words follow another flag's value
        return ["--manifest", str(root / "manifest.csv"), *expanded[1:], "--output", str(output),
                "--sample-rate", "2000"]
    if job == "correlation":
        return ["--model", model, *expanded, "--output", str(output)]
    return ["--input", *expanded, "--model", model, "--output", str(output)]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_stray_arguments_are_refused_with_a_hint_to_quote_the_glob(
    job: str, samplecnn_export: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    files = _catalogue(tmp_path)
    output = tmp_path / "out"
    assert JOBS[job](_argv(job, samplecnn_export, output, tmp_path, files)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{job}: error: ") and "\n" not in err, err
    assert "unexpected argument" in err and "quote it" in err and str(files[-1]) in err
    assert not output.exists(), "nothing may be written before the arguments are checked"


def test_stray_arguments_through_the_shell_exit_2(samplecnn_export: str, tmp_path: pathlib.Path) -> None:
    _catalogue(tmp_path)
    # What `python -m beam_jobs.tag --input music/*.wav ...` does in a shell.
    done = subprocess.run(f"{sys.executable} -m beam_jobs.tag --input {tmp_path}/music/*.wav --model "
                          f"{samplecnn_export} --output {tmp_path}/out", shell=True, cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("tag:")]
    assert len(lines) == 1 and "2 unexpected argument(s)" in lines[0] and "--input 'dir/*.wav'" in lines[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_stray_arguments_follow_beams_rules() -> None:
    assert stray_arguments(["--input", "a.wav", "b.wav", "c.wav", "--model", "m"]) == ["b.wav", "c.wav"]
    # Beam flags, known or not, keep their values; --flag=value takes none; a lone word after a switch is stray.
    assert stray_arguments(["--runner", "DirectRunner", "--direct_num_workers", "2", "--some_flag", "v",
                            "--skip-existing", "x", "--other=1", "y", "--project=p"]) == ["x", "y"]
    assert stray_arguments(["--input", "a", "--", "b"]) == ["b"]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_flags_beam_would_drop_or_overrule_silently_are_one_line_before_any_work(
    job: str, samplecnn_export: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A misspelt flag, an unknown one on a local runner, a shell-expanded name starting with '-' and a
    second --input: Beam would discard the first three with a warning and keep only the last --input."""
    files = _catalogue(tmp_path)
    output = tmp_path / "out"
    argv = _argv(job, samplecnn_export, output, tmp_path, [] if job == "correlation" else files[:1])
    cases = [([*argv, "--overwirte"], "unknown flag --overwirte: did you mean --overwrite? (python -m beam_jobs."),
             ([*argv, "--frobnicate=3"], "unknown flag(s) --frobnicate: neither this job's"),
             ([*argv, "-0.wav"], "1 unexpected argument(s) '-0.wav'")]
    if job not in ("make_tfrecords", "correlation"):
        cases.append(([*argv, "--input", str(files[1])], "--input is given 2 times"))
    for words, message in cases:
        assert JOBS[job](words) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"{job}: error: {message}") and "\n" not in err, (words, err)
    assert not output.exists()


def test_unknown_flags_reach_the_runners_that_take_them_and_hidden_flags_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def parse(*words: str, hidden: tuple[str, ...] = ()) -> Any:
        return parse_job_args(list(words), prog="python -m beam_jobs.x", description="",
                              option_classes=tag.TagJob.option_classes, hidden=hidden)

    assert unknown_flags(["--input", "a", "--frobnicate=3", "--runner=DirectRunner", "--flexrs_goal", "COST_OPTIMIZED",
                          "--service_x", "1"]) == ["--frobnicate", "--service_x"]
    options = parse("--input=a", "--service_option_x=1", "--runner=DataflowRunner")  # Dataflow: passed on
    assert options.get_all_options(retain_unknown_options=True)["service_option_x"] == "1"
    parse("--input=a", "--input", "a")  # the same value twice loses nothing
    parse("--input=a", "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",  # the runner's own flag
          "--dask_client_address=localhost:8786")
    with pytest.raises(ParameterError, match="did you mean --top-k"):  # a job flag's typo: on any runner
        parse("--input=a", "--top-kk=3", "--runner=DataflowRunner")
    with pytest.raises(ParameterError, match=r"--format: this job has no --format \(python -m beam_jobs.x --help"):
        parse("--input=a", "--format", "wav", hidden=("format",))
    with pytest.raises(SystemExit):
        parse("--help", hidden=("format", "precision"))
    shown = capsys.readouterr().out
    assert "--format" not in shown and "--precision" not in shown and "--top-k" in shown and "--input" in shown
    assert correlation.main(["--model", "m", "--output", "o", "--input", "x/*.wav"]) == 2
    assert "error: --input: this job has no --input" in capsys.readouterr().err
    # another job's flag: Beam parses it (every job's options are imported) and the job would ignore it
    assert make_tfrecords.main(["--manifest", "m.csv", "--output", "o", "--input=x/*.wav"]) == 2
    assert "make_tfrecords: error: --input: this job has no --input" in capsys.readouterr().err
    assert tag.main(["--input", "x/*.wav", "--model", "m", "--output", "o", "--layers", "1"]) == 2
    assert "tag: error: --layers: this job has no --layers (python -m beam_jobs.tag --help" in capsys.readouterr().err
    defined = {c for c in vars(job_options).values()
               if isinstance(c, type) and issubclass(c, PipelineOptions) and c.__module__ == job_options.__name__}
    assert defined == set(job_options.JOB_OPTION_CLASSES)


@pytest.mark.parametrize("job", sorted(JOBS))
@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_an_output_that_is_a_file_or_under_one_is_one_line_naming_it(
    job: str, where: str, samplecnn_export: str, tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = _catalogue(tmp_path)
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder\n")
    output = blocker if where == "file" else blocker / "out"
    argv = _argv(job, samplecnn_export, output, tmp_path, [] if job == "correlation" else files[:1])
    assert JOBS[job](argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{job}: error: --output {output}") and "\n" not in err, err
    assert f"{blocker} is a file" in err or "is a file, not a folder" in err
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("job", ["tag", "make_tfrecords"])
def test_a_misspelt_runner_is_one_line_before_any_work(
    job: str, samplecnn_export: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    files = _catalogue(tmp_path)
    output = tmp_path / "out"
    argv = _argv(job, samplecnn_export, output, tmp_path, files[:1])
    assert JOBS[job]([*argv, "--runner=DaskRunner"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{job}: error: --runner DaskRunner: Unexpected pipeline runner") and "\n" not in err
    assert "apache_beam.runners.dask.dask_runner.DaskRunner" in err
    assert not output.exists()


def test_worker_log_lines_show_the_message(caplog: pytest.LogCaptureFixture) -> None:
    """What a DirectRunner worker process logs reaches the launcher through Beam's local job service as a whole
    ``LogEntry``; the jobs' logging shows its message alone (non-ASCII and quotes intact) at the entry's level."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer

    from beam_jobs.job import WORKER_LOGGER, WorkerLogMessages, configure_logging

    configure_logging([])
    assert sum(isinstance(f, WorkerLogMessages) for f in logging.getLogger(WORKER_LOGGER).filters) == 1
    configure_logging([])  # idempotent: one filter
    assert sum(isinstance(f, WorkerLogMessages) for f in logging.getLogger(WORKER_LOGGER).filters) == 1
    text = 'música/loud "mix".wav: float samples exceed [-1, 1] (peak 6.081); left unscaled'
    entry = beam_fn_api_pb2.LogEntry(severity=beam_fn_api_pb2.LogEntry.Severity.WARN, message=text,
                                     instruction_id="bundle_6", transform_id="DecodeExcerpt/ParDo(PrepareTrack)",
                                     log_location="/work/tfaural/audio.py:282", thread="Thread-12")
    entry.timestamp.seconds = 1796158549
    with caplog.at_level(logging.WARNING, logger=WORKER_LOGGER):
        list(BeamFnLoggingServicer().Logging([beam_fn_api_pb2.LogEntry.List(log_entries=[entry])]))
    [record] = [r for r in caplog.records if r.name == "worker"]
    assert record.levelname == "WARNING" and record.getMessage() == text
    # Anything else the logger says stays as it was.
    logging.getLogger(WORKER_LOGGER).warning("Worker: %s", "no message field here")
    assert caplog.records[-1].getMessage() == "Worker: no message field here"


@pytest.mark.parametrize("job", ["tag", "make_tfrecords"])
def test_a_run_in_which_every_track_failed_exits_1_with_its_outputs_written(
    job: str, samplecnn_export: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (music / "empty.wav").write_bytes(b"")
    (music / "notes.mp3").write_text("not audio")
    (tmp_path / "manifest.csv").write_text("path,labels\n" + "".join(f"{p},x\n" for p in sorted(music.iterdir())))
    output = tmp_path / "out"
    argv = (["--manifest", str(tmp_path / "manifest.csv"), "--sample-rate", "2000"] if job == "make_tfrecords"
            else ["--input", f"{music}/*", "--model", samplecnn_export])
    assert JOBS[job]([*argv, "--output", str(output), "--runner=DirectRunner"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"{job}: error: every one of the 2 track(s) failed (listed in {output}/"), err
    listed = output / ("failures.jsonl" if job == "make_tfrecords" else "manifest.jsonl")
    assert len(listed.read_text().splitlines()) == 2
    if job == "tag":
        assert "empty.wav: " in err


def test_an_interrupted_run_ends_with_one_line_and_resumes(samplecnn_export: str, tmp_path: pathlib.Path) -> None:
    """Ctrl-C in a terminal (SIGINT to the whole process group) on ``python -m beam_jobs.tag``: exit 130 with one
    line saying how to go on, no traceback of the threads it stops, no track failed by a model process that went
    away (it ignores Ctrl-C and ends when the launcher closes it), nothing left running; the rerun with
    --skip-existing finishes the catalogue."""
    import psutil

    music = tmp_path / "music"
    music.mkdir()
    for index in range(6):
        sf.write(music / f"{index}.wav", np.full(22050 * 2, 0.05 * (index + 1), np.float32), 22050)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "beam_jobs.tag", "--input", f"{music}/*.wav", "--model", samplecnn_export,
               "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even under '&'
    assert job.stderr is not None
    lines = []
    for line in job.stderr:  # the run has begun: its tracks are listed, its model process is starting
        lines.append(line)
        if "track(s) ->" in line:
            break
    children = psutil.Process(job.pid).children(recursive=True)
    assert any("beam_jobs.model_process" in " ".join(child.cmdline()) for child in children)
    os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the launcher and every process it started
    _, rest = job.communicate(timeout=120)
    err = "".join(lines) + rest
    assert job.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == ("tag: interrupted: the tracks written so far are kept; rerun the same "
                                            "command with --skip-existing to reuse them and do the rest"), err[-3000:]
    assert "Traceback" not in err and "went away" not in err, err[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    done = subprocess.run([*command, "--skip-existing"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 of 6 track(s) ok" in done.stderr


def test_sigterm_and_sighup_unwind_a_run_as_ctrl_c_and_say_which(capsys: pytest.CaptureFixture[str]) -> None:
    """What ``Job.main`` runs a job in: a signal raises KeyboardInterrupt in the run, silences what dying threads
    print until the run has unwound, and is remembered for the exit status (128 + its number)."""
    from beam_jobs.job import _Interruptions

    for signum in (signal.SIGTERM, signal.SIGHUP):
        inherited = signal.signal(signum, signal.SIG_DFL)  # as in a terminal (nohup, as the suite may run under,
        try:  # ignores SIGHUP, and an ignored signal is left ignored)
            with _Interruptions() as interruptions, pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
                time.sleep(5)  # the handler runs at once, in this (the main) thread
            assert interruptions.received == signum and signal.getsignal(signum) == signal.SIG_DFL
            signal.signal(signum, signal.SIG_IGN)  # an ignored signal (nohup's SIGHUP) stays ignored
            with _Interruptions():
                assert signal.getsignal(signum) == signal.SIG_IGN
            assert signal.getsignal(signum) == signal.SIG_IGN
        finally:
            signal.signal(signum, inherited)
        print("shown", file=sys.stderr)  # the output is back
        assert capsys.readouterr().err == "shown\n"
        assert not logging.getLogger("beam_jobs").manager.disable
