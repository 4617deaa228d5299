"""The sources vec2pg reads from, imported lazily so one broken SDK breaks only its command."""

from __future__ import annotations

from vec2pg.sources.base import WHOLE, Page, Source

__all__ = ["WHOLE", "Page", "Source"]
