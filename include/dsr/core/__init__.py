"""The vocabulary every layer shares: errors, the data map, the request model, identity normalisation.

Owns no I/O except reading the data map file. Imports nothing else from the engine.
"""
