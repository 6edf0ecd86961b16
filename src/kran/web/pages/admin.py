"""The admin page(s) of the dashboard."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
