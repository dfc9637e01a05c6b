"""Who a request is about: exact resolution of subjects across the data map's identity graph.

Reads the platform DB through SQLAlchemy only; imports ``core`` and nothing above it.
"""
