"""A verriflo-relay receiver in Python, verified with the official
Standard Webhooks library (pip install standardwebhooks).

Run: WEBHOOK_SECRET=whsec_... python3 receiver.py 9000
"""
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = webhook.verify(body, dict(self.headers))
        except Exception as e:  # a bad signature or an old timestamp
            print(f"rejected {e}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id not in seen:  # at least once: dedupe on webhook-id
            seen.add(msg_id)
            room = event["data"].get("roomId", "-")
            print(f"verified {msg_id} {event['type']} {room}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9000), Handler)
print(f"listening {server.server_port}", flush=True)
server.serve_forever()
