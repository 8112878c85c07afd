"""shortwatch: watch solid-state lithium-metal cells for the signs of an internal short."""

__version__ = "0.1.0"
