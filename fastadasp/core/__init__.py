"""Shared value types every layer may import: errors, files, dtypes, choice lists, decoder shapes, the
request's prompt inputs and the manifest. Nothing here imports another fastadasp layer."""
