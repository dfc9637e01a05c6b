"""The evidence bundle a regulator gets for one request (Art. 5(2), 24): ledger facts, deadlines, chain proof.

Reads the ledger and ``sla``; never personal data, never ``rights``.
"""
