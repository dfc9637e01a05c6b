"""Great Expectations checks of what a request gathered or changed; reports carry counts, never values.

Imports ``connectors`` (result frames) and ``identity``; never ``rights``.
"""
