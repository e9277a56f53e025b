"""inventory, the order saga's stock step, in Python (examples/order-saga).

On PaymentProcessed (stream `payments`) it reserves every item of the order, once per order,
and publishes InventoryReserved; if an item is short it releases what it had reserved for the
order and publishes OutOfStock, which makes the order-state projection cancel the order (and
the payment step refund it).

Stock levels come from the `stock` setting, a JSON object of SKU to units (a stand-in for a
warehouse system: Eddy functions keep no state beyond `once`).
"""

import json

import eddy


def handle(event):
    payment = event.json()
    order_id = payment.get("orderId")
    items = payment.get("items")
    if not order_id or not isinstance(items, list) or not items:
        raise eddy.Rejected("PaymentProcessed needs orderId and items")
    if not eddy.once(f"reserve:{order_id}", 7 * 24 * 3600):
        eddy.log.info(f"stock for {order_id} was already handled")
        return eddy.Response.ok()

    stock = json.loads(eddy.config("stock", "{}"))
    stream = eddy.config("inventory_stream", "inventory")
    reserved = []
    for item in items:
        sku, quantity = item.get("sku"), int(item.get("quantity", 1))
        available = int(stock.get(sku, 0))
        if quantity > available:
            for done in reserved:
                eddy.log.info(f"released {done['quantity']} x {done['sku']} for {order_id}")
            eddy.publish(stream, "OutOfStock", {
                "orderId": order_id,
                "sku": sku,
                "requested": quantity,
                "available": available,
            })
            return eddy.Response.ok({"orderId": order_id, "outOfStock": sku})
        stock[sku] = available - quantity
        reserved.append({"sku": sku, "quantity": quantity})

    eddy.publish(stream, "InventoryReserved", {"orderId": order_id, "items": reserved})
    eddy.log.info(f"reserved {len(reserved)} item(s) for {order_id}")
    return eddy.Response.ok({"orderId": order_id, "reserved": reserved})


Handler = eddy.handler(handle)
