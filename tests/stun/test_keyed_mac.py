"""keyed_digest: the same bytes as hmac.digest, from cached key states."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from natkit.stun.keyed_mac import keyed_digest


@given(
    st.lists(st.binary(max_size=80), min_size=1, max_size=4),
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.sampled_from(["sha1", "sha256", "md5"]),
)
def test_keyed_digest_is_hmac_for_any_key_and_message(
    keys: list[bytes], messages: list[bytes], digest: str
) -> None:
    # Interleaved keys: a cached state must never leak one message into the next.
    for i, data in enumerate(messages):
        key = keys[i % len(keys)]
        assert keyed_digest(key, data, digest) == hmac.digest(key, data, digest)
        assert keyed_digest(key, bytearray(data), digest) == hmac.digest(key, data, digest)
        assert keyed_digest(bytearray(key), data, digest) == hmac.digest(key, data, digest)
