"""The skeleton every Beam job shares: a job declares what it is, :meth:`Job.run` launches it.

A job (one module per job, ``python -m beam_jobs.<job>``) subclasses :class:`Job` and
declares its name, its option classes (:mod:`beam_jobs.options`), how its flags become
frozen settings, what its inputs are, how it prepares its output folder, its pipeline
and what it reports at the end. Everything else is written once, here:

* parsing the command line (``--help`` from the job module's docstring),
* checking the runner and applying the local defaults (every core unless the user chose),
* a scratch folder for the worker processes (:func:`beam_jobs.scratch.run_folder`),
* running the pipeline to the end, turning a model that failed to load into one line,
* the command-line entry point: logging, exit status 2 with a one-line message on a
  usage or setup error (:meth:`Job.main`).

:class:`CatalogueJob` adds what the three jobs that run an exported model over a
catalogue share (``auralise``, ``extract_features``, ``tag``)::

    ListTracks ─ SpreadTracks ─ Decode ─┬─ RunInference(signature) ─ Write ─┐
                                        └─ (failed / reused tracks) ────────┴─ Account ─▶ manifest.jsonl

listing the tracks (:mod:`beam_jobs.tracks`), ``job.json`` and ``--skip-existing``
(:mod:`beam_jobs.accounting`), runner-dependent batching and the model process
(:meth:`beam_jobs.settings.InferenceSettings.for_runner`), and the summary read back
from ``manifest.jsonl``. Failures on the way are :mod:`beam_jobs.failures`.
"""

from __future__ import annotations

import abc
import codecs
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.runners.runner import PipelineResult

from beam_jobs import io as beam_io
from beam_jobs import model_process as model_processes
from beam_jobs.accounting import prepare_output, summarize, write_job_file
from beam_jobs.options import apply_runner_defaults, parse_job_args
from beam_jobs.progress import TrackProgress
from beam_jobs.scratch import remove_own_folders, run_folder
from beam_jobs.tracks import INPUTS_FOLDER, TrackInput, list_tracks
from tfaural.cli import is_verbose
from tfaural.errors import ModelError, ModelLoadError, TfauralError
from tfaural.formats import JOB_FILE, MANIFEST_FILE

__all__ = ["Job", "CatalogueJob", "Timings", "wait"]

logger = logging.getLogger(__name__)

#: The logger through which Beam's local job service (the DirectRunner in multi-processing mode) passes on what
#: its worker processes log.
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"


class WorkerLogMessages(logging.Filter):
    """Shows a Beam worker's log message as the message itself, not as Beam's whole ``LogEntry``.

    The local job service logs each one as ``Worker: severity: WARN timestamp { seconds: ... }
    message: "music/a.wav: ..." instruction_id: ... log_location: ... thread: ...`` on one line;
    with this filter on :data:`WORKER_LOGGER` the line reads ``WARNING worker: music/a.wav: ...``
    (the level was already the entry's). A record it cannot read is left as it was.
    """

    _MESSAGE = re.compile(r'(?:^|\s)message: "((?:[^"\\]|\\.)*)"')

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Worker: %s" and isinstance(record.args, tuple) and len(record.args) == 1:
            found = self._MESSAGE.search(str(record.args[0]))
            if found:
                try:  # protobuf text format: C escapes, non-ASCII as octal UTF-8 bytes
                    text = codecs.escape_decode(found.group(1).encode("utf-8"))[0].decode("utf-8", "replace")
                except ValueError:
                    return True
                record.name, record.msg, record.args = "worker", "%s", (text,)
        return True


