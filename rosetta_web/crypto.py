"""Encrypt and decrypt the secrets Rosetta stores (source passwords, key passphrases)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from .config import ConfigError


def fernet_for(secret_key: str, encryption_key: str | None) -> Fernet:
    """Build the Fernet cipher from ENCRYPTION_KEY, or derive one from SECRET_KEY with HKDF."""
    if encryption_key:
        try:
            return Fernet(encryption_key.encode())
        except ValueError:
            raise ConfigError(
                "ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes); make one "
                "with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"rosetta-web", info=b"stored-secrets"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _fernet() -> Fernet:
    fernet: Fernet = current_app.extensions["rosetta_fernet"]
    return fernet


def encrypt_secret(plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    """Decrypt a stored secret; fail with a message that never includes the secret."""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "a stored secret cannot be decrypted: ENCRYPTION_KEY or SECRET_KEY changed since it "
            "was saved; enter the secret again"
        ) from None


def hash_token(token: str) -> str:
    """Hash an API token for storage and lookup (tokens are random, so SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()
