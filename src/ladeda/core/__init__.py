"""Shared plumbing every layer uses: errors, atomic file writes, params schema, process runtime."""
