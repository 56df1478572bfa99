"""HTTP routes of the review service."""

from fastapi import APIRouter

from kiban_review.api import applications, committee, deliberation, public

routers: list[APIRouter] = [
    committee.router,
    applications.router,
    deliberation.router,
    public.router,
]
