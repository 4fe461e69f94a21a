"""Datasets tfaural can make by itself (no downloads): the FluidSynth demo catalogue."""
