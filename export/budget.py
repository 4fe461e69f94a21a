"""How much work one signature call may ask for: the per-call budgets of an export.

Input length alone does not bound a request: ``deconvolve``/``auralise`` hold a map
per selected feature and per input sample, and a batch multiplies every input.
So each export states (in ``metadata.json``) and enforces (in-graph, with an
``InvalidArgumentError`` that says what to send instead):

* ``max_request_samples`` — ``batch × samples`` of one ``serving_default``,
  ``serving_wav`` or ``features`` call (for ``serving_wav``, batch × the longest
  decoded file);
* ``max_deconv_samples`` — ``batch × samples`` of one ``deconvolve``/``auralise``
  call (also the longest clip; ``max_deconv_seconds`` of the family's budget);
* ``max_deconv_feature_samples`` — ``features × batch × samples`` of one
  ``deconvolve``/``auralise`` call (what their outputs hold);

and runs the deconvolution's walk in chunks of features whose largest tensor has at
most ``deconv_chunk_elements`` float32 elements (:func:`tfaural.deconv.map_feature_chunks`),
so the largest allowed call stays under a measured peak (``benchmarks/memory.py
--auralise``; figures in ``docs/serving.md``).

A model family states its numbers in :data:`FAMILY_BUDGETS` (seconds at the model's
sample rate; the exporter converts them to samples); a family without an entry
gets :data:`DEFAULT_BUDGET`. The ``python -m export`` flags override them per export.
"""

from __future__ import annotations

import dataclasses

from tfaural.errors import ExportError

__all__ = ["WorkBudget", "DEFAULT_BUDGET", "FAMILY_BUDGETS", "budget_for"]

#: ``tfaural.deconv.DEFAULT_CHUNK_ELEMENTS`` (this module stays TensorFlow-free: metadata readers import it).
_CHUNK_ELEMENTS = 32 * 2**20


