"""HTTP routes of the linkage service (internal, `admin` scope only)."""

from fastapi import APIRouter

from kiban_linkage.api.admin import router

routers: list[APIRouter] = [router]
