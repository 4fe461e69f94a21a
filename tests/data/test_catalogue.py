"""Catalogue manifests: parsing, validation, default ids, folder layouts, MagnaTagATune and GTZAN readers."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from tfaural.data import catalogue as cat
from tfaural.errors import DataError


def touch(path: pathlib.Path, data: bytes = b"x") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def audio_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    for name in ("rock/track 01.wav", "rock/b.flac", "jazz/c.mp3", "jazz/d.ogg"):
        touch(tmp_path / name)
    return tmp_path


# ---------------------------------------------------------------------------
# ids
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rock/track 01", "rock/track_01"),
        ("rock//./a", "rock/a"),
        ("../up/x", "up/x"),
        (".hidden/-dash", "_hidden/_dash"),
        ("weird:name*?", "weird_name_"),
        ("ümlaut/ß", "ümlaut/ß"),  # letters of any script are kept
        ("Кино/Группа крови", "Кино/Группа_крови"),
        ("日本語の歌 (live)", "日本語の歌_live_"),
        ("e\u0301te\u0301 d'hiver", "\u00e9t\u00e9_d_hiver"),  # decomposed (as macOS writes it) -> composed
        ("a\u200bb", "a_b"),  # a zero-width space is no letter
        ("a\\b", "a/b"),
        ("", "_"),
    ],
)
def test_sanitize_track_id_gives_safe_ids(text: str, expected: str) -> None:
    assert cat.sanitize_track_id(text) == expected
    assert cat.validate_track_id(cat.sanitize_track_id(text)) == expected


def test_sanitize_track_id_caps_length_with_a_hash() -> None:
    long = "a" * 500
    out = cat.sanitize_track_id(long)
    assert len(out) <= cat.MAX_TRACK_ID_LENGTH
    assert out != cat.sanitize_track_id("a" * 499)  # the hash keeps them apart
    cat.validate_track_id(out)


@pytest.mark.parametrize("bad", ["", "a b", "../x", "a//b", "/abs", ".hidden", "-opt", "a/./b", 7,
                                 "\u0301e", "a\u200bb"])
def test_validate_track_id_rejects_unsafe_ids(bad: object) -> None:
    with pytest.raises(DataError, match="track_id"):
        cat.validate_track_id(bad)  # type: ignore[arg-type]


def test_default_track_ids_are_stable_and_hash_only_collisions() -> None:
    paths = ["rock/track 01.wav", "rock/track_01.flac", "jazz/x.mp3", "gs://bucket/pop/y.wav", "/abs/z.au"]
    ids = cat.default_track_ids(paths)
    assert ids == cat.default_track_ids(paths)
    assert ids[2:] == ["jazz/x", "bucket/pop/y", "abs/z"]
    assert ids[0].startswith("rock/track_01-") and ids[1].startswith("rock/track_01-")
    assert ids[0] != ids[1] and len(ids[0]) == len("rock/track_01-") + 8
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("rock", ("rock",)), ("guitar; slow|loud", ("guitar", "slow", "loud")), (["a", " b ", "a"], ("a", "b")),
     ("", ()), (None, ()), (";;", ())],
)
def test_parse_labels(value: object, expected: tuple[str, ...]) -> None:
    assert cat.parse_labels(value) == expected


@pytest.mark.parametrize("bad", [3, ["a;b"], [1], {"a": 1}])
def test_parse_labels_rejects_bad_values(bad: object) -> None:
    with pytest.raises(DataError, match="label"):
        cat.parse_labels(bad)


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------


def test_read_csv_manifest_resolves_paths_and_derives_ids(audio_dir: pathlib.Path) -> None:
    absolute = touch(audio_dir.parent / "elsewhere" / "e.wav")
    (audio_dir / "m.csv").write_text(
        "path,labels,split,extra\n"
        "rock/track 01.wav,rock;loud,train,ignored\n"
        "\n"
        f"{absolute},jazz|loud,test,\n"
        "jazz/c.mp3,jazz,,\n"
        "gs://bucket/a.wav,rock,validation,\n",
        encoding="utf-8",
    )
    catalogue = cat.read_manifest(audio_dir / "m.csv")
    assert [t.track_id for t in catalogue] == ["rock/track_01", cat.sanitize_track_id(str(absolute)[1:-4]),
                                               "jazz/c", "bucket/a"]
    assert catalogue.tracks[0].path == str(audio_dir / "rock" / "track 01.wav")
    assert catalogue.tracks[1].path == str(absolute)
    assert catalogue.tracks[3].path == "gs://bucket/a.wav"
    assert [t.split for t in catalogue] == ["train", "test", None, "validation"]
    assert catalogue.label_names == ("jazz", "loud", "rock")
    assert catalogue.multi_label
    assert catalogue.splits == ("train", "validation", "test", None)
    np.testing.assert_array_equal(catalogue.multi_hot(catalogue.tracks[0]), [0, 1, 1])
    assert catalogue.label_counts() == {"jazz": 2, "loud": 2, "rock": 2}
    assert len(catalogue.split("train")) == 1 and catalogue.split("train").label_names == catalogue.label_names
    assert catalogue.track("jazz/c").labels == ("jazz",)


def test_read_jsonl_manifest_with_lists_strings_and_int_ids(audio_dir: pathlib.Path) -> None:
    lines = [
        {"path": "rock/b.flac", "labels": ["rock", "slow"], "split": "train", "track_id": 17},
        {"path": "jazz/d.ogg", "labels": "jazz;fast", "split": None},
    ]
    (audio_dir / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    catalogue = cat.read_manifest(audio_dir / "m.jsonl", label_names=["slow", "fast", "rock", "jazz"])
    assert [t.track_id for t in catalogue] == ["17", "jazz/d"]
    assert catalogue.tracks[1].labels == ("jazz", "fast")
    assert catalogue.label_names == ("slow", "fast", "rock", "jazz")
    np.testing.assert_array_equal(catalogue.multi_hot(catalogue.tracks[0]), [1, 0, 1, 0])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_write_then_read_manifest_round_trips(audio_dir: pathlib.Path, suffix: str) -> None:
    outside = touch(audio_dir.parent / "outside" / "o.wav")
    tracks = (
        cat.Track(path=str(audio_dir / "rock" / "track 01.wav"), track_id="r1", labels=("rock", "loud"), split="train"),
        cat.Track(path=str(audio_dir / "jazz" / "c.mp3"), track_id="jazz/c", labels=("jazz",), split=None),
        cat.Track(path=str(outside), track_id="o", labels=("rock",), split="test"),
        # a name JSON keeps raw and str.splitlines() would split a line at
        cat.Track(path=str(touch(audio_dir / "jazz" / "line\u2028sep\x85nel.wav")), track_id="jazz/odd",
                  labels=("jazz",), split="test"),
    )
    original = cat.Catalogue(tracks=tracks, label_names=("jazz", "loud", "rock"))
    path = cat.write_manifest(original, audio_dir / f"manifest{suffix}")
    text = pathlib.Path(path).read_text()
    assert "rock/track 01.wav" in text and str(outside) in text  # relative inside, absolute outside
    again = cat.read_manifest(path)
    assert again.tracks == original.tracks
    assert again.label_names == original.label_names


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,labels\nrock/nope.wav,rock\n", r"does not exist"),
        ("path,track_id,labels\nrock/b.flac,x,rock\njazz/c.mp3,x,jazz\n", r"duplicate track_id 'x'"),
        ("path,labels\nrock/b.flac,rock\nrock/../rock/b.flac,jazz\n",  # one file twice, however spelt
         r"line 3: lists '.*/rock/b\.flac' again \(first at .*line 2\); a file is one track"),
        ("path,labels,split\nrock/b.flac,rock,trian\n",
         r"unknown split 'trian'; expected one of \('train', 'validation', 'test'\) "
         r"\(or training/valid/val/dev/testing\)"),
        ("path,labels\nrock/b.flac,\n", r"no labels"),
        ("path,track_id,labels\nrock/b.flac,has space,rock\n", r"not safe to use in file names"),
        ("file,labels\nrock/b.flac,rock\n", r"no 'path' column"),
        ("path,labels\n", r"no tracks"),
        ("path,labels\n,rock\n", r"empty path"),
    ],
)
def test_read_manifest_errors_name_the_problem(audio_dir: pathlib.Path, content: str, message: str) -> None:
    (audio_dir / "m.csv").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        cat.read_manifest(audio_dir / "m.csv")
    assert "m.csv" in str(info.value)


def test_read_manifest_reports_every_problem_with_line_numbers(audio_dir: pathlib.Path) -> None:
    (audio_dir / "m.csv").write_text("path,labels,split\na.wav,rock,train\nb.wav,,test\nrock/b.flac,rock,develop\n")
    with pytest.raises(DataError) as info:
        cat.read_manifest(audio_dir / "m.csv")
    text = str(info.value)
    assert "4 problem(s)" in text  # a.wav and b.wav missing, b.wav unlabelled, split develop
    assert "line 2" in text and "line 3" in text and "line 4" in text


def test_read_manifest_options_relax_checks(audio_dir: pathlib.Path) -> None:
    (audio_dir / "m.csv").write_text("path,labels,split\nmissing.wav,,dev\n")
    catalogue = cat.read_manifest(audio_dir / "m.csv", require_labels=False, check_files=False, splits=("dev",))
    assert catalogue.tracks[0].labels == () and catalogue.tracks[0].split == "dev"


def test_manifest_splits_other_tools_write_are_the_three_splits(audio_dir: pathlib.Path) -> None:
    (audio_dir / "m.csv").write_text("path,labels,split\nrock/b.flac,rock, TRAIN \njazz/c.mp3,jazz,val\n"
                                     "rock/track 01.wav,rock,Testing\n")
    catalogue = cat.read_manifest(audio_dir / "m.csv")
    assert [t.split for t in catalogue.tracks] == ["train", "validation", "test"]
    assert catalogue.splits == ("train", "validation", "test")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.jsonl", '{"path": "rock/b.flac", "labels": ["rock"]}\nnot json\n', r"line 2: not valid JSON"),
        ("m.jsonl", '["rock/b.flac"]\n', r"expected a JSON object"),
        ("m.jsonl", '{"labels": ["rock"]}\n', r"'path' is missing"),
        ("m.jsonl", '{"path": "rock/b.flac", "labels": 5}\n', r"labels 5 are invalid"),
        ("m.txt", "path\n", r"unknown manifest format"),
    ],
)
def test_malformed_manifests(audio_dir: pathlib.Path, name: str, content: str, message: str) -> None:
    (audio_dir / name).write_text(content)
    with pytest.raises(DataError, match=message):
        cat.read_manifest(audio_dir / name)


def test_missing_manifest_and_label_outside_vocabulary(audio_dir: pathlib.Path) -> None:
    with pytest.raises(DataError, match="manifest file not found"):
        cat.read_manifest(audio_dir / "nope.csv")
    (audio_dir / "m.csv").write_text("path,labels\nrock/b.flac,rock;metal\n")
    with pytest.raises(DataError, match=r"\['metal'\] are not in the given label_names"):
        cat.read_manifest(audio_dir / "m.csv", label_names=["rock"])


def test_a_remote_manifest_that_cannot_be_read_is_a_data_error() -> None:
    """Through tf.io.gfile (the default for URIs), whose errors are not OSErrors: this TensorFlow has no s3://."""
    with pytest.raises(DataError, match=r"s3://bucket/m\.csv: cannot read the manifest \(UnimplementedError: "):
        cat.read_manifest("s3://bucket/m.csv")


