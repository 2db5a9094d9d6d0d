"""The hostile-client suite: what a client with bad intent (with a valid account or without)
can try against a running Tributary, and what Tributary must do about it. One module per kind
of attack; it grows as the surface grows."""
