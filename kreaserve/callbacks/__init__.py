"""Task callbacks: the outbox, Standard Webhooks signing, the SSRF guard, the sender."""
