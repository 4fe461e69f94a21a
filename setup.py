"""Package metadata for tfaural, export and beam_jobs.

This file is also what Apache Beam ships to remote workers (``--setup_file ./setup.py``),
so it must stay importable with nothing but setuptools installed.
"""

from __future__ import annotations

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tfaural" / "_version.py").read_text()).group(1)  # type: ignore[union-attr]

INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "tensorboard>=2.20",  # TensorFlow 2.21 no longer installs it; training writes its logs
    "keras>=3.10",
    "apache-beam[gcp]>=2.77",
    "google-crc32c>=1.5",  # CRCs of TFRecords streamed to disk (make_tfrecords); also installed by beam[gcp]
    "protobuf>=4.21",  # tf.train.Example's messages without importing TensorFlow (tfaural.data.tfrecord)
    "tensorflow-datasets>=4.9.10",
    "importlib_resources>=6",  # imported by tensorflow-datasets 4.9.10 without being declared
    "librosa>=0.11",
    "soundfile>=0.14",
    "av>=14",  # PyAV (FFmpeg's libraries in its wheel): MP4/M4A, WebM, WMA, ... that libsndfile does not read
    "soxr>=0.5",
    "numpy>=2",
    # TensorFlow imports ml_dtypes early in its own import; 0.7.0 spends most of a second registering
    # NumPy ufunc loops ('import numpy, ml_dtypes' 0.96 s against 0.12 s with 0.6.0, benchmarks/startup.py,
    # RESULTS_amd_zen4.md): every model process, worker and test starts that much sooner. TensorFlow 2.21
    # asks for >=0.5.1,<1 and uses no dtype that 0.6 lacks.
    "ml_dtypes>=0.5.1,<0.7",
    "scikit-learn>=1.5",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "jinja2>=3.1",  # the listening report's HTML templates (autoescaped)
    "pretty_midi>=0.2.10",
    "pyfluidsynth>=1.3.3",
    "pyarrow>=15",
    "dask[distributed]>=2024.1",
    "tensorflow-serving-api>=2.21,<2.22",  # PredictionLog protos for the exports' warm-up requests
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.6",
        "ruff>=0.6",
        "mypy>=1.10",
        "import-linter>=2.1",
        "selenium>=4.20",
        "psutil>=5.9",  # the tests count a process's children (also installed with dask[distributed])
        "gcp-storage-emulator>=2024.8",  # a local GCS server: the jobs' writes through Beam's gs:// filesystem
    ],
}

setup(
    name="tfaural",
    version=VERSION,
    description="Listen to what a music CNN has learnt: training, SavedModel export and Beam jobs for "
    "auralisation, tagging and transfer features.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The report's templates and assets are folders of data files: listed as packages of their own, as
    # setuptools asks of any importable folder (otherwise every build warns "Package would be ignored").
    packages=[
        *find_packages(include=["tfaural", "tfaural.*", "export", "export.*", "beam_jobs", "beam_jobs.*"]),
        "tfaural.report.assets",
        "tfaural.report.templates",
    ],
    include_package_data=True,
    package_data={"tfaural.report.templates": ["*.html"], "tfaural.report.assets": ["*.css", "*.js"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "tfaural-train=tfaural.training.train:main",
            "tfaural-evaluate=tfaural.training.evaluate:main",
            "tfaural-export=export.__main__:main",
            "tfaural-report=tfaural.report.cli:main",
            "tfaural-listen=tfaural.listen:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
