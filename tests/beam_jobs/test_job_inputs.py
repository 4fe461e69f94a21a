"""Every entry an --input glob matches is accounted for exactly once, and never the job's own outputs.

Broken symbolic links, symbolic link loops and entries that cannot be read (a named pipe) used to
be left out of ``manifest.jsonl`` without a word; an ``--output`` inside the glob made the next
run take the job's own files (``manifest.jsonl``, ``tags.csv``, ...) as tracks.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import warnings
from typing import Any, ClassVar

import numpy as np
import pytest
import soundfile as sf
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem
from jobs_testing import SAMPLECNN_SR, read_manifest_rows
from signal_makers import chirp, sine

from beam_jobs import io as beam_io
from beam_jobs import tag
from beam_jobs import tracks as job_tracks
from tfaural.errors import AudioDecodeError, ParameterError

OBJECTS = "tfauraltest-objects"


class _ObjectStore(LocalFileSystem):
    """``tfauraltest-objects://<local path>``: local files seen as an object store, as Beam sees gs://.

    No folders: a glob is matched by listing every object under its fixed prefix and
    filtering the names with Beam's own ``FileSystem.match`` (``GCSFileSystem`` does the same).
    """

    listed: ClassVar[list[str]] = []  # the prefixes listed, in order

    @classmethod
    def scheme(cls) -> str:
        return OBJECTS

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str) -> Any:
        _ObjectStore.listed.append(dir_or_prefix)
        local = dir_or_prefix[len(OBJECTS) + 3 :]
        folder = local if local.endswith("/") else os.path.dirname(local)
        for dirpath, _dirnames, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                if path.startswith(local):
                    yield FileMetadata(f"{OBJECTS}://{path}", os.path.getsize(path), os.path.getmtime(path))

    def exists(self, path: str) -> bool:
        return super().exists(path[len(OBJECTS) + 3 :])

    def metadata(self, path: str) -> FileMetadata:
        local = path[len(OBJECTS) + 3 :]
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))


def _folder(root: pathlib.Path) -> dict[str, str | None]:
    """Audio files and odd entries under ``root``; returns {relative path: expected failure reason or None}."""
    (root / "sub").mkdir(parents=True)
    sf.write(root / "good.wav", sine(440, 0.6, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    sf.write(root / "sub" / "also good.flac", chirp(100, 900, 0.6, sample_rate=8000), 8000)
    (root / "dangling.wav").symlink_to(root / "deleted.wav")
    (root / "loop-a.wav").symlink_to(root / "loop-b.wav")
    (root / "loop-b.wav").symlink_to(root / "loop-a.wav")
    os.mkfifo(root / "pipe.wav")
    (root / "linked-folder").symlink_to(root / "sub", target_is_directory=True)  # a folder: not an input
    sf.write(os.fsencode(root) + b"/caf\xe9 latin-1.wav", sine(440, 0.6, sample_rate=8000), 8000)  # not UTF-8
    return {
        "caf\\xe9 latin-1.wav": "its name is not UTF-8 (the bytes b'caf\\xe9 latin-1.wav')",
        "good.wav": None,
        "sub/also good.flac": None,
        "dangling.wav": f"broken symbolic link: its target {str(root / 'deleted.wav')!r} does not exist",
        "loop-a.wav": "symbolic link loop",
        "loop-b.wav": "symbolic link loop",
        "pipe.wav": "is a named pipe (FIFO), not an audio file",
    }


def _check(output: pathlib.Path, root: pathlib.Path, expected: dict[str, str | None]) -> None:
    rows = read_manifest_rows(output)
    listed = [os.path.relpath(r["path"], root) for r in rows]
    assert sorted(listed) == sorted(expected), "every matched entry exactly once, nothing of the output"
    for path, row in zip(listed, rows):
        if expected[path] is None:
            assert row["status"] == "ok", row
        else:
            assert (row["status"], row["stage"], row["error_type"]) == ("failed", "decode", "AudioDecodeError"), row
            assert expected[path] in row["error"], row


@pytest.mark.slow
def test_odd_entries_are_failed_rows_and_the_output_folder_is_never_an_input(
    samplecnn_export: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "music"
    expected = _folder(root)
    output = root / "tags"  # inside the glob
    argv = [f"--input={root}/**", f"--model={samplecnn_export}", f"--output={output}", "--runner=DirectRunner"]
    tag.run(argv)
    _check(output, root, expected)
    assert (output / "manifest.jsonl").is_file() and (output / "tags.csv").is_file()
    caplog.clear()
    tag.run([*argv, "--overwrite"])  # the first run's outputs are now matched by the glob: left out
    _check(output, root, expected)
    assert "inside --output" in caplog.text and "left out" in caplog.text
    with pytest.raises(ParameterError, match="matched only files inside --output"):
        job_tracks.list_tracks(input_glob=f"{output}/*", manifest=None, output=str(output))


def test_list_files_matches_what_beam_leaves_out(tmp_path: pathlib.Path) -> None:
    expected = _folder(tmp_path)
    shown = lambda paths: [os.fsencode(p).decode("utf-8", "backslashreplace") for p in paths]  # noqa: E731
    assert shown(beam_io.list_files(f"{tmp_path}/**")) == sorted(str(tmp_path / p) for p in expected)
    assert shown(beam_io.list_files(f"{tmp_path}/*.wav")) == sorted(str(tmp_path / p) for p in expected
                                                                    if "/" not in p)
    assert beam_io.list_files(str(tmp_path / "dangling.wav")) == [str(tmp_path / "dangling.wav")]
    assert beam_io.list_files(f"{tmp_path}/nothing/*.wav") == []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # a relative glob (Beam's own match finds nothing for '*.wav')
        assert shown(beam_io.list_files("*.wav")) == sorted(p for p in expected if "/" not in p)
    finally:
        os.chdir(cwd)
    tracks = job_tracks.list_tracks(input_glob=f"{tmp_path}/**", manifest=None, output=str(tmp_path / "sub"))
    assert sorted(t.track_id for t in tracks) == ["caf_xe9_latin-1", "dangling", "good", "loop-a", "loop-b", "pipe"]
    assert np.all([t.name for t in tracks])
    listed = {t.track_id: t for t in tracks}
    assert [t.track_id for t in tracks if t.problem] == ["caf_xe9_latin-1"]
    with pytest.raises(AudioDecodeError, match=r"caf\\xe9 latin-1.wav: its name is not UTF-8 .* rename the file"):
        job_tracks.decode_track(listed["caf_xe9_latin-1"], sample_rate=8000, min_samples=1)


@pytest.mark.parametrize("store", ["local", "objects"])
def test_a_globstar_folder_matches_zero_or_more_folders_and_braces_are_alternatives(
    store: str, tmp_path: pathlib.Path,
) -> None:
    """``music/**/*.flac`` takes ``music/a.flac`` too, as gcloud storage, bash's globstar and Python's glob do.

    Beam alone translates ``**`` to "any characters", so that ``music/**/*.flac`` needed a
    folder below ``music/`` and the files directly in it were silently not tracks. Braces
    (``*.{mp3,flac}``) are alternatives, as in the shell; Beam took them literally.
    """
    files = ["a.flac", "b.wav", "x/c.flac", "x/y/d.flac", "x/y/e.wav", "xa.flac/f.wav"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"RIFF")
    root = str(tmp_path) if store == "local" else f"{OBJECTS}://{tmp_path}"
    if store == "objects":  # Beam's own match on the object store: what the variants must correct
        assert [m.path for m in beam_io.FileSystems.match([f"{root}/**/*.flac"])[0].metadata_list] == [
            f"{root}/x/c.flac", f"{root}/x/y/d.flac"]
        assert isinstance(beam_io.FileSystems.get_filesystem(root), FileSystem)
    found = lambda pattern: [p[len(root) + 1 :] for p in beam_io.list_files(f"{root}/{pattern}")]  # noqa: E731
    assert found("**/*.flac") == ["a.flac", "x/c.flac", "x/y/d.flac"]
    assert found("**/*.wav") == ["b.wav", "x/y/e.wav", "xa.flac/f.wav"]
    assert found("x/**/*.wav") == ["x/y/e.wav"]
    assert found("x/**/y/*") == ["x/y/d.flac", "x/y/e.wav"]  # zero folders between x/ and y/
    assert found("**/y/**/*.flac") == ["x/y/d.flac"]
    assert found("**") == sorted(files)
    assert found("*.flac") == ["a.flac"]  # '*' still stays in its folder
    assert found("x**/*.flac") == ["x/c.flac", "x/y/d.flac"]  # '**' inside a name keeps Beam's meaning
    assert found("**/a.flac") == ["a.flac"]  # dropping '**/' leaves a plain path: matched if it exists
    assert found("**/nothing.flac") == []
    # braces are alternatives, as in the shell
    _ObjectStore.listed.clear()
    assert found("**/*.{flac,wav}") == sorted(files)
    if store == "objects":  # four globs, one listing of the prefix they share
        assert _ObjectStore.listed == [f"{root}/"]
    assert found("{x,xa.flac}/**/*.wav") == ["x/y/e.wav", "xa.flac/f.wav"]
    assert found("x/{,y/}*.flac") == ["x/c.flac", "x/y/d.flac"]
    assert found("{a,b}.{flac,wav}") == ["a.flac", "b.wav"]  # no wildcard left: plain paths
    if store == "local":
        tracks = job_tracks.list_tracks(input_glob=f"{root}/**/*.flac", manifest=None)
        assert [t.track_id for t in tracks] == ["a", "x/c", "x/y/d"]
        tracks = job_tracks.list_tracks(input_glob=f"{root}/{{x/y,xa.flac}}/*.wav", manifest=None)
        assert [t.track_id for t in tracks] == ["x/y/e", "xa.flac/f"]  # relative to the folder they share
    assert beam_io.glob_variants("a/**/b/**/c") == ["a/**/b/**/c", "a/b/**/c", "a/**/b/c", "a/b/c"]
    assert beam_io.glob_variants("a/{x,{y,z}}/{b}") == ["a/x/{b}", "a/y/{b}", "a/z/{b}"]  # '{b}' is literal
    with pytest.raises(ParameterError, match="more than 256 brace alternatives; list the files in a --manifest"):
        beam_io.list_files(f"{root}/" + "{a,b}" * 9)
    with pytest.raises(ParameterError, match=r"more than 256 globs \(each '\*\*/' doubles them\)"):
        beam_io.list_files(f"{root}/" + "x/**/" * 9 + "*.wav")
    assert len(beam_io.glob_variants("x/**/" * 8 + "*.wav")) == 256
    assert len(beam_io.glob_variants("**/" * 20 + "*.wav")) == 21  # the same glob many times over is one


@pytest.mark.parametrize("store", ["local", "objects"])
def test_wildcards_stay_within_a_name_as_in_the_shell(store: str, tmp_path: pathlib.Path) -> None:
    """``*``, ``?`` and ``[...]`` match as Python's ``glob`` (the shell's rules) does, on local files and objects.

    Beam's own ``translate_pattern`` lets ``?`` and ``[!x]`` cross ``/`` and keeps ``*`` from names that
    hold a backslash; ``[[]`` (:func:`beam_jobs.io.escape`) is a literal ``[``, without Python's
    "possible nested set" warning.
    """
    files = ["a.wav", "b\\slash.wav", "[2019] live.wav", "q?.wav", "x{1,2}.wav", "sub/c.wav", "sub/[d].wav",
             "subxc.wav", "s*b.wav"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"RIFF")
    root = str(tmp_path) if store == "local" else f"{OBJECTS}://{tmp_path}"
    found = lambda pattern: [p[len(root) + 1 :] for p in beam_io.list_files(f"{root}/{pattern}")]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FutureWarning: Possible nested set
        for pattern in ["*", "*/*", "sub?c.wav", "sub[!x]c.wav", "sub[/]c.wav", "b*", "*slash*", "?.wav",
                        "[[]2019] *", "sub/[[]*", "[!a]*.wav", "[a-c]*", "[]ab]*", "*[?]*", "s[*]b.wav"]:
            shells = [p for p in glob.glob(pattern, root_dir=tmp_path, include_hidden=True)
                      if not (tmp_path / p).is_dir()]
            assert found(pattern) == sorted(shells), pattern
        for name in files:
            assert found(beam_io.escape(name)) == [name]
    assert found("sub?c.wav") == ["subxc.wav"] and found("b*") == ["b\\slash.wav"]
    with pytest.raises(ParameterError, match=r"the glob .*\[z-a\].* has an invalid \[...\] set"):
        found("[z-a].wav")
    if store == "local":  # a name with brackets, given as it is: the error says how to escape them
        with pytest.raises(ParameterError, match=re.escape(f"write '[' as '[[]': --input '{tmp_path}/[[]2019] *'")):
            job_tracks.list_tracks(input_glob=f"{tmp_path}/[2019] *", manifest=None)
