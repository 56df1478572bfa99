"""HTTP routes of the review service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
