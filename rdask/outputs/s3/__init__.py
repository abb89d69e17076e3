"""The S3 family: GeoTIFFs (:mod:`.gtiff`) and COGs (:mod:`.cog`) made of
the parts of one multipart upload that the tasks upload themselves
(:mod:`.parts`, journaled by :mod:`.journal`, COG levels by
:mod:`.levels`), and what they cannot encode, built locally and uploaded
whole (:mod:`.staged`). The S3 client itself is :mod:`rdask.cloud`."""
