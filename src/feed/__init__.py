"""The public event feed: the relay that publishes the committed log to Kafka, the public
event contract and its JSON Schemas."""
