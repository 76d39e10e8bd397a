"""Durable Streams for Django: persistent, resumable, addressable streams over HTTP."""

__version__ = "0.1.0"
