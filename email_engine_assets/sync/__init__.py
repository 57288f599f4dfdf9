"""Sync: the tenant's sendable contacts kept in the standing lists of its MailWizz instances."""
