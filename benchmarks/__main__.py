"""Runs every benchmark and writes one JSON report plus its Markdown table (``benchmarks/RESULTS.md``).

``python -m benchmarks [--quick] [--jobs N] [--output results.json] [--only NAME ...] [--update]``

The Markdown table goes beside the JSON report: ``results<X>.json`` -> ``RESULTS<X>.md``
(:func:`markdown_path`), unless ``--markdown`` says otherwise. Without ``--output``, a timed run
writes ``benchmarks/results.json`` and ``RESULTS.md`` (committed) and a ``--quick`` run
``benchmarks/results_quick.json`` and ``RESULTS_quick.md`` (ignored by git).

Each benchmark is a script in this folder that prints one JSON object; it runs
in its own process (fresh TensorFlow state, no cross-talk), one after another.
Every figure inside a benchmark is a median of several runs after a warm-up, and
comparisons are measured side by side in the same run and reported as ratios.
Each entry records when it ran and the machine's load average as it started
(a figure taken on a busy machine is then visible as such), its wall-clock seconds
(``wall_seconds``) and the CPU seconds of its process and of every process it waited
for (``cpu_seconds``: the work it did, whatever share of the cores it was given).

``--quick`` is the CI smoke mode: it checks that the suite runs, not the speed;
``--jobs 2`` runs two entries at a time there (most of a smoke entry is
single-threaded start-up: imports, tracing, exporting), and the entries share
their exports (each model is exported once per smoke run). Timed runs keep the
default of one at a time, each entry exporting its own models.

``--update`` re-measures only the ``--only`` entries and keeps the others from the
existing ``--output`` report (``benchmarks/results.json``, committed beside
``RESULTS.md``, which is regenerated from it), each with its own date.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, NamedTuple

from benchmarks._jobs import EXPORT_CACHE_ENV
from tfaural.cpu import cpu_flags, cpu_model, onednn_state

HERE = os.path.dirname(os.path.abspath(__file__))

#: (name, script, extra args (the full run; --quick is added for the smoke run), timeout in seconds for the full run)
BENCHMARKS: list[tuple[str, str, list[str], int]] = [
    ("ceilings", "ceilings.py", [], 600),
    ("samplecnn_inference", "samplecnn_inference.py", [], 900),
    ("data_pipeline", "data_pipeline.py", [], 1200),
    ("deconvolution", "deconvolution.py", [], 900),
    ("deconvnet_mtt_vgg", "deconvnet_mtt_vgg.py", ["--profile"], 1800),
    ("deconvnet_musicnn", "deconvnet_musicnn.py", [], 1800),
    ("serving", "serving.py", [], 1200),
    ("export_time", "export_time.py", [], 3600),
    ("beam_tag", "beam_tag.py", [], 1800),
    ("correlation", "correlation.py", [], 1800),
    ("correlation_job", "correlation_job.py", [], 1800),
    ("memory", "memory.py", [], 2400),
    ("memory_make_tfrecords", "memory.py", ["--make-tfrecords"], 5400),
    ("memory_auralise", "memory.py", ["--auralise"], 5400),
    ("scaling", "scaling.py", [], 1500),
    ("peer_musicnn", "peer_musicnn.py", [], 5400),
    ("startup", "startup.py", [], 1800),
    ("tag_curve", "tag_curve.py", [], 3600),
    ("bf16", "bf16.py", [], 900),
    ("onednn", "onednn.py", [], 1800),
]


#: Seconds each entry took in a smoke run (``--quick --jobs 2``, alone on a 2-core AMD EPYC, 2026-12-02). With
#: ``--jobs`` above 1 the longest start first, so that the run does not end on one long entry while the other
#: slots idle (alone on the machine the smoke run took 374 s in the suite's order, 364 s ordered so). tag_curve's
#: is scaled by its smoke run's drop when it left the Dask runner to scaling's (39 -> 13 s, 2026-12-05); export_time's
#: (added 2026-12-05) is its 42 s alone on a 2-core Intel Xeon, correlation_job's (added 2026-12-06) its 20 s there.
#: On 2026-12-06 eight smoke runs were made smaller (scaling, beam_tag, memory, memory_auralise, deconvolution,
#: deconvnet_mtt_vgg, onednn, correlation_job): theirs are scaled by the drop in their CPU seconds, alone.
QUICK_SECONDS = {"scaling": 52, "memory_auralise": 41, "tag_curve": 21, "peer_musicnn": 62,
                 "memory_make_tfrecords": 23, "deconvnet_mtt_vgg": 32, "beam_tag": 33, "memory": 27,
                 "deconvolution": 18, "serving": 26, "startup": 24, "data_pipeline": 23, "samplecnn_inference": 23,
                 "deconvnet_musicnn": 21, "onednn": 31, "correlation": 20, "ceilings": 16, "bf16": 15,
                 "export_time": 42, "correlation_job": 12}

#: Seconds each entry may take in the smoke run (``--quick``): a few minutes alone, with room for a machine
#: three times slower (the memory entries export and call small models of three families).
QUICK_TIMEOUT = 1500


def _last_json(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    found = None
    for index, char in enumerate(text):
        if char == "{" and (index == 0 or text[index - 1] == "\n"):
            try:
                value, _ = decoder.raw_decode(text[index:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found = value
    return found


def cpu_vector_flags() -> str:
    """The CPU's vector extensions that change the figures (AVX2, FMA, AVX-512, AVX512_BF16, AMX), in words."""
    flags = cpu_flags()
    if flags is None:
        return "unknown"
    have = [name for name, flag in (("AVX2", "avx2"), ("FMA", "fma"), ("AVX-512", "avx512f")) if flag in flags]
    bf16 = sorted(f.upper() for f in flags if f == "avx512_bf16" or f.startswith("amx"))
    missing = [name for name, flag in (("AVX-512", "avx512f"),) if flag not in flags]
    lacking = [f"no {name}" for name in missing] + ([] if bf16 else ["no AVX512_BF16/AMX"])
    return "; ".join(part for part in (", ".join(have + bf16), ", ".join(lacking)) if part)


