"""schemathesis hooks for the openapi-schemathesis scenario: keep every
call siprelay is asked to place on this machine.

POST /calls with a made-up `sip:` target would make siprelay send an INVITE
(and maybe a DNS query) wherever the target points. Every `to` that siprelay
would read as a SIP URI (it starts with "sip", any case) is rewritten here,
just before the request is sent, to a loopback port where nothing listens.
Anything else is a plain number, which siprelay sends to --sip-server, a
loopback address in the interop run."""
import schemathesis

SAFE_TARGET = "sip:fuzz@127.0.0.1:9"


@schemathesis.hook
def before_call(context, case, **kwargs):
    op = context.operation
    if op is None or op.method.upper() != "POST" or op.path != "/calls":
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("to"), str):
        if body["to"].strip().lower().startswith("sip"):
            body["to"] = SAFE_TARGET
