"""Kiban review service (information zone): applications, the review committee and the public register."""