def machine() -> dict[str, Any]:
    """CPU model, cores, TensorFlow build and thread settings."""
    cpu = cpu_model()
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    return {
        "cpu": cpu,
        "cpu_flags": cpu_vector_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tensorflow_build": {k: build.get(k) for k in ("is_cuda_build", "cuda_version", "cudnn_version")},
        "onednn": onednn_state(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_one(name: str, script: str, args: list[str], timeout: int) -> dict[str, Any]:
    """Runs one benchmark script and returns its JSON (or an error record), stamped with when it ran and
    the 1-minute load average as it started."""
    stamp = {"measured_at": _now(), "load_average_at_start": round(os.getloadavg()[0], 2)}
    result = _run_script(script, args, timeout)
    return {**result, **stamp}


def _run_script(script: str, args: list[str], timeout: int) -> dict[str, Any]:
    start = time.time()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE),
                                                                                    os.environ.get("PYTHONPATH", "")])}
    done = _run_counting_cpu([sys.executable, os.path.join(HERE, script), *args], timeout=timeout, env=env)
    spent = {"wall_seconds": round(time.time() - start, 1), "cpu_seconds": round(done.cpu_seconds, 1)}
    if done.timed_out:
        return {"error": f"timed out after {timeout} s", **spent}
    result = _last_json(done.stdout)
    if done.returncode != 0 or result is None:
        tail = (done.stderr or done.stdout)[-1500:]
        return {"error": f"exit code {done.returncode}", "log_tail": tail, **spent}
    return {**result, **spent}


class _Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float
    timed_out: bool


