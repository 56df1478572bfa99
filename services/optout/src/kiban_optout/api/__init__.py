"""HTTP routes of the optout service."""

from fastapi import APIRouter

from kiban_optout.api.optouts import router

routers: list[APIRouter] = [router]
