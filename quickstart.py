"""The quick start, end to end: ``python -m quickstart --output demo`` (``make demo``).

1. render the demo catalogue with FluidSynth (:mod:`tfaural.datasets.demo`);
2. build TFRecords at 11,025 Hz with the Beam job ``beam_jobs.make_tfrecords``;
3. train the Choi CNN on the three styles (``tfaural.training.train``) and evaluate it on the test split;
4. export it as a SavedModel (``export``) and verify it in a fresh process;
5. auralise every feature of layers 1–5 on a few demo tracks (``beam_jobs.auralise``)
   and write the HTML listening report;
6. draw the papers' figures for those tracks (``tfaural.visualise``: first-layer
   kernels, original vs deconvolved spectrograms of each layer's most active features);
7. tag the whole catalogue (``beam_jobs.tag``);
8. import musicnn's pretrained MagnaTagATune tagger ``MTT_vgg`` (``tfaural.pretrained``),
   export it and tag the catalogue with it too; ``tags/comparison.csv`` puts its top tags
   beside the demo model's, and the summary prints what it hears in each style;

then print where to listen and where to look. Each stage is skipped when its
output is already complete, so an interrupted quick start picks up where it stopped.

Stages that do not need each other overlap on the 2 cores, each in a child process
of its own (its output in ``logs/``): the pretrained tagger's import, export and
tagging (8) run while the Choi CNN trains, the figures (6) are drawn while the
Choi CNN is exported. Exporting and drawing are mostly single-threaded work (tracing
graphs, plotting); training and auralising use every core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tfaural.cli import VERBOSE_ENV, add_verbose_flag, quiet_tensorflow_startup
from tfaural.errors import TfauralError

__all__ = ["main", "run_quickstart"]

logger = logging.getLogger("quickstart")

SAMPLE_RATE = 11025


def _stage(name: str, done: bool, action: Callable[[], Any], timings: dict[str, float]) -> Any:
    if done:
        print(f"[quickstart] {name}: already done, skipped", flush=True)
        timings[name] = 0.0
        return None
    print(f"[quickstart] {name} ...", flush=True)
    start = time.time()
    result = action()
    timings[name] = round(time.time() - start, 1)
    print(f"[quickstart] {name}: {timings[name]:.0f} s", flush=True)
    return result


class _Background:
    """Stages run one after another in child processes while the main line goes on.

    Each stage is ``(name, done, argv)``: skipped (timing 0) when ``done()`` says so,
    else ``argv()`` is run with its output appended to ``log``. :meth:`wait` joins and
    raises a :class:`TfauralError` naming the stage, its exit code, the log and the log's end.
    """

    def __init__(self, stages: Sequence[tuple[str, Callable[[], bool], Callable[[], list[str]]]], log: str,
                 timings: dict[str, float]) -> None:
        self._stages, self._log, self._timings = list(stages), log, timings
        # The environment as it is now, between stages: a Beam job run in this process later points TMPDIR at
        # its own scratch folder while it runs and removes that folder when it ends.
        self._env = dict(os.environ)
        self._error: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        os.makedirs(os.path.dirname(log), exist_ok=True)
        names = "; ".join(name for name, _, _ in self._stages)
        print(f"[quickstart] started in the background: {names} (output: {log})", flush=True)
        self._thread = threading.Thread(target=self._run, name="quickstart-background", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for name, done, argv in self._stages:
            if done():
                self._timings[name] = 0.0
                continue
            start = time.time()
            with open(self._log, "a", encoding="utf-8") as log:
                if self._stopped:
                    return
                self._process = subprocess.Popen(argv(), stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=self._env)
                code = self._process.wait()
            self._timings[name] = round(time.time() - start, 1)
            if code != 0:
                with open(self._log, encoding="utf-8", errors="replace") as log:
                    tail = "".join(log.readlines()[-15:])
                self._error = f"{name} failed (exit code {code}; its output: {self._log}):\n{tail}"
                return

    def stop(self) -> None:
        """Ends the running stage (the main line failed or was interrupted) and runs no more."""
        self._stopped = True
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # the export and the Beam jobs remove their temporary folders on SIGTERM
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def wait(self) -> None:
        """Waits for the stages; prints their timings.

        Raises:
            TfauralError: If a stage failed.
        """
        self._thread.join()
        if self._error is not None:
            raise TfauralError(self._error)
        for name, _, _ in self._stages:
            took = self._timings.get(name, 0.0)
            print(f"[quickstart] {name}: " + (f"{took:.0f} s (in the background)" if took else "already done, skipped"),
                  flush=True)


def _latest_version(export_base: str) -> str | None:
    if not os.path.isdir(export_base):
        return None
    versions = sorted(int(d) for d in os.listdir(export_base) if d.isdigit())
    return os.path.join(export_base, str(versions[-1])) if versions else None


def run_quickstart(
    output: str,
    *,
    tracks_per_style: int = 40,
    seconds: float = 8.0,
    epochs: int = 4,
    auralise_tracks: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs every stage (see the module docstring) and returns a summary dict.

    Unless verbose (``--verbose`` or ``TFAURAL_VERBOSE=1``), no process of the quick start prints
    TensorFlow's C++ start-up lines (:func:`tfaural.cli.quiet_tensorflow_startup`).
    """
    quiet_tensorflow_startup()
    background: list[_Background] = []
    try:
        return _run_stages(output, tracks_per_style=tracks_per_style, seconds=seconds, epochs=epochs,
                           auralise_tracks=auralise_tracks, seed=seed, background=background)
    except BaseException:
        for stages in background:
            stages.stop()
        raise


