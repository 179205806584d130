"""A receiver for callwright's business webhooks: every call's end, signed.

    WEBHOOK_SECRET=... uvicorn --app-dir examples webhook_receiver:app --port 9000
    # callwright: WEBHOOK_URLS='["http://127.0.0.1:9000/calls"]' WEBHOOK_SECRET=... (the same)
"""

import os

from fastapi import FastAPI, HTTPException, Request

from callwright.webhooks import verify_signature

app = FastAPI()
seen: set[str] = set()  # delivery ids handled already; keep them in your database


@app.post("/calls")
async def call_ended(request: Request) -> dict:
    body = await request.body()  # the raw bytes: the signature covers them exactly
    signature = request.headers.get("Callwright-Signature")
    if not verify_signature(os.environ["WEBHOOK_SECRET"], signature, body, tolerance_s=300):
        raise HTTPException(status_code=401, detail="bad signature")  # not retried
    delivery = request.headers["Callwright-Delivery"]  # the same on every retry
    if delivery not in seen:
        seen.add(delivery)
        event = await request.json()
        print(event["call"]["call_sid"], event["call"]["outcome"], event["summary"])
    return {"ok": True}
