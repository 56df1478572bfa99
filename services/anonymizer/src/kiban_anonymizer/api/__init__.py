"""HTTP routes of the anonymizer service."""

from fastapi import APIRouter

routers: list[APIRouter] = []
