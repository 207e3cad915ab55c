"""netlab: real Linux network labs from a scenario file, proven with real packets."""

__version__ = "0.1.0"
