"""The Zarr family: one layout (:mod:`.layout`: arrays, attributes,
overview levels) written to a local store renamed into place
(:mod:`.local`) or to an ``s3://`` store published root last (:mod:`.s3`)."""
