// A JavaScript Eddy function: asks for an order confirmation mail, once per order.
import { Response, Rejected, config, publish, once, log } from "./eddy.js";

export function handle(event) {
  const order = event.json();
  if (!order.orderId || !order.email) {
    throw new Rejected("an order needs orderId and email");
  }
  if (once(`confirmation:${order.orderId}`, 86400)) {
    const stream = config("output_stream", "emails");
    publish(stream, "EmailRequested", { orderId: order.orderId, to: order.email });
    log.info(`confirmation requested for ${order.orderId}`);
  }
  return Response.ok({ orderId: order.orderId });
}
