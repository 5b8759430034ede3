"""NAT behaviour: discovery (what NAT am I behind?) and, later, emulation."""
