"""distribute: volunteer computing in web browsers."""

__version__ = "0.1.0"
