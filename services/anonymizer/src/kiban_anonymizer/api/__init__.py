"""HTTP routes of the anonymizer service (internal, operators only: scope `admin`)."""

from fastapi import APIRouter

from kiban_anonymizer.api.admin import router

routers: list[APIRouter] = [router]
