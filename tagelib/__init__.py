"""tagelib: the thin library behind the TAGE notebooks (data, models, metrics, training loops)."""

__version__ = "0.1.0"
