"""tfaural: listen to what a music CNN has learnt, and run it over whole catalogues.

The package trains the 5-layer STFT CNN of Choi et al. (2015) and the raw-waveform
SampleCNN family of Lee et al. (2018), exports them as SavedModels whose
signatures expose tagging, transfer features, deconvolution and auralisation,
and provides the audio and spectral building blocks those share.
"""

from tfaural._version import __version__
from tfaural.cli import command_line_startup
from tfaural.errors import TfauralError

command_line_startup()  # python -m tfaural...: oneDNN where faster, no TensorFlow start-up lines (unless --verbose)

__all__ = ["__version__", "TfauralError"]