def _run_stages(output: str, *, tracks_per_style: int, seconds: float, epochs: int, auralise_tracks: int, seed: int,
                background: list[_Background]) -> dict[str, Any]:
    from tfaural.datasets import demo

    started = time.time()

    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    catalogue = os.path.join(output, "catalogue")
    records = os.path.join(output, "tfrecords")
    run_dir = os.path.join(output, "runs", "choi")
    export_base = os.path.join(output, "exports", "choi")
    auralised = os.path.join(output, "auralised")
    figures = os.path.join(output, "figures")
    tags = os.path.join(output, "tags")
    timings: dict[str, float] = {}

    _stage(
        "render the demo catalogue (FluidSynth)",
        os.path.exists(os.path.join(catalogue, "tracks.jsonl")),
        lambda: demo.render_catalogue(catalogue, tracks_per_style=tracks_per_style, seconds=seconds,
                                      sample_rate=22050, seed=seed, formats=("wav", "flac")),
        timings,
    )

    # musicnn's MTT_vgg: import, export and tag in the background while the Choi CNN trains.
    pretrained_run = os.path.join(output, "runs", "mtt_vgg")
    pretrained_exports = os.path.join(output, "exports", "mtt_vgg")
    pretrained_tags = os.path.join(output, "tags_mtt_vgg")
    python = sys.executable
    pretrained = _Background([
        ("import musicnn's pretrained MTT_vgg tagger (checked against its own graph)",
         lambda: os.path.exists(os.path.join(pretrained_run, "run.json")),
         lambda: [python, "-m", "tfaural.pretrained", "musicnn/MTT_vgg", "--output", pretrained_run, "--overwrite"]),
        # Its tagging signatures alone: the demo only tags with it (export the run again without
        # --signatures to listen to it; docs/pretrained.md), and the export takes a fraction of the time.
        ("export MTT_vgg's tagging signatures (and verify them in a fresh process)",
         lambda: _latest_version(pretrained_exports) is not None,
         lambda: [python, "-m", "export", "--run", pretrained_run, "--output", pretrained_exports,
                  "--signatures", "tagging"]),
        ("tag the catalogue with MTT_vgg (Beam)", lambda: False,
         lambda: [python, "-m", "beam_jobs.tag", f"--manifest={os.path.join(catalogue, 'manifest.csv')}",
                  f"--model={_latest_version(pretrained_exports)}", f"--output={pretrained_tags}", "--skip-existing"]),
    ], os.path.join(output, "logs", "mtt_vgg.log"), timings)
    background.append(pretrained)

    def build_records() -> None:
        from beam_jobs import make_tfrecords

        make_tfrecords.run([f"--manifest={os.path.join(catalogue, 'manifest.csv')}", f"--output={records}",
                            f"--sample-rate={SAMPLE_RATE}", "--overwrite"])

    _stage("build TFRecords (Beam)", os.path.exists(os.path.join(records, "dataset.json")), build_records, timings)

    def train_model() -> None:
        from tfaural.training.train import TrainConfig, train

        # Adam (lr 1e-3) instead of the papers' SGD (lr 0.01), and dropout 0.1 instead of 0.5, because the
        # demo catalogue is tiny (176 training segments) and has to train in about two minutes on 2 cores:
        # measured on it, Adam first reached a validation accuracy of 1.0 at epoch 3, 4 or 5 in seven runs
        # (test accuracy 1.0 in all, 4-6 epochs) where SGD needed its first learning-rate decay and 12 epochs.
        # The schedule (plateau decay, best weights kept) is the papers'.
        config = TrainConfig(model="choi", epochs=epochs, batch_size=16, dropout=0.1, max_decays=1, seed=seed,
                             optimizer="adam", learning_rate=1e-3)
        train(records, run_dir, config)

    state_path = os.path.join(run_dir, "checkpoints", "state.json")
    finished = False
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as handle:
            finished = bool(json.load(handle).get("finished"))
    _stage("train the Choi CNN", finished, train_model, timings)

    def evaluate_model() -> dict[str, Any]:
        from tfaural.training.evaluate import evaluate_run

        return evaluate_run(run_dir, records, split="test")

    evaluation = _stage("evaluate on the test split", os.path.exists(os.path.join(run_dir, "eval.json")),
                        evaluate_model, timings)
    if evaluation is None:
        with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as handle:
            evaluation = json.load(handle)

    tracks = sorted(os.path.join(catalogue, "audio", style, name)
                    for style in demo.STYLES
                    for name in sorted(os.listdir(os.path.join(catalogue, "audio", style)))[:1])[:auralise_tracks]
    offset = max(0.0, min(2.0, seconds - 4.0))  # a 4-s excerpt, 2 s in when the clips are long enough
    # The papers' figures are drawn from the run directory while the model is exported.
    drawn = _Background([
        ("draw the papers' figures (first-layer kernels, deconvolved spectrograms)",
         lambda: os.path.exists(os.path.join(figures, "figures.json")),
         lambda: [python, "-m", "tfaural.visualise", "--run", run_dir, "--output", figures, "--audio", *tracks,
                  f"--offset-seconds={offset:g}", "--clip-seconds=4"]),
    ], os.path.join(output, "logs", "figures.log"), timings)
    background.append(drawn)

    def export_model() -> str:
        import export

        return str(export.export_run(run_dir, export_base))

    version_dir = _stage("export the SavedModel (and verify it in a fresh process)",
                         _latest_version(export_base) is not None, export_model, timings)
    version_dir = version_dir or _latest_version(export_base)
    assert version_dir is not None

    def auralise_tracks_job() -> None:
        from beam_jobs import auralise

        manifest = os.path.join(output, "auralise_inputs.csv")
        with open(manifest, "w", encoding="utf-8") as handle:
            handle.write("path,track_id\n")
            for path in tracks:
                handle.write(f"{path},{os.path.splitext(os.path.basename(path))[0]}\n")
        auralise.run([f"--manifest={manifest}", f"--model={version_dir}", f"--output={auralised}",
                      "--layers=all", "--features=all", "--features-per-call=64", "--clip-seconds=4",
                      f"--offset-seconds={offset:g}", "--spectrograms", "--report", "--skip-existing"])

    _stage("auralise layers 1-5 x 64 features of a few tracks (Beam)", False, auralise_tracks_job, timings)

    drawn.wait()

    def tag_catalogue() -> None:
        from beam_jobs import tag

        tag.run([f"--manifest={os.path.join(catalogue, 'manifest.csv')}", f"--model={version_dir}",
                 f"--output={tags}", "--skip-existing"])

    _stage("tag the whole catalogue (Beam)", False, tag_catalogue, timings)
    pretrained.wait()
    heard = compare_tags(os.path.join(catalogue, "manifest.csv"), os.path.join(tags, "tags.csv"),
                         os.path.join(pretrained_tags, "tags.csv"), os.path.join(tags, "comparison.csv"))

    summary = {
        "output": output,
        "test_accuracy": evaluation.get("accuracy"),
        "chance": evaluation.get("chance"),
        "test_tracks": evaluation.get("n_tracks"),
        "export": version_dir,
        "report": os.path.join(auralised, "report", "index.html"),
        "auralised": auralised,
        "figures": figures,
        "tags": os.path.join(tags, "tags.csv"),
        "pretrained_tags": os.path.join(pretrained_tags, "tags.csv"),
        "comparison": os.path.join(tags, "comparison.csv"),
        "mtt_vgg_top_tags_per_style": heard,
        "timings_seconds": timings,
        "total_seconds": round(time.time() - started, 1),  # wall clock: some stages overlap
    }
    with open(os.path.join(output, "quickstart.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def compare_tags(manifest: str, own_tags: str, pretrained_tags: str, output: str) -> dict[str, list[Any]]:
    """Writes the two taggers' top labels side by side; returns the pretrained tagger's top 5 per style.

    Args:
        manifest: The catalogue's ``manifest.csv`` (``track_id`` and its style label).
        own_tags: ``tags.csv`` of the demo model.
        pretrained_tags: ``tags.csv`` of the pretrained tagger (one score column per tag).
        output: The CSV to write: ``track_id, style, demo_model, mtt_vgg_top5``.

    Returns:
        ``{style: [(tag, mean score), ...5]}``: the tags with the highest mean score over the style's tracks.
    """
    import csv

    import numpy as np

    def rows(path: str) -> dict[str, dict[str, str]]:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["track_id"]: row for row in csv.DictReader(handle)}

    styles = {track: row["labels"] for track, row in rows(manifest).items()}
    own, pretrained = rows(own_tags), rows(pretrained_tags)
    tag_names = [name for name in next(iter(pretrained.values()), {}) if name not in ("track_id", "path", "top_labels")]
    with open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "style", "demo_model", "mtt_vgg_top5"])
        for track in sorted(styles):
            if track in own or track in pretrained:
                writer.writerow([track, styles[track], own.get(track, {}).get("top_labels", "").split(";")[0],
                                 pretrained.get(track, {}).get("top_labels", "")])
    heard: dict[str, list[Any]] = {}
    for style in sorted(set(styles.values())):
        scores = np.array([[float(pretrained[t][n]) for n in tag_names] for t, s in styles.items()
                           if s == style and t in pretrained])
        if scores.size:
            mean = scores.mean(axis=0)
            heard[style] = [(tag_names[i], round(float(mean[i]), 3)) for i in np.argsort(-mean)[:5]]
    return heard


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m quickstart",
        description="Render a demo catalogue with FluidSynth, train the Choi CNN on it, export it, auralise its "
        "learnt features and tag the catalogue with Beam, then print where to listen and look.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", default="demo", help="folder for everything the quick start writes")
    parser.add_argument("--tracks-per-style", type=int, default=40, help="demo clips per style")
    parser.add_argument("--seconds", type=float, default=8.0, help="demo clip length in seconds")
    parser.add_argument("--epochs", type=int, default=4, help="most training epochs")
    parser.add_argument("--auralise-tracks", type=int, default=3, help="tracks to auralise")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # the stages' processes too
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tfaural").setLevel(logging.INFO)
    try:
        summary = run_quickstart(args.output, tracks_per_style=args.tracks_per_style, seconds=args.seconds,
                                 epochs=args.epochs, auralise_tracks=args.auralise_tracks, seed=args.seed)
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(f"Done in {summary['total_seconds']:.0f} s.")
    if summary["test_accuracy"] is not None:
        print(f"  Test accuracy of the Choi CNN: {summary['test_accuracy']:.2f} "
              f"over {summary['test_tracks']} tracks (chance {summary['chance']:.2f})")
    print(f"  Listen and look:  open {summary['report']}")
    print(f"  Auralised WAVs:   {summary['auralised']}/<track>/layer<L>/feature<K>.wav")
    print(f"  Figures:          {summary['figures']}/deconvolution-layer<L>.png, first-layer-weights.png")
    print(f"  Tags:             {summary['tags']}")
    print(f"  MTT_vgg's tags:   {summary['pretrained_tags']}  (side by side: {summary['comparison']})")
    print("  What musicnn's pretrained MTT_vgg hears in each demo style (mean score of its top 5 tags):")
    for style, top in summary["mtt_vgg_top_tags_per_style"].items():
        print(f"    {style:8s} " + ", ".join(f"{name} {score:.2f}" for name, score in top))
    print(f"  SavedModel:       {summary['export']}  (serve it: docs/serving.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
