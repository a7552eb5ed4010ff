"""People, roles, scoped tokens, protected stages and the audit log: who may do what."""
