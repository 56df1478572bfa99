"""Kiban review service (information zone): applications, committee, public register."""
