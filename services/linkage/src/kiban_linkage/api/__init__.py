"""HTTP routes of the linkage service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
