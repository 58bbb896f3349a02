"""Helpers the tests share: one protocol client, one free-port picker, the PostgreSQL test cluster."""
