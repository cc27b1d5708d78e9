// A verriflo-relay receiver in Node, verified with the official Standard
// Webhooks library (npm install standardwebhooks).
//
// Run: WEBHOOK_SECRET=whsec_... node receiver.js 9000
const http = require("http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set();

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let event;
    try {
      event = webhook.verify(body, req.headers);
    } catch (e) {
      console.log(`rejected ${e.message}`);
      res.writeHead(401).end();
      return;
    }
    const id = req.headers["webhook-id"];
    if (!seen.has(id)) { // at least once: dedupe on webhook-id
      seen.add(id);
      console.log(`verified ${id} ${event.type} ${event.data.roomId ?? "-"}`);
    }
    res.writeHead(204).end();
  });
});

server.listen(Number(process.argv[2] ?? 9000), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
