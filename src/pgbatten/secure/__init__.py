"""``pgbatten secure``: plan, show, validate, apply by reload, prove from outside, roll back on failure.

The library returns results and prints nothing: :func:`secure` takes a :class:`SecureRequest` (validated
when it is made) and a ``confirm`` callback that sees the :class:`SecurePreview`, and returns a
:class:`SecureResult` (plan, lint, proofs, backups, plaintext sessions, client instructions) whose
``to_json()`` is the documented ``pgbatten.secure/1`` schema. ``pgbatten.cli.secure_cmd`` prints it.
"""

from pgbatten.secure.plan import SecurePlan
from pgbatten.secure.request import ClientAuth, SecureRequest
from pgbatten.secure.result import JSON_SCHEMA, ClientInstructions, SecurePreview, SecureResult
from pgbatten.secure.run import secure

__all__ = [
    "JSON_SCHEMA",
    "ClientAuth",
    "ClientInstructions",
    "SecurePlan",
    "SecurePreview",
    "SecureRequest",
    "SecureResult",
    "secure",
]
