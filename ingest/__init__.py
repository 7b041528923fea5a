"""Ingestion: DSS query-log parsing, the file tailer and the Kafka consumer."""
