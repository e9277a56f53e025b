// Sends the order confirmation through a Mailgun-shaped mail API: an ES module exporting an
// async `main`, calling the API with `fetch`. The manifest's `[config]` and `[secrets]` arrive
// as default parameters (`mail_api`, `mail_key`, …), as an OpenWhisk action's do.
export const main = async (params) => {
  const { orderId, email, mail_api, mail_domain, mail_from, mail_key } = params;
  if (!orderId || !email) {
    return { statusCode: 400, body: JSON.stringify({ error: "Invalid event payload" }) };
  }
  const sent = await fetch(`${mail_api}/v3/${mail_domain}/messages`, {
    method: "POST",
    headers: { authorization: "Basic " + btoa(`api:${mail_key}`) },
    body: new URLSearchParams({
      from: mail_from,
      to: email,
      subject: `Your order ${orderId}`,
      text: `Thank you for order ${orderId}.`,
    }),
  });
  if (!sent.ok) {
    // OpenWhisk's application error: a failure, which Eddy retries with backoff.
    return { error: `mail API answered ${sent.status}` };
  }
  const { id } = await sent.json();
  return { statusCode: 200, body: { orderId, message: id } };
};
