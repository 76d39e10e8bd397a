"""A JSON endpoint that writes streamed models, for the txid middleware tests."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from durable_streams import state

from .models import Message


class Refused(Exception):
    pass


@csrf_exempt
@require_POST
def post_message(request: HttpRequest, room_id: int) -> JsonResponse:
    """Create a message; with ``"fail": true`` the transaction is rolled back
    after the save, so neither the row nor its event survives."""
    data = json.loads(request.body)
    try:
        with transaction.atomic():
            message = Message.objects.create(
                room_id=room_id, author=data["author"], body=data["body"]
            )
            if data.get("fail"):
                raise Refused
    except Refused:
        return JsonResponse({"error": "refused"}, status=409)
    return JsonResponse({"id": message.pk, "txid": state.current_txid()}, status=201)
