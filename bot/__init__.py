"""teambot: a Mistral Small 4 bot for the places where teams talk."""

__version__ = "0.1.0"
