"""SQL access functions, one module per resource. Callers pass a Session."""
