"""Apache Beam jobs that run exported tfaural SavedModels over whole audio catalogues.

Each job is a module runnable as ``python -m beam_jobs.<job>``.
"""
