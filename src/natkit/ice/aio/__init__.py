"""asyncio drivers of the ICE cores: candidate gathering and mDNS."""
