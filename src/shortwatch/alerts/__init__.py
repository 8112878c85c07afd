"""Alert state machine: one firing/resolved transition per change, never re-sent."""
