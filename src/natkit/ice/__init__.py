"""ICE: candidates, connectivity checks and nomination (RFC 8445, 8838, 8839, 7675)."""
