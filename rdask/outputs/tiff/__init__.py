"""The TIFF family: tiled GeoTIFFs whose tiles the tasks encode
(:mod:`.gtiff`, with GDAL's writer as the fallback, :mod:`.gdal`), COGs
(:mod:`.cog`: overview levels by :mod:`.overviews`, the layout by
:mod:`.coglayout`), the tile encoder (:mod:`.tiles`) and the metadata GDAL
writes into them (:mod:`.gdalmeta`)."""
