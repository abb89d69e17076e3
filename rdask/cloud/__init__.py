"""Object stores, once for inputs and outputs: S3 endpoints, clients and
their retries, error phrasing (:mod:`.s3`), multipart uploads
(:mod:`.multipart`) and zarr's store over obstore (:mod:`.objectstore`)."""
