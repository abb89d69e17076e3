"""Reading: local, remote and stacked inputs, their metadata and GDAL settings."""
