"""Kiban release service (information zone): approved datasets delivered and traced."""
