"""asyncio drivers for the SIP cores, on the stack interface (:mod:`natkit.net.stack`)."""
