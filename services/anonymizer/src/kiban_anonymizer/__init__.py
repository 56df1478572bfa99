"""Kiban anonymizer service (core zone): research store and anonymized / pseudonymized dataset builds."""