def test_a_manifest_is_read_with_the_reader_given(audio_dir: pathlib.Path) -> None:
    """``read_text`` (e.g. Beam's filesystems) reads the manifest; its paths resolve against the manifest's folder."""
    texts = {"mem://music/m.csv": "\ufeffpath,labels\nrock/b.flac,rock\n"}
    catalogue = cat.read_manifest("mem://music/m.csv", read_text=texts.__getitem__, check_files=False)
    assert [(t.path, t.track_id, t.labels) for t in catalogue.tracks] == [("mem://music/rock/b.flac", "rock/b",
                                                                          ("rock",))]

    def unreadable(path: str) -> str:
        raise OSError(f"{path}: 403 Forbidden")

    with pytest.raises(DataError, match=r"mem://music/m\.csv: cannot read the manifest \(mem://music/m\.csv: 403"):
        cat.read_manifest("mem://music/m.csv", read_text=unreadable)


def test_catalogue_invariants() -> None:
    track = cat.Track(path="/a.wav", track_id="a", labels=("x",))
    with pytest.raises(DataError, match="duplicate track_id"):
        cat.Catalogue(tracks=(track, track), label_names=("x",))
    with pytest.raises(DataError, match="not in label_names"):
        cat.Catalogue(tracks=(track,), label_names=("y",))
    with pytest.raises(DataError, match="duplicates"):
        cat.Catalogue(tracks=(track,), label_names=("x", "x"))
    with pytest.raises(DataError, match="no track with id"):
        cat.Catalogue(tracks=(track,), label_names=("x",)).track("b")
    assert cat.Track(path="/a.wav", track_id="a", labels="x;y").labels == ("x", "y")  # type: ignore[arg-type]