def _run_counting_cpu(command: list[str], *, timeout: float, env: dict[str, str]) -> _Finished:
    """Runs ``command`` to its end (killed after ``timeout`` seconds) and returns its exit status, its output
    and its CPU seconds: user + system of the process and of the processes it waited for (``os.wait4``'s
    usage, which is this child's alone, also while other entries run beside it)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    outputs: dict[str, bytes] = {}

    def read(name: str, stream: Any) -> None:
        with stream:
            outputs[name] = stream.read()

    readers = [threading.Thread(target=read, args=(name, stream), daemon=True)
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    deadline, timed_out = time.monotonic() + timeout, False
    try:
        while True:  # polled, not blocking: the kill below can only reach this child, which is not reaped yet
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if not timed_out and time.monotonic() > deadline:
                process.kill()
                timed_out = True
            time.sleep(0.05)
    except BaseException:  # interrupted: the child does not outlive the suite
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen does not wait again
    for reader in readers:
        reader.join(timeout=30)  # a process it left behind may hold the pipes: its output is not waited for
    text = {name: outputs.get(name, b"").decode("utf-8", "replace") for name in ("stdout", "stderr")}
    return _Finished(process.returncode, text["stdout"], text["stderr"], usage.ru_utime + usage.ru_stime, timed_out)


def _get(data: dict[str, Any], *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue targets, each with its measured figure and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(what: str, figure: Any, target: str, met: Any) -> None:
        rows.append({"target": what, "figure": figure, "goal": target,
                     "met": None if figure is None or met is None else bool(met)})

    conv = _get(results, "ceilings", "conv1d_gflops")
    best_batch = None
    for batch in ("10", "32"):
        gflops = _get(results, "samplecnn_inference", "batches", batch, "gflops")
        if gflops is not None:
            best_batch = max(best_batch or 0.0, gflops)
    fraction = None if conv is None or best_batch is None else round(best_batch / conv, 2)
    add("SampleCNN 3^9 inference, fraction of the Conv1D ceiling (batch >= 10)", fraction, ">= 0.6",
        fraction is not None and fraction >= 0.6)
    tag = results.get("beam_tag", {})
    e2e = _get(tag, "ratio_end_to_end_vs_model_only") or _get(tag, "ratios", "end_to_end_vs_model_only")
    naive = _get(tag, "ratio_end_to_end_vs_naive") or _get(tag, "ratios", "end_to_end_vs_naive")
    add("beam_jobs.tag end to end / model-only", e2e, ">= 0.6", e2e is not None and e2e >= 0.6)
    add("beam_jobs.tag end to end / naive per-file loop", naive, ">= 3", naive is not None and naive >= 3)
    extract = _get(tag, "ratios", "extract_features_end_to_end_vs_model_only")
    add("beam_jobs.extract_features end to end / model-only", extract, ">= 0.6", extract is not None and extract >= 0.6)
    segments = _get(tag, "ratios", "extract_features_per_segment_end_to_end_vs_model_only")
    if segments is not None:  # reports before 2026-12-06 did not run --per-segment
        add("... with --per-segment (end to end / its model-only work)", round(segments, 3), "report", None)
    for key, what in (("end_to_end_in_process_vs_model_only", "beam_jobs.tag"),
                      ("extract_features_end_to_end_in_process_vs_model_only", "beam_jobs.extract_features")):
        value = _get(tag, "ratios", key)
        if value is not None:  # reports before 2026-12-02 ran the job in process only
            add(f"... {what} run in process ({what.split('.')[-1]}.run([...]), notebook-style) / model-only",
                round(value, 3), "report", None)
    deconv = results.get("deconvolution", {})
    add("Deconvolution + auralisation of 320 features of a 4-s clip (s)", deconv.get("batched_seconds_median"),
        "<= 2 s", deconv.get("meets_time_target"))
    add("... speed-up over the per-feature loop (reference code's way)", deconv.get("speedup_vs_eager_loop"),
        ">= 20x", deconv.get("meets_speedup_target"))
    walks = deconv.get("general_vs_explicit_walk") or {}
    for case, figures in walks.items():
        add(f"General deconvnet vs the explicit walk it replaced, {case} (explicit / general time)",
            figures.get("explicit_over_general"), "report (>= ~1: no slower)", None)
    mtt = results.get("deconvnet_mtt_vgg", {})
    add(f"MTT_vgg: {mtt.get('features', 640)} features of a 3-s excerpt deconvolved + auralised (s)",
        mtt.get("batched_seconds_median"), "report", None)
    add("... GFLOP/s as a fraction of the measured Conv2D ceiling", mtt.get("fraction_of_conv2d_ceiling"), ">= 0.5",
        mtt.get("meets_fraction_target"))
    add("... speed-up over the per-feature loop (reference code's way)", mtt.get("speedup_vs_eager_loop"), ">= 20x",
        mtt.get("meets_speedup_target"))
    musicnn = results.get("deconvnet_musicnn", {})
    if musicnn:
        layers = musicnn.get("layers") or {}
        features = max((layer.get("features", 0) for layer in layers.values()), default=0)
        add(f"musicnn architecture: up to {features} features of each of {len(layers)} layers deconvolved (s)",
            musicnn.get("products_seconds"), "report", None)
        add("... speed-up of one-channel adjoints as products over oneDNN convolutions (side by side)",
            musicnn.get("speedup"), "report", None)
    data = results.get("data_pipeline", {})
    add("tf.data segments/s per core / training step rate", data.get("feed_ratio"), ">= 20", data.get("meets_target"))
    serving = results.get("serving", {})
    worst = None
    for model in (_get(serving, "models") or {}).values():
        for batch in (model.get("batches") or {}).values():
            worst = max(worst or 0.0, batch.get("ratio", 0.0))
    add("SavedModel serving_default / Keras (worst of batch 1, 8)", worst, "<= 1.10", serving.get("target_met"))
    for case, figures in (_get(results, "export_time", "cases") or {}).items():
        add(f"Verified export, {case}: processes started after the write / ahead (time ratio; ahead "
            f"{figures.get('ahead_seconds')} s, unverified {figures.get('write_seconds')} s)",
            figures.get("after_vs_ahead"), "report", None)
    memory = results.get("memory", {})
    for minutes in ("1", "10", "60"):
        peak = _get(memory, "runners", "default", "peak_rss_mib_by_minutes", minutes)
        if peak is not None:
            add(f"extract_features peak RSS, {minutes}-min file (MiB, whole process tree)", peak,
                "< 2048 at 60 min" if minutes == "60" else "report", peak < 2048 if minutes == "60" else None)
    tfrecords = results.get("memory_make_tfrecords", {})
    for mode, figures in (tfrecords.get("modes") or {}).items():
        lengths = sorted(figures.get("peak_mib_by_minutes") or {}, key=float)
        if len(lengths) >= 2:
            add(f"make_tfrecords peak RSS {lengths[-1]} / {lengths[0]} min, {mode} (whole process tree)",
                figures.get("peak_ratio"), "<= 1.10", figures.get("flat_within_10pct"))
    for family, figures in (_get(results, "memory_auralise", "families") or {}).items():
        add(f"Largest allowed auralise call, {family}: peak RSS (MiB, the calling process)",
            figures.get("worst_peak_rss_mib"), "<= 2048", figures.get("meets_2gib"))
    scaling = results.get("scaling", {})
    for runner, label in (("direct", "DirectRunner multi-processing"), ("dask", "local Dask cluster")):
        for key, what in (("speedup_2_vs_1", "end to end"), ("speedup_2_vs_1_marginal", "after start-up")):
            value = _get(scaling, key, runner)
            if value is not None:
                add(f"beam_jobs.tag 2 vs 1 workers, {label}, {what}", round(value, 2), "report", None)
    ceilings = results.get("ceilings", {})
    for fmt, rate in (_get(ceilings, "decode_x_realtime_per_core") or {}).items():
        add(f"Ceiling: {fmt.upper()} decode (x real time per core)", rate, "report", None)
    if ceilings.get("resample_x_realtime_per_core") is not None:
        add("Ceiling: soxr HQ 44.1 -> 22.05 kHz (x real time per core)", ceilings["resample_x_realtime_per_core"],
            "report", None)
    peer = _get(results, "peer_musicnn", "results") or {}
    for key, label in (("MTT_vgg", "MTT_vgg, default hop"), ("MTT_vgg_hop187", "MTT_vgg, non-overlapping patches"),
                       ("MTT_musicnn", "MTT_musicnn")):
        entry = peer.get(key)
        if not entry:
            continue
        vs_peer = _get(entry, "ratios", "tfaural_vs_musicnn")
        add(f"beam_jobs.tag / musicnn's own tagger, end to end, {label}", vs_peer, ">= 3",
            vs_peer is not None and vs_peer >= 3)
        vs_model = _get(entry, "ratios", "end_to_end_vs_model_only")
        add(f"beam_jobs.tag end to end / model-only, {label}", vs_model, ">= 0.8",
            vs_model is not None and vs_model >= 0.8)
        after = _get(entry, "ratios_after_startup", "end_to_end_vs_model_only")
        if after is not None:
            add(f"... after start-up, {label}", after, "report", None)
        overlap = _get(entry, "top5_agreement", "finite_front_end", "mean_overlap_of_5")
        add(f"Top-5 tags shared with musicnn (of 5; finite front end), {label}", overlap, "report", None)
    startup = results.get("startup", {})
    for name, seconds in (_get(startup, "one_track_seconds") or {}).items():
        add(f"Start-up: one-track beam_jobs.tag, command to exit (s), {name}", seconds, "<= 6 s", seconds <= 6)
        whole = _get(startup, "one_track_whole_export_seconds", name)
        if whole is not None:
            add(f"... the same loading the whole export (s), {name}", whole, "report", None)
    curve = results.get("tag_curve", {})
    for runner, label in (("direct", "DirectRunner"), ("dask", "local Dask cluster")):
        fixed = _get(curve, "fixed_seconds", runner)
        rate = _get(curve, "marginal_tracks_per_second", runner)
        if fixed is not None:
            add(f"beam_jobs.tag throughput curve, {label}: fixed cost (s)", fixed, "report", None)
        if rate is not None:
            add(f"beam_jobs.tag throughput curve, {label}: marginal tracks/s", rate, "report", None)
    bf16 = results.get("bf16", {})
    flag = f"CPU AVX512_BF16: {bf16.get('cpu_has_avx512_bf16')}"
    for block, what in ((bf16, f"bfloat16 / float32 speed-up, {{}} ({flag})"),
                        (bf16.get("export_graph_rewrite", {}),
                         "--precision bfloat16 (oneDNN rewrite of the float32 export) / float32, {}")):
        for name, speedup in (_get(block, "speedup") or {}).items():
            change = _get(block, "max_abs_score_change", name)
            small = change is not None and change <= 1e-3
            add(what.format(name), speedup, ">= 1.2 (with max |dscore| <= 1e-3)", speedup >= 1.2 and small)
            add(f"... largest score change, {name}", change, "<= 1e-3", small)
    choices = bf16.get("layer_choices", {})
    for name, speedup in (_get(choices, "speedup") or {}).items():
        add(f"bfloat16 in MTT_vgg's {name} only (the rest float32; Keras policy) / float32, speed-up", speedup,
            "report", None)
        add(f"... largest score change, MTT_vgg {name} only", _get(choices, "max_abs_score_change", name), "report",
            None)
    onednn = results.get("onednn", {})
    if onednn:
        chosen = "on" if onednn.get("tfaural_command_lines_turn_it_on_here") else "TensorFlow's default"
        for name, figures in (onednn.get("workloads") or {}).items():
            add(f"oneDNN on / off ({onednn.get('tensorflow_default')} by TensorFlow's default here; tfaural's "
                f"command lines: {chosen}), speed-up, {name}", figures.get("speedup"), "report", None)
    corr = results.get("correlation", {})
    corr_seconds = corr.get("full_grid_seconds") or corr.get("full_grid_seconds_estimate")
    add("Correlation analysis, full 224-signal grid (s)", corr_seconds, "<= 600 s", corr.get("meets_target"))
    job = results.get("correlation_job", {})
    if job:
        add(f"beam_jobs.correlation, {job.get('grid', {}).get('n_signals')}-signal grid, Choi CNN: wall clock (s)",
            job.get("job_seconds"), "report", None)
        add(f"... peak RSS / the {job.get('maps_gib')} GiB of maps it keeps on disk (< 1: its memory does not hold "
            "them)", job.get("peak_rss_over_maps"), "report", None)
    return rows


def markdown_path(output: str) -> str:
    """The Markdown report that goes with the JSON report ``output``: ``results<X>.json`` -> ``RESULTS<X>.md``
    in the same folder (so ``benchmarks/results.json`` -> ``benchmarks/RESULTS.md``); any other name -> the
    same name with ``.md``. A run into another JSON file never overwrites the committed ``RESULTS.md``."""
    folder, name = os.path.split(output)
    match = re.fullmatch(r"results(.*)\.json", name)
    return os.path.join(folder, f"RESULTS{match.group(1)}.md" if match else os.path.splitext(name)[0] + ".md")


def write_markdown(report: dict[str, Any], path: str, *, json_path: str = "results.json") -> None:
    """The report as Markdown: the machine, the notes, the targets that have a figure, every entry's JSON.

    A target without a figure (its entry was not run, e.g. ``--only`` into a new file, or it failed) is
    counted under the table instead of shown as an empty row; the failed entries are named there.
    """
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python -m benchmarks{' --quick' if report['quick'] else ''}` on {report['created']}"
        + (f" (updated then: {', '.join(report['updated'])}; the other entries kept from earlier runs, "
           "each dated below)." if report.get("updated") else "."),
        "Each figure is a median of several runs after a warm-up; comparisons are measured side by side",
        "in the same run (absolute times drift on shared machines, ratios much less).",
        "",
        "## Machine",
        "",
    ]
    for key, value in report["machine"].items():
        lines.append(f"- **{key}**: {value}")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    missing = 0
    for row in report["targets"]:
        figure = row["figure"]
        if figure is None:
            missing += 1
            continue
        met = {True: "yes", False: "**no**", None: "n/a" if row["goal"] != "report" else "—"}[row["met"]]
        shown = f"{figure:.3g}" if isinstance(figure, float) and abs(figure) < 1000 else figure
        lines.append(f"| {row['target']} | {shown} | {row['goal']} | {met} |")
    if missing:
        failed = [name for name, result in report["results"].items() if "error" in result]
        lines += ["", f"{missing} other target(s) have no figure in this report: their entries were not run"
                      + (f" or failed ({', '.join(failed)})" if failed else "") + "."]
    lines += ["", "## Raw results", ""]
    for name, result in report["results"].items():
        when = result.get("measured_at")
        load = result.get("load_average_at_start")
        stamp = f"measured {when}" + (f", load average {load} as it started" if load is not None else "")
        text = json.dumps(result, indent=2)
        if len(text) > 6000:
            text = text[:6000] + f"\n... (cut; the whole entry is in {os.path.basename(json_path)})"
        lines += [f"### {name}", "", stamp if when else "(date not recorded)", "", "```json", text, "```", ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: small inputs, checks the suite runs")
    parser.add_argument("--output", default=None,
                        help="JSON report path (default benchmarks/results.json, the committed record; with "
                             "--quick benchmarks/results_quick.json, which git ignores)")
    parser.add_argument("--markdown", default=None,
                        help="Markdown table path (default: beside --output, results<X>.json -> RESULTS<X>.md; "
                             "benchmarks/RESULTS.md for the default --output)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these benchmarks (names)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="entries run at once (default 1; 2 suits the --quick smoke run, not timed runs)")
    parser.add_argument("--update", action="store_true",
                        help="keep the entries not re-run (and the notes) from the existing --output report")
    parser.add_argument("--add", action="append", default=[], metavar="NAME=FILE",
                        help="with --update: record the JSON a benchmark script printed when run on its own "
                        "(e.g. python benchmarks/memory.py --auralise > FILE) as entry NAME (repeatable)")
    parser.add_argument("--note", action="append", default=[],
                        help="a note for RESULTS.md on how this run was taken (repeatable)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs} is invalid: expected at least 1")
    # A smoke run never overwrites the committed record of timed runs unless told to.
    args.output = args.output or os.path.join(HERE, "results_quick.json" if args.quick else "results.json")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    selected = [(name, script, extra, timeout) for name, script, extra, timeout in BENCHMARKS
                if args.only is None or name in args.only]
    unknown = sorted(set(args.only or ()) - {name for name, *_ in BENCHMARKS})
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {[name for name, *_ in BENCHMARKS]}")
    previous: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if args.update and os.path.exists(args.output):
        with open(args.output, encoding="utf-8") as handle:
            old = json.load(handle)
        if bool(old.get("quick")) != args.quick:
            parser.error(f"--update: {args.output} holds a {'quick' if old.get('quick') else 'full'} run")
        previous = old.get("results", {})
        notes = list(old.get("notes", []))

    added: dict[str, dict[str, Any]] = {}
    for item in args.add:
        name, _, path = item.partition("=")
        if not args.update or name not in {n for n, *_ in BENCHMARKS} or not os.path.isfile(path):
            parser.error(f"--add {item!r}: expected NAME=FILE with --update, a known NAME and an existing FILE")
        with open(path, encoding="utf-8") as handle:
            added[name] = _last_json(handle.read()) or {"error": f"{path} holds no JSON object"}
        modified = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
        added[name].setdefault("measured_at", modified.isoformat(timespec="seconds"))
        added[name]["run_on_its_own"] = f"{path} (the script's printed JSON, added with --add)"

    def one(entry: tuple[str, str, list[str], int]) -> tuple[str, dict[str, Any]]:
        name, script, extra, timeout = entry
        if not os.path.exists(os.path.join(HERE, script)):
            return name, {"error": f"{script} is missing"}
        print(f"[benchmarks] {name} ...", flush=True)
        result = run_one(name, script, ["--quick", *extra] if args.quick else extra,
                         timeout if not args.quick else QUICK_TIMEOUT)
        spent = f"{result.get('wall_seconds')} s (CPU {result.get('cpu_seconds')} s)"
        print(f"[benchmarks] {name}: {result['error'] + ', ' + spent if 'error' in result else spent}", flush=True)
        return name, result

    # A smoke run's entries share their exports (benchmarks/_jobs.py, shared_export): each model once.
    shared = tempfile.mkdtemp(prefix="tfaural-bench-exports-") if args.quick else None
    if shared:
        os.environ[EXPORT_CACHE_ENV] = shared
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            todo = [entry for entry in selected if entry[0] not in added]
            if args.jobs > 1:  # the longest first (a stable sort: the suite's order otherwise)
                todo.sort(key=lambda entry: -QUICK_SECONDS.get(entry[0], 0))
            measured = dict(pool.map(one, todo))
    finally:
        if shared:
            os.environ.pop(EXPORT_CACHE_ENV, None)
            shutil.rmtree(shared, ignore_errors=True)
    measured.update(added)
    # The suite's order, entries not re-run kept as they were.
    results: dict[str, dict[str, Any]] = {
        name: measured[name] if name in measured else previous[name] for name, *_ in BENCHMARKS
        if name in measured or name in previous
    }
    report = {
        "created": _now(),
        "quick": args.quick,
        "machine": machine(),
        "updated": sorted(measured) if args.update else None,
        "notes": notes + list(args.note),
        "results": results,
    }
    report["targets"] = targets(results)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    write_markdown(report, args.markdown or markdown_path(args.output), json_path=args.output)
    failed = [name for name, result in measured.items() if "error" in result]
    print(json.dumps({"targets": report["targets"], "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
