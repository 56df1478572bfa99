"""Kiban anonymizer service (core zone): research store and dataset builds."""
