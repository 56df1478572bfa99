"""HTTP routes of the intake service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