@dataclasses.dataclass(frozen=True)
class WorkBudget:
    """Per-call limits beyond the input length (see the module docstring).

    Attributes:
        max_deconv_seconds: ``batch × seconds`` of one ``deconvolve``/``auralise`` call (so also the
            longest clip they take).
        max_request_seconds: ``batch × seconds`` of one ``serving_default``/``serving_wav``/``features``
            call.
        max_deconv_feature_seconds: ``features × batch × seconds`` of one ``deconvolve``/``auralise``
            call (e.g. 1920: 64 features of a 30-s clip, or 480 of a 4-s clip).
        deconv_chunk_elements: Most float32 elements of the walk's largest tensor per chunk of
            features (the deconvolution holds about three such tensors at once).
        max_batch_segments: Most model segments ``serving_default``/``serving_wav``/``features`` run through
            the network at once (an in-graph loop over chunks of them): a chunk's activations are most of
            the largest request's memory.
    """

    max_deconv_seconds: float = 30.0
    max_request_seconds: float = 1200.0
    max_deconv_feature_seconds: float = 1920.0
    deconv_chunk_elements: int = _CHUNK_ELEMENTS
    max_batch_segments: int = 16

    def __post_init__(self) -> None:
        for name in ("max_deconv_seconds", "max_request_seconds", "max_deconv_feature_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ExportError(f"{name}={value!r} is invalid: expected a positive number of seconds")
        for name in ("deconv_chunk_elements", "max_batch_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExportError(f"{name}={value!r} is invalid: expected a positive integer")


#: The budget of a family without its own entry.
DEFAULT_BUDGET = WorkBudget()

#: The SampleCNN family's budget (its reasons are in :data:`FAMILY_BUDGETS`).
_SAMPLECNN = WorkBudget(max_deconv_seconds=15.0, max_deconv_feature_seconds=480.0,
                        deconv_chunk_elements=_CHUNK_ELEMENTS // 2, max_batch_segments=8)

#: Each family's budget (an architecture's own: ``"family/architecture"``); the largest allowed ``auralise``
#: call of each is measured by
#: ``python benchmarks/memory.py --auralise`` (target: at most 2 GiB peak RSS; figures in docs/serving.md).
#:
#: ``max_batch_segments``: the largest ``serving_default`` call (two inputs of 600 s, the 1200-s request budget)
#: in chunks of 64 segments, the one chunk size before 2026-12-07, peaked at 2384 (Choi CNN), 3399
#: (3^9-SampleCNN), 2276 (musicnn vgg) and 3727 MiB (musicnn architecture) on a 2-core AMD EPYC with AVX2
#: (``memory.py --auralise --serving-only``): a chunk's activations, ~27 MiB per SampleCNN segment and ~33 per
#: musicnn segment, were most of it. Each family's chunk is a power of two that keeps that call under 2 GiB
#: (halved once more for musicnn's vgg, whose 32 left 62 MiB; figures in docs/serving.md); a GPU server may pass
#: a larger ``--max-batch-segments``.
FAMILY_BUDGETS: dict[str, WorkBudget] = {
    # 11,025 Hz, 64 maps per layer. With 30-s clips the largest call (64 features, layer 5) peaked at 2172 MiB
    # (the first layer's 64 x 257-bin x frames maps of one feature are the walk's largest tensor, and the
    # loaded export with its first call already holds ~1150 MiB), so the clip is capped at 20 s: 64 features
    # of a 20-s clip (14.1 M feature-samples). Measured: 1799 MiB on an AMD EPYC (oneDNN off), 1339-1348 MiB
    # on an Intel Xeon with oneDNN on (since the unpooled first layer goes as a product per pooling offset).
    "choi": WorkBudget(max_deconv_seconds=20.0, max_deconv_feature_seconds=1280.0, max_batch_segments=32),
    # 22,050 Hz, up to 512 maps. With 30-s clips the largest call (64 features, layer 10) peaked at 1966-2067 MiB
    # over three runs, and about as much with 32 features: the forward pass over the clip dominates, so the clip
    # was capped at 20 s. 64 features of a 20-s clip peaked at 1928 MiB on an AMD EPYC (oneDNN off) but at
    # 2069-2116 MiB on an Intel Xeon with TensorFlow's oneDNN ops on (worst of three: 1968-2004 with 32 features),
    # so a call held 32 features of a 20-s clip. On a fresh install (2026-12-04: the loaded export ~120 MiB
    # larger than on 2026-12-03) on a 2-core AMD EPYC with AVX2 and oneDNN on, 32 features of a 20-s clip peaked
    # at 2120-2132 MiB (1942-2012 the day before), and of a 15-s clip at 2081-2100 in chunks of 32 Mi elements
    # (two features per chunk); in chunks of 16 Mi (one feature), 1849-1886. So: clips up to 15 s, 32 features
    # of them (or 48 of a 10-s clip; 10.6 M feature-samples), chunks of 16 Mi elements.
    "samplecnn": _SAMPLECNN,
    # Not measured separately: the frame-level baselines are smaller than the 3^9-SampleCNN, so its budget.
    "raw-frame": _SAMPLECNN,
    "mel-frame": _SAMPLECNN,
    # The imported musicnn taggers (16 kHz, log-mel 96 x frames): MTT_vgg's 128 maps of the full 96 x frames
    # grid are its widest. With 30-s clips its largest call (64 features, layer 5) peaked at 2516 MiB, so the
    # clip is capped at 15 s (five of its 3-s patches) and the features per call at 64 (960 feature-seconds).
    # Measured: 1801-1834 MiB on an AMD EPYC (oneDNN off); 1428-1441 MiB on an Intel Xeon with oneDNN on (since
    # the unpooled first layer goes as a product per pooling offset; 2212-2219 before).
    "musicnn": WorkBudget(max_deconv_seconds=15.0, max_deconv_feature_seconds=960.0, max_batch_segments=16),
    # musicnn's own architecture (MTT_musicnn, MSD_musicnn): each walk goes back through five front-end
    # branches (204 maps of 38 x 7 and 67 x 7 taps). With the vgg's budget its largest call (64 features of a
    # 15-s clip, layer 8) peaked at 2077 MiB (the loaded export and its first call 1439); in chunks of half
    # the elements, 1894 MiB, and the call took 63 s instead of 78. On an Intel Xeon with oneDNN on: 1955-2009
    # MiB. On a 2-core AMD EPYC with AVX2 only and oneDNN on, 1992-2064 MiB; capped at 12 s, 1865-1957 on
    # 2026-12-03 but 1974-2061 on a fresh install on 2026-12-04. That day also showed that shorter clips are
    # worse: in chunks of 16 Mi a chunk holds 1 / 2 / 3 / 7 features of a 12 / 9 / 6 / 3-s clip, and a chunk of
    # several features costs far more than as many chunks of one: 64 features peaked at 2093-2146 MiB for 9 s
    # and 2078-2089 for one 3-s patch, against 1571 for that patch in chunks of 4 Mi elements (one feature
    # each; and faster, 5.5 s instead of 7.3-9.1). In chunks of 4 Mi, 64 features peaked at
    # 1741 / 1855-1877 / 1978-2031 MiB for 6 / 9 / 12-s clips (the walk of one feature grows with the clip),
    # hence clips up to 9 s (three 3-s patches), 64 features, chunks of 4 Mi elements: one feature per chunk
    # at any clip length (benchmarks/RESULTS_amd_avx2_2026-12-04.md, whose notes hold these runs).
    "musicnn/musicnn": WorkBudget(max_deconv_seconds=9.0, max_deconv_feature_seconds=576.0,
                                  deconv_chunk_elements=_CHUNK_ELEMENTS // 8, max_batch_segments=8),
}


def budget_for(family: str, *, architecture: str | None = None, **overrides: float | int | None) -> WorkBudget:
    """The family's budget with the given fields replaced (``None`` values are ignored).

    An architecture of the family may have its own entry, ``"family/architecture"`` (the musicnn
    taggers' ``"musicnn/musicnn"``); otherwise the family's applies.

    Raises:
        ExportError: For an invalid value.
    """
    base = FAMILY_BUDGETS.get(f"{family}/{architecture}", FAMILY_BUDGETS.get(family, DEFAULT_BUDGET))
    changes = {name: value for name, value in overrides.items() if value is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(WorkBudget)})
    if unknown:
        raise ExportError(f"unknown budget fields {unknown}")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
