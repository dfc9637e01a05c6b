"""What Fabconnect's other processing asks before it uses a subject's data: the restriction registry.

Owns the registry's table and view in the platform DB and the Python API over them (Art. 18
restrictions, Art. 21 objections, Art. 7(3) consent withdrawals). Imports ``core`` only: any
team's job can use it without pulling in the DSR engine.
"""
