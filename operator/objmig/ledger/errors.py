"""The ledger's errors."""


class LedgerError(RuntimeError):
    """Base class of ledger errors."""


class UnknownMigration(LedgerError):
    """No migration with that id."""


class MigrationConflict(LedgerError):
    """A migration of that name exists but belongs to another resource (another uid)."""
