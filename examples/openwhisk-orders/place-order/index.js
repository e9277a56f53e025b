// The order producer, in the OpenWhisk action shape: nothing in it is Eddy's but the event-bus
// module. A checkout becomes an `order.placed` event; a checkout without a user or items is
// answered 400.
const { publishEvent } = require("eddy-events");

const main = async (params) => {
  const { userId, email, items } = params;
  if (!userId || !email || !Array.isArray(items) || items.length === 0) {
    return {
      statusCode: 400,
      body: JSON.stringify({ error: "Invalid event payload: userId, email and items are required" }),
    };
  }
  // The checkout's own id makes the order id, so a retried checkout places the same order.
  const orderId = params.orderId || `o-${params.__eddy.id}`;
  const total = items.reduce((sum, item) => sum + item.quantity * item.price, 0);
  publishEvent("order.placed", { orderId, userId, email, items, total });
  return { statusCode: 201, body: JSON.stringify({ orderId, total }) };
};

module.exports = { main };