def configure_logging(argv: Sequence[str]) -> None:
    """The jobs' command-line logging: ``LEVEL logger: message`` at INFO; Beam's own loggers at WARNING unless
    ``--verbose``; its workers' messages as themselves (:class:`WorkerLogMessages`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not is_verbose(argv):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # worker chatter; our own loggers stay at INFO
    worker = logging.getLogger(WORKER_LOGGER)
    if not any(isinstance(f, WorkerLogMessages) for f in worker.filters):
        worker.addFilter(WorkerLogMessages())


@dataclasses.dataclass
class Timings:
    """Wall-clock seconds of a run's phases, measured by :meth:`Job.run`.

    Attributes:
        started: ``time.perf_counter()`` when the run started.
        pipeline: Seconds spent running the pipeline.
    """

    started: float
    pipeline: float = 0.0

    @property
    def total(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started


def wait(result: Any) -> None:
    """Waits for a pipeline result and releases the Dask client the Dask runner leaves open."""
    result.wait_until_finish()
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


_MODEL_ERROR_LINE = re.compile(r"^(?:tfaural\.errors\.)?ModelError: (.+)$", re.MULTILINE)


def _model_load_failure(err: BaseException) -> str | None:
    """The message of a :class:`ModelError` that stopped a pipeline (Beam re-raises it as text), if it was one."""
    if isinstance(err, ModelError):
        return str(err)
    found = _MODEL_ERROR_LINE.findall(str(err))
    return found[-1] if found else None


class _Interruptions:
    """Ctrl-C, SIGTERM and SIGHUP during a run, as :class:`KeyboardInterrupt`: the run unwinds (closing the model
    process, deleting its scratch folders). What Beam's threads print as they die with it is noise then: from the
    signal on, logging is off and ``sys.stderr`` discards, until :meth:`restore_output` (at the latest on exit).
    Signals ignored when the run starts (``nohup``, a shell's ``&``) stay ignored; outside the main thread
    nothing changes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        #: The first signal received (``None``: none).
        self.received: int | None = None
        self._stderr: Any = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interruptions:
        with contextlib.suppress(ValueError):  # not the main thread
            for signum in self.SIGNALS:
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
        if self._stderr is None:
            self._stderr = sys.stderr
            logging.disable(logging.CRITICAL)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (closed by restore_output)
        raise KeyboardInterrupt

    def restore_output(self) -> None:
        """Logging and ``sys.stderr`` as before the signal."""
        if self._stderr is not None:
            sys.stderr.close()
            sys.stderr, self._stderr = self._stderr, None
            logging.disable(logging.NOTSET)

    def __exit__(self, *exc_info: object) -> None:
        self.restore_output()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _not_loaded(error: str, output: str) -> ModelError:
    """The job's error when its model could not be loaded: a setup error, not the tracks'."""
    return ModelError(f"{error.rstrip('.')}; the tracks that needed it are listed as failed in "
                      f"{output}/{MANIFEST_FILE}")


class Job(abc.ABC):
    """A Beam job: its name, options, settings, inputs, output folder and pipeline.

    Subclasses set :attr:`name` and :attr:`option_classes` and implement the abstract
    methods; the module of the subclass is the job's ``python -m`` module, whose
    docstring is its ``--help``.

    Attributes:
        name: The job's name, in messages and the scratch folder's name.
        option_classes: The ``PipelineOptions`` subclasses whose flags the job takes.
        save_main_session: Default of :meth:`run`'s ``save_main_session``.
        hidden_flags: Flags of its option classes the job does not take (their ``dest``): not in its ``--help``.
        local_mode: The DirectRunner's running mode when the user chooses none
            (:func:`beam_jobs.options.apply_runner_defaults`).
    """

    name: ClassVar[str]
    option_classes: ClassVar[tuple[type[PipelineOptions], ...]]
    save_main_session: ClassVar[bool] = False
    hidden_flags: ClassVar[tuple[str, ...]] = ()
    local_mode: ClassVar[str] = "multi_processing"
    #: Set by :meth:`finish` when the run had inputs and every one failed: why, for :meth:`main`'s exit status 1.
    nothing_done: str | None = None
    #: What to do after an interruption (Ctrl-C), for :meth:`main`'s one line.
    resume_hint: ClassVar[str] = "nothing was finished; rerun the same command with --overwrite to start again"

    @property
    def module(self) -> str:
        """The job's module, e.g. ``beam_jobs.tag``."""
        return type(self).__module__

    # -- what a job declares --------------------------------------------------------------

    @abc.abstractmethod
    def settings(self, options: PipelineOptions) -> Any:
        """Validates the flags into the job's frozen settings (no side effects).

        Raises:
            TfauralError: On a missing or invalid flag, naming it.
        """

    @abc.abstractmethod
    def inputs(self, settings: Any) -> Any:
        """What the pipeline works through (tracks, a catalogue, signals); its ``len`` bounds the parallelism."""

    def configure(self, options: PipelineOptions, settings: Any, *, n_inputs: int, local_defaults: bool) -> Any:
        """Applies the runner defaults (every local core unless the user chose); returns the adjusted settings.

        Args:
            options: The parsed options (modified in place).
            settings: The job's settings.
            n_inputs: Number of inputs.
            local_defaults: Apply :func:`beam_jobs.options.apply_runner_defaults` (not for test pipelines).
        """
        if local_defaults:
            for note in apply_runner_defaults(options, num_items=n_inputs, local_mode=self.local_mode):
                logger.info("%s: %s", self.name, note)
        return settings

    @abc.abstractmethod
    def prepare(self, settings: Any, inputs: Any) -> None:
        """Prepares the output folder (refuses an earlier run's unless allowed; removes what the run rebuilds)."""

    @abc.abstractmethod
    def build(self, pipeline: beam.Pipeline, inputs: Any, settings: Any) -> None:
        """Adds the job's labelled stages to ``pipeline``."""

    @contextlib.contextmanager
    def serving(self, settings: Any) -> Iterator[Any]:
        """Context around building and running the pipeline (e.g. a model process); yields the settings to use."""
        yield settings

    def scratch_folders(self, settings: Any) -> tuple[str, ...]:
        """Folders the run fills for its own use (e.g. the output folder's ``.inputs/``,
        :class:`beam_jobs.tracks.ListInputs`): emptied once the output folder is prepared (what a killed run
        left) and deleted when the run ends, however it ends. None by default."""
        return ()

    def progress(self, settings: Any, inputs: Any) -> contextlib.AbstractContextManager[Any]:
        """What shows the run's progress while the pipeline runs (:mod:`beam_jobs.progress`); nothing by default."""
        return contextlib.nullcontext()

    def finish(self, settings: Any, result: PipelineResult, timings: Timings) -> None:
        """After a successful run: logs what it did (and completes summaries that need the whole run)."""
        logger.info("%s: done in %.0f s", self.name, timings.total)

    # -- written once -----------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str] | None = None,
        save_main_session: bool | None = None,
        test_pipeline: beam.Pipeline | None = None,
    ) -> PipelineResult:
        """Runs the job and waits for it to finish.

        Args:
            argv: Command-line arguments (job flags and Beam flags); ``None``: ``sys.argv[1:]``.
            save_main_session: Pickle the caller's ``__main__`` for the workers (``None``: the
                job's :attr:`save_main_session`; the DoFns of every job live in importable modules).
            test_pipeline: A pipeline to use instead of creating one (tests): no runner defaults.

        Returns:
            The finished ``PipelineResult``.

        Raises:
            TfauralError: On invalid flags, invalid inputs or model, or an output folder the
                job may not use.
        """
        timings = Timings(started=time.perf_counter())
        self.nothing_done = None
        options = parse_job_args(argv, prog=f"python -m {self.module}",
                                 description=sys.modules[self.module].__doc__ or "",
                                 option_classes=list(self.option_classes), hidden=self.hidden_flags)
        settings = self.settings(options)
        keep_main = self.save_main_session if save_main_session is None else save_main_session
        options.view_as(SetupOptions).save_main_session = keep_main
        inputs = self.inputs(settings)
        settings = self.configure(options, settings, n_inputs=len(inputs), local_defaults=test_pipeline is None)
        self.prepare(settings, inputs)
        scratch = self.scratch_folders(settings)
        for folder in scratch:
            if beam_io.remove_folder(folder):
                logger.info("%s: deleted what an unfinished run left in %s", self.name, folder)
        pipeline: beam.Pipeline | None = None
        try:
            with self.serving(settings) as settings:
                pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
                self.build(pipeline, inputs, settings)
                start = time.perf_counter()
                with self.progress(settings, inputs):
                    result = self._execute(pipeline)
                timings.pipeline = time.perf_counter() - start
        finally:
            for folder in scratch:
                beam_io.remove_folder(folder)
            # Beam deletes the pipeline's temporary folder in run(), which a failed build never reaches.
            if pipeline is not None and test_pipeline is None:
                shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
        self.finish(settings, result, timings)
        return result

    def _execute(self, pipeline: beam.Pipeline) -> PipelineResult:
        with run_folder(self.name):  # what the worker processes leave in their temporary folder is deleted with it
            try:
                result = pipeline.run()
                wait(result)
            except Exception as err:  # a ModelError raised in a worker (correlation's model, which it needs
                failure = _model_load_failure(err)  # for every signal) stops the pipeline; say so in one line
                if failure is None:
                    raise
                raise ModelError(failure) from None
        return result

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The command-line entry point: logging, the run (which logs its summary); exit 2 on a setup error.

        Args:
            argv: Command-line arguments (``None``: ``sys.argv[1:]``).

        Returns:
            The process exit code: 0 when the job ran (failed inputs are listed in its
            outputs and its summary), 1 when it ran but every input failed (its outputs list
            them; a script should not carry on as if there were results), 2 with a one-line
            error for a usage or setup error, 128 + the signal's number with a line saying how to go
            on after Ctrl-C (130), SIGTERM (143) or SIGHUP (129).
        """
        configure_logging(sys.argv[1:] if argv is None else argv)
        with _Interruptions() as interruptions:
            try:
                self.run(argv)
            except (TfauralError, KeyboardInterrupt) as err:
                interruptions.restore_output()
                signum = interruptions.received or (signal.SIGINT if isinstance(err, KeyboardInterrupt) else None)
                if signum is not None:  # the model process and the scratch folders were closed on the way out
                    what = "interrupted" if signum == signal.SIGINT else signal.Signals(signum).name
                    print(f"\n{self.name}: {what}: {self.resume_hint}", file=sys.stderr)
                    return 128 + signum
                print(f"{self.name}: error: {err}", file=sys.stderr)
                return 2
            finally:
                model_processes.close_prestarted()  # started by python -m before the flags were checked
                remove_own_folders()  # what a signal left between making a run folder and setting up its removal
        if self.nothing_done is not None:
            print(f"{self.name}: error: {self.nothing_done}", file=sys.stderr)
            return 1
        return 0


class CatalogueJob(Job):
    """A job that runs an exported model's signature over a catalogue of audio tracks.

    Its settings have a ``common`` field, :class:`beam_jobs.settings.InferenceSettings`,
    a ``job_settings()`` method: what determines the outputs (``--skip-existing``
    compares it with the earlier run's ``job.json``), and a ``part_file(track)`` method: the file,
    relative to the output folder, that a track's worker writes last (what ``--skip-existing``
    reads back, and what :meth:`progress` counts).

    Attributes:
        signature: The export signature the job calls.
        reserved: Names in the output folder besides ``manifest.jsonl`` and ``job.json``
            that no track's outputs may take.
        derived: Globs (relative to the output folder) of files every run rebuilds from all tracks.
        model_process: The job can run its model in a model process that the launcher starts
            (:mod:`beam_jobs.model_process`; local DirectRunner).
    """

    signature: ClassVar[str]
    reserved: ClassVar[tuple[str, ...]] = ()
    derived: ClassVar[tuple[str, ...]] = ()
    model_process: ClassVar[bool] = True
    resume_hint = ("the tracks written so far are kept; rerun the same command with --skip-existing to reuse them "
                   "and do the rest")

    def inputs(self, settings: Any) -> list[TrackInput]:
        """The tracks, from ``--input`` or ``--manifest`` (see :func:`beam_jobs.tracks.list_tracks`)."""
        common = settings.common
        return list_tracks(input_glob=common.input_glob, manifest=common.manifest,
                           reserved=(*self.reserved, MANIFEST_FILE, JOB_FILE), output=common.output)

    def configure(self, options: PipelineOptions, settings: Any, *, n_inputs: int, local_defaults: bool) -> Any:
        """Runner defaults, then batching, threading and where the model runs (:meth:`InferenceSettings.for_runner`)."""
        settings = super().configure(options, settings, n_inputs=n_inputs, local_defaults=local_defaults)
        return dataclasses.replace(settings,
                                   common=settings.common.for_runner(options, model_process=self.model_process))

    def job_extra(self, settings: Any) -> dict[str, Any]:
        """What ``job.json`` records besides the settings (e.g. the chunking plan, the shard names)."""
        return {}

    def scratch_folders(self, settings: Any) -> tuple[str, ...]:
        """``OUTPUT/.inputs/`` (:class:`beam_jobs.tracks.ListInputs`)."""
        return (settings.common.path(INPUTS_FOLDER),)

    def progress(self, settings: Any, inputs: Sequence[TrackInput]) -> contextlib.AbstractContextManager[Any]:
        """The count of tracks written, from the settings' ``part_file`` of each, in a local output folder
        (:class:`beam_jobs.progress.TrackProgress`)."""
        common = settings.common
        if not inputs or not beam_io.is_local(common.output):
            return contextlib.nullcontext()
        return TrackProgress(self.name, [common.path(settings.part_file(track)) for track in inputs],
                             keep_existing=common.skip_existing)

    def describe(self, settings: Any, tracks: Sequence[TrackInput]) -> str:
        """The log line that says what the run is about to do."""
        return f"{self.name}: {len(tracks)} track(s) -> {settings.common.output} with {settings.common.model}"

    def prepare(self, settings: Any, inputs: Any) -> None:
        """Checks the output folder against an earlier run, then writes ``job.json``.

        An earlier run's results of tracks that are not this run's (a file gone from the catalogue, or
        another glob, which names the tracks anew) are deleted with ``--overwrite``, which replaces that
        run, and kept with ``--skip-existing``, with a warning that counts them (processing a catalogue
        in parts into one folder keeps each part's results; the tables list this run's tracks).
        """
        job_settings = settings.job_settings()
        common = settings.common
        prepare_output(common, job=self.name, job_settings=job_settings, derived=self.derived)
        if common.overwrite or common.skip_existing:
            current = {track.name for track in inputs}
            others = {name: files for name, files in self.track_results(settings).items() if name not in current}
            if others and common.overwrite:
                for name, files in others.items():
                    self.remove_track_results(settings, name, files)
                logger.info("%s: deleted the results of %d track(s) of the earlier run that are not in this "
                            "run's input", self.name, len(others))
            elif others:
                shown = ", ".join(sorted(files[0] for files in others.values())[:3])
                logger.warning("%s: %s holds the results of %d track(s) that are not in this run's input (%s%s); "
                               "they are kept, but %s lists this run's tracks only (--overwrite deletes them)",
                               self.name, common.output, len(others), shown, ", ..." if len(others) > 3 else "",
                               MANIFEST_FILE)
        write_job_file(common, job=self.name, job_settings=job_settings, extra=self.job_extra(settings))
        logger.info("%s", self.describe(settings, inputs))

    def track_results(self, settings: Any) -> dict[str, list[str]]:
        """The per-track results in the output folder, by their track's output name: each one's part file.

        Returns:
            ``{name: [the part file's path]}`` for every part file present (complete or not).
        """
        marker = "\0"  # in no path
        template = settings.common.path(settings.part_file(TrackInput(path="", track_id="", name=marker)))
        head, _, tail = template.partition(marker)
        found = beam_io.list_files(beam_io.escape(head) + "*" + beam_io.escape(tail))
        return {path[len(head):len(path) - len(tail)]: [path] for path in found
                if path.startswith(head) and path.endswith(tail) and len(path) > len(head) + len(tail)}

    def remove_track_results(self, settings: Any, name: str, files: list[str]) -> None:
        """Deletes the results of the track named ``name``: ``files``, what :meth:`track_results` lists for it."""
        beam_io.delete(files)

    @contextlib.contextmanager
    def serving(self, settings: Any) -> Iterator[Any]:
        """Starts the model process (or adopts the one ``python -m`` started) when the settings ask for one.

        Raises:
            ModelError: If the model process could not load the model (after the run, whose manifest
                lists every track, those that needed the model as failed).
        """
        common = settings.common
        if not common.model_process:
            yield settings
            return
        threads, precision = common.intra_op_threads, common.precision
        process = (model_processes.take_prestarted(common.model, self.signature, threads, precision)
                   or model_processes.ModelProcess(common.model, self.signature, threads=threads, precision=precision))
        try:
            yield dataclasses.replace(settings, common=dataclasses.replace(common, model_server=process.address))
            load_error = process.load_error()
        finally:
            process.close()
        if load_error is not None:  # every track that needed the model failed with it: a setup error, not theirs
            logger.info("%s", summarize(common.output).describe(self.name))
            raise _not_loaded(f"the model {common.model!r} could not be loaded: {load_error}", common.output)

    def finish(self, settings: Any, result: PipelineResult, timings: Timings) -> None:
        """Logs what happened to every track, read back from ``manifest.jsonl``.

        Raises:
            ModelError: If the model could not be loaded in the workers (the manifest lists the tracks
                that needed it as failed with the :class:`~tfaural.errors.ModelLoadError`).
        """
        summary = summarize(settings.common.output)
        logger.info("%s", summary.describe(self.name))
        load_error = summary.first_errors.get(f"inference: {ModelLoadError.__name__}")
        if load_error is not None:
            raise _not_loaded(load_error, settings.common.output)
        if summary.failed and not summary.ok:
            self.nothing_done = (f"every one of the {summary.failed} track(s) failed (listed in "
                                 f"{beam_io.join(settings.common.output, MANIFEST_FILE)}); the first: "
                                 f"{summary.examples[0][0]}: {summary.examples[0][1]}")
