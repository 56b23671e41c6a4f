"""Built-in drivers; each lives in its own folder and registers through the entry-point group."""
