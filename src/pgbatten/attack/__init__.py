"""The attacker's view of a PostgreSQL connection: what an eavesdropper on the path reads (``wiretap``) and
what a man in the middle gets out of a client's settings (``mitm``), measured with real clients."""
