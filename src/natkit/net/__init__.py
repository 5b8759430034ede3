"""Networks natkit runs on: the stack interface and its implementations."""
