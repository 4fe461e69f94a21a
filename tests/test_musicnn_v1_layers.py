"""The ``tf.compat.v1.layers`` stand-in of the peer benchmark: musicnn's own ``models.py`` builds, restores the
shipped checkpoint strictly and computes what the publisher's saved graph computes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import musicnn_v1_layers
from tfaural import spectral
from tfaural.pretrained import musicnn
from tfaural.pretrained.probes import music_like


def _log_mel_patches(seconds: float, seed: int) -> np.ndarray:
    """musicnn's input: log10(1 + 10000 mel power), float32 [patches, 187, 96] (time, mel)."""
    y = music_like(seconds=seconds, sample_rate=16000, seed=seed, peak=0.25)
    mel = spectral.melspectrogram(y, sample_rate=16000, n_fft=512, hop_length=256, n_mels=96).numpy()
    log_mel = np.log10(1 + 10000 * mel).T.astype(np.float32)
    return np.stack([log_mel[s:s + 187] for s in range(0, log_mel.shape[0] - 186, 120)])


@pytest.mark.parametrize("name", ["MTT_vgg", "MTT_musicnn"])
def test_musicnn_models_py_restores_and_matches_the_published_graph(name: str) -> None:
    previous = tf.compat.v1.layers
    musicnn_v1_layers.install()
    try:
        from musicnn import models

        patches = _log_mel_patches(8.0, seed=3)
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
            training = tf.compat.v1.placeholder(tf.bool)
            logits = models.define_model(x, training, name, 50)[0]
            scores = tf.nn.sigmoid(logits)
            names = sorted(v.op.name for v in tf.compat.v1.global_variables())
            with tf.compat.v1.Session(graph=graph) as session:
                # strict: musicnn's extractor swallows a failed restore with a bare except
                tf.compat.v1.train.Saver().restore(session, musicnn.locate_model_dir(name) + "/")
                ours = session.run(scores, {x: patches, training: False})
    finally:
        tf.compat.v1.layers = previous
    reader = tf.compat.v1.train.NewCheckpointReader(musicnn.locate_model_dir(name) + "/")
    published = sorted(k for k in reader.get_variable_to_shape_map()
                       if "Adam" not in k and k not in ("beta1_power", "beta2_power"))
    assert names == published  # every variable of the checkpoint, under TF1's names, and nothing else
    reference = musicnn.run_original_graph(name, patches)["taggram"]
    assert ours.shape == reference.shape == (len(patches), 50)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    assert float(np.ptp(ours)) > 0.1  # real scores, not a constant from unrestored weights
