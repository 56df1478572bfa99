"""HTTP routes of the intake service."""

from fastapi import APIRouter

from kiban_intake.api import institutions, notices, submissions

routers: list[APIRouter] = [institutions.router, notices.router, submissions.router]
