"""Nothing lost: every stage that can fail, and every failure as a :class:`~beam_jobs.tracks.TrackResult`.

Every stage that can fail runs inside ``with_exception_handling`` (:func:`guarded`,
:func:`infer`); expected failures (undecodable, empty, too short, a failed in-graph
check) and unexpected ones (dead letters) become :class:`~beam_jobs.tracks.TrackResult`
s with ``status="failed"`` for every track the failed element held, which
:class:`beam_jobs.accounting.AccountForTracks` lists in ``manifest.jsonl``.

Branches are told apart by element type (:func:`keep`), never only by output tag:
Beam's Dask runner merges tagged outputs into one collection.
"""

from __future__ import annotations

import logging
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from beam_jobs.inference import InferenceFailure
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural.errors import failure_reason
from tfaural.formats import FAILED

__all__ = [
    "failed_result",
    "is_dead_letter",
    "find_tracks",
    "dead_letter_results",
    "keep",
    "guarded",
    "is_prediction",
    "infer",
]

logger = logging.getLogger(__name__)


def failed_result(track: TrackInput, err: BaseException | InferenceFailure, *, stage: str) -> TrackResult:
    """A failed :class:`TrackResult` from an exception or an :class:`InferenceFailure`."""
    if isinstance(err, InferenceFailure):
        return TrackResult(track, FAILED, stage=stage, error_type=err.error, error=err.reason)
    return TrackResult(track, FAILED, stage=stage, error_type=type(err).__name__, error=failure_reason(err))


def is_dead_letter(element: Any) -> bool:
    """True for a dead letter of ``with_exception_handling``: ``(element, (type, repr, traceback))``."""
    if not (isinstance(element, tuple) and len(element) == 2):
        return False
    info = element[1]
    return (isinstance(info, tuple) and len(info) == 3 and isinstance(info[0], type)
            and issubclass(info[0], BaseException))


def find_tracks(element: Any) -> list[TrackInput]:
    """The tracks an element (or a batch of elements) of any stage belongs to, without duplicates."""
    found: dict[str, TrackInput] = {}

    def visit(item: Any, depth: int) -> None:
        if depth > 4:
            return
        if isinstance(item, TrackInput):
            found.setdefault(item.track_id, item)
        elif hasattr(item, "track") and isinstance(item.track, TrackInput):
            found.setdefault(item.track.track_id, item.track)
        elif isinstance(item, (tuple, list)):
            for part in item:
                visit(part, depth + 1)

    visit(element, 0)
    return list(found.values())


def dead_letter_results(dead_letter: tuple[Any, tuple[Any, str, Any]], *, stage: str) -> list[TrackResult]:
    """A dead letter (an exception nobody anticipated) as a failed result for each track it holds."""
    element, (error_type, error_repr, _traceback) = dead_letter
    name = getattr(error_type, "__name__", str(error_type))
    tracks = find_tracks(element)
    if not tracks:
        logger.error("%s: an element without a track failed with %s: %s", stage, name, error_repr)
    for track in tracks:
        logger.error("%s: %s failed with %s: %s", stage, track.path, name, error_repr)
    beam.metrics.Metrics.counter("tfaural_jobs", f"unexpected_errors_{stage}").inc()
    return [TrackResult(track, FAILED, stage=stage, error_type=name, error=f"unexpected error: {error_repr}"[:1000])
            for track in tracks]


def keep(pcoll: beam.PCollection, label: str, kind: type | tuple[type, ...]) -> beam.PCollection:
    """The elements of ``pcoll`` that are instances of ``kind`` (branches are split by type, see module doc)."""
    return pcoll | label >> beam.Filter(lambda element, k=kind: isinstance(element, k))


def guarded(
    pcoll: beam.PCollection, label: str, dofn: beam.DoFn, *, stage: str, partial: bool = False
) -> tuple[beam.PCollection, beam.PCollection]:
    """Applies ``dofn`` with ``with_exception_handling``.

    Args:
        pcoll: The input.
        label: The stage's label.
        dofn: The DoFn.
        stage: The stage named in the failed results.
        partial: Pass on what ``dofn`` yields as it yields it. By default Beam collects
            all outputs of an element first (so that an element that raises emits nothing),
            which holds them all in memory; a DoFn that streams a long track in chunks
            needs ``True`` and must make its consumers discard the outputs of an element
            that failed halfway (see :mod:`beam_jobs.chunking`).

    Returns:
        ``(outputs, failures)``: what ``dofn`` emitted, and one failed
        :class:`TrackResult` per track of every element on which it raised.
    """
    main, dead = pcoll | label >> beam.ParDo(dofn).with_exception_handling(partial=partial)
    outputs = main | f"{label}Outputs" >> beam.Filter(lambda element: not is_dead_letter(element))
    failures = (
        dead
        | f"{label}DeadLetters" >> beam.Filter(is_dead_letter)
        | f"{label}Failures" >> beam.FlatMap(dead_letter_results, stage=stage)
    )
    return outputs, failures


def is_prediction(element: Any) -> bool:
    """True for an output of a keyed RunInference: ``(key, PredictionResult)``."""
    return isinstance(element, tuple) and len(element) == 2 and isinstance(element[1], PredictionResult)


def infer(
    examples: beam.PCollection, label: str, handler: ModelHandler, *, prebatched: bool = False
) -> tuple[beam.PCollection, beam.PCollection]:
    """RunInference with exception handling on ``(key, example)`` elements.

    Args:
        examples: ``(key, example)`` elements; keys hold their tracks (see :func:`find_tracks`).
        label: The stage's label.
        handler: An unkeyed model handler (e.g. ``SignatureModelHandler``).
        prebatched: Skip RunInference's batching and send every example alone (Dask).

    Returns:
        ``(predictions, failures)``: ``(key, PredictionResult)`` elements, and one failed
        :class:`TrackResult` per track of every batch that raised.
    """
    keyed: ModelHandler = KeyedModelHandler(handler)
    if prebatched:
        examples = examples | f"{label}Singletons" >> beam.Map(lambda example: [example])
        keyed = keyed.with_no_batching()
    predictions, errors = examples | label >> RunInference(keyed).with_exception_handling()
    predicted = predictions | f"{label}Predictions" >> beam.Filter(is_prediction)
    failures = (
        errors.failed_inferences
        | f"{label}FailedBatches" >> beam.Filter(is_dead_letter)
        | f"{label}Failures" >> beam.FlatMap(dead_letter_results, stage="inference")
    )
    return predicted, failures

