"""The shop's HTTP API: create an order, pay it, look at it."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import evq
from orders.models import AuditEntry, Order, Receipt


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    order = Order.objects.create(total_cents=int(body.get("total_cents", 0)))
    return JsonResponse({"id": order.pk}, status=201)


@csrf_exempt
@require_POST
def pay_order(request: HttpRequest, order_id: int) -> JsonResponse:
    with transaction.atomic():
        order = get_object_or_404(Order.objects.select_for_update(), pk=order_id)
        if order.paid_at is not None:
            return JsonResponse({"error": "already paid"}, status=409)
        order.paid_at = timezone.now()
        order.save(update_fields=["paid_at"])
        # Written in this transaction: the event exists if and only if the order is paid.
        event_id = evq.publish("order.paid", payload={"order_id": order.pk})
    return JsonResponse({"id": order.pk, "event_id": event_id})


@require_GET
def show_order(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    receipt = Receipt.objects.filter(order=order).first()
    return JsonResponse(
        {
            "id": order.pk,
            "paid": order.paid_at is not None,
            "receipt": receipt.text if receipt else None,
            "audit": list(
                AuditEntry.objects.filter(order=order).values_list("event_name", flat=True)
            ),
        }
    )