def test_resolve_path() -> None:
    assert cat.resolve_path("a/b.wav", base="/data") == os.path.join("/data", "a", "b.wav")
    assert cat.resolve_path("/x/b.wav", base="/data") == "/x/b.wav"
    assert cat.resolve_path("s3://b/x.wav", base="/data") == "s3://b/x.wav"
    assert cat.resolve_path("a/../b.wav", base="gs://bucket/dir") == "gs://bucket/dir/b.wav"


# ---------------------------------------------------------------------------
# folders and public datasets
# ---------------------------------------------------------------------------


def test_manifest_from_folder(audio_dir: pathlib.Path) -> None:
    touch(audio_dir / "rock" / ".hidden.wav")
    touch(audio_dir / "rock" / "notes.txt")
    touch(audio_dir / "rock" / "live" / "deep.WAV")
    catalogue = cat.manifest_from_folder(audio_dir, split="train", splits={"jazz/c": "test"})
    assert [t.track_id for t in catalogue] == ["jazz/c", "jazz/d", "rock/b", "rock/live/deep", "rock/track_01"]
    assert [t.labels for t in catalogue] == [("jazz",)] * 2 + [("rock",)] * 3
    assert [t.split for t in catalogue] == ["test", "train", "train", "train", "train"]
    assert catalogue.label_names == ("jazz", "rock") and not catalogue.multi_label
    manifest = cat.write_manifest(catalogue, audio_dir / "manifest.csv")
    assert cat.read_manifest(manifest).tracks == catalogue.tracks


