"""objmig: migrate objects between S3-compatible stores, resumably and verified."""

__version__ = "0.1.0"
