"""The control channel of a live run: the protocol and client, what each request does, and the
server a run adds to itself (with run.json kept current)."""