def test_manifest_from_folder_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        cat.manifest_from_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no audio files"):
        cat.manifest_from_folder(tmp_path)
    touch(tmp_path / "top.wav")
    with pytest.raises(DataError, match=r"not inside a label folder.*top\.wav"):
        cat.manifest_from_folder(tmp_path)


def _write_mtat(root: pathlib.Path, rows: list[tuple[int, dict[str, int], str]], tags: list[str]) -> pathlib.Path:
    lines = ["\t".join(f'"{h}"' for h in ["clip_id", *tags, "mp3_path"])]
    for clip_id, flags, mp3 in rows:
        lines.append("\t".join(f'"{v}"' for v in [clip_id, *[flags.get(t, 0) for t in tags], mp3]))
        touch(root / "mp3" / mp3)
    path = root / "annotations_final.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_magnatagatune_top_k_and_directory_splits(tmp_path: pathlib.Path) -> None:
    tags = ["no voice", "guitar", "classical", "rare"]
    rows = [
        (2, {"guitar": 1, "classical": 1}, "f/a-x-30-59.mp3"),
        (6, {"guitar": 1}, "0/b-y-0-29.mp3"),
        (10, {"classical": 1, "no voice": 1}, "c/c-z-0-29.mp3"),
        (11, {"guitar": 1, "rare": 1}, "b/d.mp3"),
        (12, {"rare": 1}, "a/e.mp3"),  # none of the top-2 tags: dropped
        (13, {"no voice": 1}, "d/f.mp3"),
    ]
    annotations = _write_mtat(tmp_path, rows, tags)
    catalogue = cat.read_magnatagatune(annotations, tmp_path / "mp3", top_k=2)
    assert catalogue.label_names == ("guitar", "no voice")  # counts 3 vs 2 (tie with classical: column order)
    assert [t.track_id for t in catalogue] == ["2", "6", "10", "11", "13"]
    assert [t.split for t in catalogue] == ["test", "train", "validation", "train", "test"]
    assert catalogue.track("10").labels == ("no voice",)
    assert catalogue.track("2").path == str(tmp_path / "mp3" / "f" / "a-x-30-59.mp3")
    full = cat.read_magnatagatune(annotations, tmp_path / "mp3", tags=["classical", "rare"], drop_untagged=False)
    assert len(full) == 6 and full.track("6").labels == () and full.label_names == ("classical", "rare")


