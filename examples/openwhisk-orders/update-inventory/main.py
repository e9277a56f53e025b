"""Reserves the stock of an order placed: an OpenWhisk-shaped Python action."""

import json

from eddy_events import publish_event


def main(params):
    items = params.get("items")
    if not params.get("orderId") or not isinstance(items, list) or not items:
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid event payload"})}
    for item in items:
        if not isinstance(item, dict) or not item.get("sku") or not isinstance(item.get("quantity"), int) or item["quantity"] <= 0:
            return {
                "statusCode": 400,
                "body": json.dumps({"error": f"bad item {item!r}: sku and a quantity above 0"}),
            }
    reserved = [{"sku": item["sku"], "quantity": int(item["quantity"])} for item in items]
    publish_event("inventory.reserved", {"orderId": params["orderId"], "items": reserved})
    return {"statusCode": 200, "body": json.dumps({"reserved": len(reserved)})}
