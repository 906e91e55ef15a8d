"""Template encryption at rest: AES-256-GCM (``cryptography``).

Each template is stored as ``nonce(12) || ciphertext+tag``; the associated data binds it to its
user and to the model fingerprint, so a ciphertext cannot be moved to another user unnoticed.
A key-check value in the gallery tells a wrong key from a corrupt row.
"""
from __future__ import annotations

import os
import secrets

from ..errors import GalleryError

NONCE = 12
_CHECK_PLAINTEXT = b"smile2pay-gallery-key-check-v1"
_CHECK_AAD = b"key-check"


def generate_key() -> bytes:
    return secrets.token_bytes(32)


class TemplateCipher:
    """Encrypts/decrypts template blobs; ``key=None`` means plaintext storage."""

    def __init__(self, key: bytes | None) -> None:
        self.enabled = key is not None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            if len(key) != 32:
                raise GalleryError("gallery key must be 32 bytes (AES-256)", code="GALLERY_KEY_INVALID")
            self._aead = AESGCM(key)

    @property
    def name(self) -> str:
        return "aes-256-gcm" if self.enabled else "none"

    def seal(self, data: bytes, aad: bytes) -> bytes:
        if not self.enabled:
            return data
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if not self.enabled:
            return blob
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag:
            raise GalleryError("a template failed authentication (corrupt row, or moved between users)",
                               code="GALLERY_CORRUPT") from None

    def key_check(self) -> bytes:
        return self.seal(_CHECK_PLAINTEXT, _CHECK_AAD)

    def verify_key_check(self, blob: bytes) -> None:
        from cryptography.exceptions import InvalidTag

        try:
            ok = self._aead.decrypt(blob[:NONCE], blob[NONCE:], _CHECK_AAD) == _CHECK_PLAINTEXT
        except InvalidTag:
            ok = False
        if not ok:
            raise GalleryError("wrong gallery key: this gallery was encrypted with another key",
                               code="GALLERY_WRONG_KEY")
