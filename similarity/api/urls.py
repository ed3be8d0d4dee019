"""API routes (mounted under /api/)."""

from django.urls import path  # noqa: F401

app_name = "api"

urlpatterns: list = []
