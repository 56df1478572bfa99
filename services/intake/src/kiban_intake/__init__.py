"""Kiban intake service (core zone): institutions post medical information."""
