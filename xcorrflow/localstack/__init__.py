"""The local stack behind ``make up``: Kafka (KRaft), an S3 server and Prometheus as native processes."""
