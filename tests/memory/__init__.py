"""What only the memory backend does: its queues by name in one process, and its watcher."""
