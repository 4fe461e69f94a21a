"""Apache Beam jobs that run exported tfaural SavedModels over whole audio catalogues.

Each job is a module runnable as ``python -m beam_jobs.<job>``.
"""

from tfaural.cli import command_line_startup

command_line_startup()  # python -m beam_jobs...: oneDNN where faster, no TensorFlow start-up lines (unless --verbose)
