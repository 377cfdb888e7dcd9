"""evq's quickstart example package."""
