"""Services built on asynclocks; see ``services.bank``."""
