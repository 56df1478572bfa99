"""HTTP routes of the optout service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