def test_read_magnatagatune_errors(tmp_path: pathlib.Path) -> None:
    annotations = _write_mtat(tmp_path, [(1, {"a": 1}, "0/x.mp3")], ["a"])
    with pytest.raises(DataError, match=r"tag\(s\) \['zzz'\] are not columns"):
        cat.read_magnatagatune(annotations, tmp_path / "mp3", tags=["zzz"])
    with pytest.raises(DataError, match="does not exist"):
        cat.read_magnatagatune(annotations, tmp_path / "elsewhere", top_k=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,a,b\n1,0,1\n")
    with pytest.raises(DataError, match="not MagnaTagATune's"):
        cat.read_magnatagatune(bad, tmp_path)


def test_mtat_top50_constant() -> None:
    assert len(cat.MTAT_TOP50_TAGS) == 50 and len(set(cat.MTAT_TOP50_TAGS)) == 50
    assert cat.MTAT_TOP50_TAGS[:3] == ("guitar", "classical", "slow")


def _gtzan(root: pathlib.Path) -> pathlib.Path:
    for genre in ("blues", "jazz"):
        for i in range(3):
            touch(root / "genres" / genre / f"{genre}.0000{i}.{'au' if genre == 'blues' else 'wav'}")
    return root / "genres"


def test_read_gtzan_with_and_without_split_lists(tmp_path: pathlib.Path) -> None:
    genres = _gtzan(tmp_path)
    everything = cat.read_gtzan(genres)
    assert len(everything) == 6 and everything.label_names == cat.GTZAN_GENRES
    assert {t.split for t in everything} == {None}
    assert everything.tracks[0].track_id == "blues.00000"
    (tmp_path / "train_filtered.txt").write_text("blues/blues.00000.wav\njazz/jazz.00001.wav\n")
    (tmp_path / "test_filtered.txt").write_text("genres/jazz/jazz.00002.wav\n\n")
    split = cat.read_gtzan(genres, split_files={"train": tmp_path / "train_filtered.txt",
                                                "test": tmp_path / "test_filtered.txt"})
    assert [(t.track_id, t.labels, t.split) for t in split] == [
        ("blues.00000", ("blues",), "train"), ("jazz.00001", ("jazz",), "train"), ("jazz.00002", ("jazz",), "test")
    ]
    assert split.tracks[0].path.endswith("blues.00000.au")


def test_read_gtzan_errors(tmp_path: pathlib.Path) -> None:
    genres = _gtzan(tmp_path)
    (tmp_path / "t.txt").write_text("blues/blues.00009.wav\nblues/blues.00000.wav\nblues/blues.00000.au\n")
    with pytest.raises(DataError) as info:
        cat.read_gtzan(genres, split_files={"train": tmp_path / "t.txt"})
    assert "blues.00009" in str(info.value) and "already listed" in str(info.value)
    touch(genres / "polka" / "polka.00000.wav")
    with pytest.raises(DataError, match=r"\['polka'\] are not GTZAN genres"):
        cat.read_gtzan(genres)


def test_ids_of_absolute_paths_are_relative_to_their_common_folder() -> None:
    """A manifest of absolute paths gives the ids a glob over their folder would (not ``data/music/in/...``)."""
    paths = ["/data/music/in/song.wav", "/data/music/in/b/c.flac", "/data/music/in/.cache/d.mp3"]
    assert cat.default_track_ids(paths) == ["song", "b/c", "_cache/d"]
    assert cat.default_track_ids(["/home/u/.local/music/one.wav"]) == ["one"]  # the dot-folder is above the music
    assert cat.default_track_ids(["gs://bucket/in/a.wav", "gs://bucket/in/x/b.wav"]) == ["a", "x/b"]
    assert cat.default_track_ids(["C:\\music\\a.wav", "C:\\music\\x\\b.wav"]) == ["a", "x/b"]
    # Mixed with relative paths (relative to the manifest's folder): nothing is cut.
    assert cat.default_track_ids(["/data/in/a.wav", "rock/b.wav"]) == ["data/in/a", "rock/b"]
    # Files in one folder with the same stem still get distinct ids (the hash of the full path).
    ids = cat.default_track_ids(["/in/a.wav", "/in/a.flac"])
    assert ids[0] != ids[1] and all(i.startswith("a-") for i in ids)


def test_a_manifest_of_absolute_paths_gives_ids_relative_to_the_common_folder(tmp_path: pathlib.Path) -> None:
    """Read through read_manifest: the music lies below a dot-folder (``~/.local/...``), the manifest elsewhere."""
    music = tmp_path / ".local" / "music" / "in"
    paths = [touch(music / "song.wav"), touch(music / "b" / "c.flac")]
    manifest = tmp_path / "lists" / "tracks.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in paths), encoding="utf-8")
    catalogue = cat.read_manifest(manifest, require_labels=False)
    assert [t.track_id for t in catalogue.tracks] == ["song", "b/c"]  # neither tmp_path's folders nor "_local"
    assert [t.path for t in catalogue.tracks] == [str(p) for p in paths]
    assert all(cat.validate_track_id(t.track_id) for t in catalogue.tracks)


def test_labels_differing_only_in_case_are_two_classes_with_a_warning(
    audio_dir: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    (audio_dir / "m.csv").write_text("path,labels\nrock/b.flac,Rock\njazz/c.mp3,rock;jazz\njazz/d.ogg,rock\n")
    with caplog.at_level("WARNING", logger="tfaural.data.catalogue"):
        catalogue = cat.read_manifest(audio_dir / "m.csv")
    assert catalogue.label_names == ("Rock", "jazz", "rock")  # as written: the manifest decides
    assert "'Rock' (1 track) and 'rock' (2 tracks)" in caplog.text and "m.csv" in caplog.text
    assert "jazz" not in caplog.text
    caplog.clear()
    (audio_dir / "n.csv").write_text("path,labels\nrock/b.flac,rock\njazz/c.mp3,jazz\n")
    with caplog.at_level("WARNING", logger="tfaural.data.catalogue"):
        cat.read_manifest(audio_dir / "n.csv")
    assert not caplog.text
