"""Kiban optout service (information zone): patients stop provision and ask for deletion."""
