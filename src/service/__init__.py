"""The running service: the HTTP API together with its background work (the audit hash-chain
follower beside the projections, the expiry sweeper). `ledger serve` runs `service.app`."""
