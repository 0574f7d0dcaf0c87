"""Secrets at rest (PSA credentials) under Fernet, with key rotation."""
from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


def _fernet_key(material: str) -> bytes:
    """A Fernet key as given, or one derived from any other string (e.g. SECRET_KEY)."""
    try:
        Fernet(material.encode())
        return material.encode()
    except ValueError:
        return base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest())


def _cipher() -> MultiFernet:
    config = current_app.config
    keys = config.get("ENCRYPTION_KEY") or ("derived:" + config["SECRET_KEY"])
    # comma-separated: the first key encrypts, all of them decrypt (rotation)
    return MultiFernet([Fernet(_fernet_key(k.strip())) for k in keys.split(",") if k.strip()])


def encrypt_json(value: dict) -> str:
    return _cipher().encrypt(json.dumps(value).encode()).decode()


def decrypt_json(token: str) -> dict:
    try:
        return json.loads(_cipher().decrypt(token.encode()))
    except InvalidToken as error:
        raise ValueError("stored secrets cannot be decrypted with ENCRYPTION_KEY") from error


def rotate(token: str) -> str:
    """The same secret, encrypted under the first ENCRYPTION_KEY (ValueError if no key in
    ENCRYPTION_KEY opens it), so the keys after the first can be retired."""
    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken as error:
        raise ValueError("stored secrets cannot be decrypted with ENCRYPTION_KEY") from error
