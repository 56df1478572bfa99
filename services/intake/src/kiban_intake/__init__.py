"""Kiban intake service (core zone): institutions post medical information (FHIR bundles, bulk NDJSON)."""
