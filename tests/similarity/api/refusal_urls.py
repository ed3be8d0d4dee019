"""The project's URLs plus plain Django views under /api/, to test the 400/403 handlers."""

from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import handler400, handler403, handler404, handler500, urlpatterns  # noqa: F401


def forbidden(request):
    raise PermissionDenied("not for you")


@csrf_exempt
def plain_form(request):
    return HttpResponse(str(len(request.POST)))


urlpatterns = [
    path("api/forbidden/", forbidden),
    path("api/plain-form/", plain_form),
    path("plain-form/", plain_form),
    *urlpatterns,
]
