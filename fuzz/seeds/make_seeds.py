"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/). Run from fuzz/:
`python3 seeds/make_seeds.py`. Deterministic: fixed keys and a fixed clock."""

import base64
import hashlib
import json
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# The access-token key of fuzz_targets/authorization.rs: Ed25519 with seed [7; 32].
token_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
x = b64url(token_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
kid = b64url(hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":")).encode()).digest())
header = {"typ": "JWT", "alg": "EdDSA", "kid": kid}
claims = {
    "iss": "otpd", "aud": "otpd", "sub": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "sid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "iat": 1_700_000_000, "exp": 1_700_000_900,
    "jti": "00000000000000000000000000000000",
}
signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
jwt = f"{signing_input}.{b64url(token_key.sign(signing_input.encode()))}"
write("authorization", "valid_bearer", f"Bearer {jwt}")
write("authorization", "lowercase_scheme", f"bearer  {jwt} ")
write("authorization", "basic", "Basic dXNlcjpwYXNz")

# Device keys: the P-256 key of the document's example and an Ed25519 key (seed [9; 32]).
p256_spki = base64.b64decode(
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfguw1pGn7KfAqTEASqLZY6d7OPqBsBHPIBOBAVDghkZpaiq8ymwtILhXjc9FLrHK2uPoTJUaLQkXxSsh4jodNQ=="
)
ed_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([9] * 32))
ed_spki = ed_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tag(variant, count=5):
    """arbitrary's enum tag: a little-endian u32 t picks variant (t * count) >> 32."""
    return (-(-variant * 2**32 // count)).to_bytes(4, "little")


# A trailing slice takes the rest of the input.
write("device_key", "spki_der_p256", tag(0) + p256_spki)
write("device_key", "spki_der_ed25519", tag(0) + ed_spki)
pem = serialization.load_der_public_key(p256_spki).public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
write("device_key", "spki_pem_p256", tag(1) + pem)
write("device_key", "public_key_text", tag(3) + base64.urlsafe_b64encode(ed_spki))

# Request bodies: one of each shape.
bodies = {
    "register": {"phone": "+1 (202) 555-0123", "first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com"},
    "login": {"email": "ada@example.com"},
    "login_locale": {"phone": "+33612345678", "locale": "zh-hans-CN"},
    "verify": {"phone": "+12025550123", "code": "725 826"},
    "resend": {"phone": "2025550123", "purpose": "login"},
    "refresh": {"refresh_token": "ort1." + "0" * 32 + "." + "f" * 64},
    "enrol_spki": {"name": "Ada's iPhone", "platform": "ios", "public_key": base64.b64encode(p256_spki).decode()},
    "enrol_jwk": {"name": "web", "platform": "web", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(ed_spki[-32:]), "ext": True}},
    "challenge": {"device_id": "01890a5d-ac96-774b-bcce-b302099a8057"},
    "device_verify": {"device_id": "01890a5d-ac96-774b-bcce-b302099a8057", "nonce": "ab" * 32, "signature": "AAAA"},
}
for name, body in bodies.items():
    write("request_bodies", name, json.dumps(body))

for name, text in {"e164": "+12025550123", "national": "(202) 555-0123", "intl_00": "0044 7911 123456",
                   "email": " Alice.Smith+otp@Example.COM "}.items():
    write("identifier", name, text)

write("refresh_token", "valid", "ort1." + "0123456789abcdef" * 2 + "." + "fedcba9876543210" * 4)

# Passkeys: a registration (attestation "none") and a login (assertion) as a browser's
# PublicKeyCredential.toJSON() writes them, for origin http://localhost:8080 (mode byte first:
# 0 assertion, 1 registration, 2 a passkey id from a path). The assertion's ECDSA signature is
# randomised (a new one each run); everything else is fixed.
def cbor_head(major, n):
    return bytes([major << 5 | n]) if n < 24 else bytes([major << 5 | 24, n]) if n < 256 else bytes([major << 5 | 25]) + n.to_bytes(2, "big")


def cbor_bytes(b):
    return cbor_head(2, len(b)) + b


def cbor_text(t):
    return cbor_head(3, len(t)) + t.encode()


pk = ec.derive_private_key(5, ec.SECP256R1())
nums = pk.public_key().public_numbers()
cose = bytes([0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21]) + cbor_bytes(nums.x.to_bytes(32, "big")) + b"\x22" + cbor_bytes(nums.y.to_bytes(32, "big"))
cred_id = bytes(range(32))
rp_hash = hashlib.sha256(b"localhost").digest()
challenge = b64url(bytes([3] * 32))
auth_reg = rp_hash + bytes([0x45]) + (0).to_bytes(4, "big") + bytes(16) + len(cred_id).to_bytes(2, "big") + cred_id + cose
att = bytes([0xa3]) + cbor_text("fmt") + cbor_text("none") + cbor_text("attStmt") + bytes([0xa0]) + cbor_text("authData") + cbor_bytes(auth_reg)
client = lambda kind: json.dumps({"type": kind, "challenge": challenge, "origin": "http://localhost:8080", "crossOrigin": False}).encode()
registration = {"id": b64url(cred_id), "rawId": b64url(cred_id), "type": "public-key",
                "response": {"clientDataJSON": b64url(client("webauthn.create")), "attestationObject": b64url(att), "transports": ["internal"]},
                "clientExtensionResults": {}}
auth_get = rp_hash + bytes([0x05]) + (1).to_bytes(4, "big")
from cryptography.hazmat.primitives import hashes
signature = pk.sign(auth_get + hashlib.sha256(client("webauthn.get")).digest(), ec.ECDSA(hashes.SHA256()))
assertion = {"id": b64url(cred_id), "rawId": b64url(cred_id), "type": "public-key",
             "response": {"clientDataJSON": b64url(client("webauthn.get")), "authenticatorData": b64url(auth_get),
                          "signature": b64url(signature), "userHandle": b64url(bytes(16))},
             "clientExtensionResults": {}}
write("passkey", "assertion", b"\x00" + json.dumps(assertion).encode())
write("passkey", "registration", b"\x01" + json.dumps(registration).encode())
write("passkey", "path_id", b"\x02" + b64url(cred_id).encode())
