"""HTTP routes of the release service."""

from fastapi import APIRouter

from kiban_release.api.releases import router

routers: list[APIRouter] = [router]
