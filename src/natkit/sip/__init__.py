"""SIP: the signalling half of NAT traversal (RFC 3261, 3581, 5626, 3327, 3263, 7118).

Sans-IO cores live in this package (message codec, transactions, digest
authentication, registrar, edge and home proxy); their asyncio drivers on the
stack interface live in :mod:`natkit.sip.aio`.
"""
