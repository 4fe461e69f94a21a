"""Apache Beam jobs that run exported tfaural SavedModels over whole audio catalogues.

Each job is a module runnable as ``python -m beam_jobs.<job>``.
"""

from tfaural.cli import quiet_command_line_startup

quiet_command_line_startup()  # python -m beam_jobs...: no TensorFlow start-up lines (--verbose shows them)
