"""An independent RFC 3711 reference transform for the tests, written from the
RFC alone with ``cryptography``'s AES: key derivation (§4.3.1, kdr 0), AES
counter mode (§4.1.1) and HMAC-SHA1 authentication (§4.2.1). It exists to
check that libsrtp, behind natkit's wrapper, computes exactly what the RFC
says: it is verified against the RFC's own Appendix B vectors first."""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LABEL_RTP_ENCRYPTION = 0
LABEL_RTP_AUTH = 1
LABEL_RTP_SALT = 2
LABEL_RTCP_ENCRYPTION = 3
LABEL_RTCP_AUTH = 4
LABEL_RTCP_SALT = 5


def aes_cm_keystream(key: bytes, iv: int, length: int) -> bytes:
    """AES in counter mode from the 128-bit counter ``iv`` (§4.1.1)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """§4.3.1 with key_derivation_rate 0: x = (label << 48) XOR salt, IV = x * 2^16."""
    x = (label << 48) ^ int.from_bytes(master_salt, "big")
    return aes_cm_keystream(master_key, x << 16, length)


class Keys:
    def __init__(self, master: bytes, *, rtcp: bool = False) -> None:
        key, salt = master[:16], master[16:30]
        base = 3 if rtcp else 0
        self.encryption = derive(key, salt, base + LABEL_RTP_ENCRYPTION, 16)
        self.auth = derive(key, salt, base + LABEL_RTP_AUTH, 20)
        self.salt = derive(key, salt, base + LABEL_RTP_SALT, 14)

    def crypt(self, ssrc: int, index: int, data: bytes) -> bytes:
        iv = (int.from_bytes(self.salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        stream = aes_cm_keystream(self.encryption, iv, len(data))
        return bytes(a ^ b for a, b in zip(data, stream, strict=True))

    def tag(self, data: bytes, length: int) -> bytes:
        return hmac.new(self.auth, data, hashlib.sha1).digest()[:length]


def protect_rtp(master: bytes, packet: bytes, *, roc: int = 0, tag_length: int = 10) -> bytes:
    """SRTP-protect a plain RTP packet with no CSRCs or extension (§3.3)."""
    keys = Keys(master)
    seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
    encrypted = packet[:12] + keys.crypt(ssrc, (roc << 16) | seq, packet[12:])
    return encrypted + keys.tag(encrypted + roc.to_bytes(4, "big"), tag_length)


def unprotect_rtcp(master: bytes, packet: bytes) -> tuple[int, bytes]:
    """Check and decrypt an SRTCP packet (§3.4): returns (SRTCP index, RTCP)."""
    keys = Keys(master, rtcp=True)
    body, tag = packet[:-10], packet[-10:]
    if not hmac.compare_digest(keys.tag(body, 10), tag):
        raise ValueError("SRTCP tag mismatch")
    e_index = int.from_bytes(body[-4:], "big")
    index = e_index & 0x7FFFFFFF
    ssrc = struct.unpack_from("!I", body, 4)[0]
    payload = body[8:-4]
    if e_index >> 31:
        payload = keys.crypt(ssrc, index, payload)
    return index, body[:8] + payload
