"""The project's URLs plus an API route that fails, to test 500 handling."""

from django.urls import path

from config.urls import handler404, handler500, urlpatterns  # noqa: F401


def boom(request):
    raise RuntimeError("boom: a bug in a view")


urlpatterns = [path("api/boom/", boom), *urlpatterns]
