"""Reference billing consumer: `python examples/billing_consumer.py --help`.

Consumes `ledger.rent`, applies rent paid with points to invoices in billing's own
PostgreSQL tables (schema `billing`), deduplicating on the event id in the same
transaction as the effect, and answers each hold back (settle or release) through
the ledger's HTTP API with a billing token, Idempotency-Key = the held event's id.
The code lives in `ledger.billing_example`; docs/kafka.md describes the loop.

    BILLING_DATABASE_URL=postgresql://billing@db/billing \\
    KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \\
    BILLING_API_TOKEN=... \\
    python examples/billing_consumer.py --api-url http://ledger-api:8000
"""

from ledger.billing_example import main

if __name__ == "__main__":
    raise SystemExit(main())
