"""Kiban linkage service (core zone): one person across every institution."""
