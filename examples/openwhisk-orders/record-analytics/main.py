"""Sums an order's units and revenue: an OpenWhisk-shaped Python action, `async def`."""


async def main(params):
    items = params.get("items") or []
    units = sum(int(item.get("quantity", 0)) for item in items)
    revenue = sum(int(item.get("quantity", 0)) * float(item.get("price", 0)) for item in items)
    # No statusCode: a 200, with this dict as the body.
    return {"orderId": params.get("orderId"), "units": units, "revenue": round(revenue, 2),
            "currency": params.get("currency", "EUR")}
