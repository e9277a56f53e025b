"""inventory, the order saga's stock step, in Python (examples/order-saga).

On PaymentProcessed (stream `payments`) it takes every item of the order from the stock in the
shared key-value bucket `stock` (SKU -> units, as text; `eddy kv set stock book 20`), once per
order, and publishes InventoryReserved. Each item is taken with compare-and-swap, so the stock
never goes below zero however many orders race for it. If an item is short it puts back what it
took for the order and publishes OutOfStock, which makes the order-state projection cancel the
order (and the payment step refund it).
"""

import eddy

# Compare-and-swap rounds on one item before giving up (the invocation fails and is retried).
ROUNDS = 50


def units(value):
    return int(value) if value else 0


def take(stock, sku, quantity):
    """Takes `quantity` of `sku` if that many are in stock; returns None, or what was there."""
    for _ in range(ROUNDS):
        current = stock.get(sku)
        available = units(current)
        if available < quantity:
            return available
        if stock.compare_and_swap(sku, current, str(available - quantity)):
            return None
    raise eddy.HostError(f"stock of {sku} kept changing")


def handle(event):
    payment = event.json()
    order_id = payment.get("orderId")
    items = payment.get("items")
    if not order_id or not isinstance(items, list) or not items:
        raise eddy.Rejected("PaymentProcessed needs orderId and items")
    if not eddy.once(f"reserve:{order_id}", 7 * 24 * 3600):
        eddy.log.info(f"stock for {order_id} was already handled")
        return eddy.Response.ok()

    stock = eddy.kv.open("stock")
    stream = eddy.config("inventory_stream", "inventory")
    reserved = []
    for item in items:
        sku, quantity = item.get("sku"), int(item.get("quantity", 1))
        available = take(stock, sku, quantity)
        if available is not None:
            for done in reserved:
                stock.increment(done["sku"], done["quantity"])
                eddy.log.info(f"put back {done['quantity']} x {done['sku']} for {order_id}")
            eddy.publish(stream, "OutOfStock", {
                "orderId": order_id,
                "sku": sku,
                "requested": quantity,
                "available": available,
            })
            return eddy.Response.ok({"orderId": order_id, "outOfStock": sku})
        reserved.append({"sku": sku, "quantity": quantity})

    eddy.publish(stream, "InventoryReserved", {"orderId": order_id, "items": reserved})
    eddy.log.info(f"reserved {len(reserved)} item(s) for {order_id}")
    return eddy.Response.ok({"orderId": order_id, "reserved": reserved})


Handler = eddy.handler(handle)
