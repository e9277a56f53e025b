"""A Python Eddy function: reserves stock for an order, once per order."""

import eddy


def handle(event):
    order = event.json()
    if "orderId" not in order:
        raise eddy.Rejected("missing orderId")
    if eddy.once(f"reserve:{order['orderId']}", 86400):
        stream = eddy.config("output_stream", "inventory")
        eddy.publish(stream, "InventoryReserved", {"orderId": order["orderId"]})
        eddy.log.info(f"reserved stock for {order['orderId']}")
    return eddy.Response.ok({"orderId": order["orderId"]})


Handler = eddy.handler(handle)
