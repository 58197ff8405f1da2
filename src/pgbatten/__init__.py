"""pgbatten: batten down PostgreSQL's network traffic.

Turns an existing PostgreSQL server into a TLS-only server, hands clients what they need to verify it,
and proves the result from the outside.
"""

__version__ = "0.1.0"
