"""Leaves for the HTTP requests kreaserve sends to addresses its users give (task callbacks):
the SSRF guard (`ssrf`), connections pinned to the checked address (`pinned`) and Standard
Webhooks signatures (`signing`). They import nothing of the service (no settings, accounts
or database; an import-linter contract keeps it so), so config, schemas and accounts may
use them without a cycle through the callbacks service."""
