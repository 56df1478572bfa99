"""HTTP routes of the release service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
