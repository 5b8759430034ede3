"""The NAT lab: scenarios that prove natkit's claims, in the simulated
internet and in network namespaces."""
