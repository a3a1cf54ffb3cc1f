"""Task callbacks: the outbox (deliveries written in the task's transaction) and the sender
(the dispatcher). The SSRF guard and the signing it uses are leaves in `kreaserve.outbound`."""
