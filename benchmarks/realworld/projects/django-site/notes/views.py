from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from notes.models import Note


def index(request: HttpRequest) -> HttpResponse:
    notes = ", ".join(n.text for n in Note.objects.order_by("id"))
    return HttpResponse(f"{settings.SITE_NAME}: {notes}\n", content_type="text/plain")


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
