"""Training: data (skill suite, text), the Lightning module and data module, callbacks, CLI."""
