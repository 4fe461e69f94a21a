"""The single source of the tfaural version (read by setup.py and metadata)."""

__version__ = "0.1.0"
