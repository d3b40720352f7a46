"""Object-store layer: one small interface, with S3 (minio client), local-directory and in-memory backends."""
