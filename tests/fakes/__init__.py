"""Fakes that inject faults real parts cannot produce on demand (never shipped in the package)."""
