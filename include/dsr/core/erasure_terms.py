"""The words of an erasure plan, shared by the plan (rights), the connectors and the checks.

A subject's row is deleted (``DELETE``), survives with its personal fields emptied
(``ANONYMISE``) or is kept under a legal hold (``HOLD``); a field of a surviving row is emptied
(``NULL``), replaced by its keyed hash (``HASH``) or kept (``KEEP``).
"""

DELETE, ANONYMISE, HOLD = "delete", "anonymise", "hold"
NULL, HASH, KEEP = "null", "hash", "keep"

#: The purpose of the collection an erasure adds the subject's keyed email hashes to, so that
#: a later import never re-adds them (marketing tools consult it).
SUPPRESSION_PURPOSE = "marketing_suppression"
