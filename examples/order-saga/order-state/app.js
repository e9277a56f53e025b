// order-state, the order saga's projection, in JavaScript (examples/order-saga).
//
// It folds every event of an order into the order's status and publishes each change as
// OrderStatusChanged on `order-status`:
//   OrderPlaced -> PENDING, PaymentProcessed -> PAYMENT_OK, InventoryReserved -> RESERVED,
//   ShippingScheduled -> SCHEDULED (and it declares the saga done: OrderCompleted),
//   OrderCompleted -> COMPLETED, PaymentFailed / OrderCancelled -> CANCELLED.
// Events of one order arrive on four streams and can be folded out of order (OrderPlaced and
// PaymentProcessed race), so each change carries its status's `rank`: a reader keeps the
// highest-ranked status it has seen, and a late PENDING never undoes PAYMENT_OK.
// It also compensates: OutOfStock after a payment publishes OrderCancelled, on which the payment
// step refunds. Each (order, event type) counts once, so duplicates change nothing.
import { Response, Rejected, config, once, publish, log } from "./eddy.js";

const STATUS = {
  OrderPlaced: "PENDING",
  PaymentProcessed: "PAYMENT_OK",
  InventoryReserved: "RESERVED",
  ShippingScheduled: "SCHEDULED",
  OrderCompleted: "COMPLETED",
  PaymentFailed: "CANCELLED",
  OrderCancelled: "CANCELLED",
};
const RANK = {
  PENDING: 1,
  PAYMENT_OK: 2,
  RESERVED: 3,
  SCHEDULED: 4,
  COMPLETED: 5,
  CANCELLED: 9,
};
const WEEK = 7 * 24 * 3600;

export function handle(event) {
  const data = event.json();
  const orderId = data.orderId;
  if (!orderId) throw new Rejected(`${event.type} needs orderId`);
  if (!once(`${event.type}:${orderId}`, WEEK)) {
    log.info(`${event.type} for ${orderId} already folded`);
    return Response.ok();
  }
  const statusStream = config("status_stream", "order-status");
  const ordersStream = config("orders_stream", "orders");

  if (event.type === "OutOfStock") {
    publish(ordersStream, "OrderCancelled", {
      orderId,
      reason: `out of stock: ${data.sku} (${data.requested} wanted, ${data.available} left)`,
    });
    return Response.ok({ orderId, compensating: true });
  }
  const status = STATUS[event.type];
  if (!status) throw new Rejected(`order-state does not handle ${event.type}`);
  publish(statusStream, "OrderStatusChanged", {
    orderId,
    status,
    rank: RANK[status],
    cause: event.type,
    reason: data.reason,
  });
  if (event.type === "ShippingScheduled") {
    publish(ordersStream, "OrderCompleted", { orderId, carrier: data.carrier });
  }
  log.info(`${orderId} is ${status}`);
  return Response.ok({ orderId, status });
}
