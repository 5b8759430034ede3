"""asyncio drivers for the TURN cores."""
