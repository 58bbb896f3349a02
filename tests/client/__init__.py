"""Tests of distribute.client against real servers."""
